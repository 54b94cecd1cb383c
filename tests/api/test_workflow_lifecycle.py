"""Tool events, cancel and complete: the state machine over HTTP (409 for illegal moves)."""

from __future__ import annotations

import time

import pytest
from celery.contrib.testing.worker import start_worker

from controlplane.celery import app as celery_app
from controlplane.workflows.models import AgentTemplate, Call, CallOutcome, Workflow
from controlplane.workflows.states import WorkflowState
from controlplane.workflows.tasks import learn_from_workflow
from tests.api.conftest import ApiClient, assert_error

pytestmark = pytest.mark.django_db(transaction=True)


def running_workflow(api: ApiClient) -> Workflow:
    workflow_id = api.post("/api/workflows", {"template": "swe"}).json()["id"]
    workflow = Workflow.objects.get(pk=workflow_id)
    workflow.transition_to(WorkflowState.RUNNING)
    Call.objects.create(workflow=workflow, seq=0, prompt_tokens=1000, cached_tokens=0,
                        output_tokens=50, outcome=CallOutcome.COMPLETED,
                        started_at=workflow.submitted_at, finished_at=workflow.submitted_at)
    return workflow


def test_tool_round_trip_and_timeline(api: ApiClient) -> None:
    workflow = running_workflow(api)
    started = api.post(f"/api/workflows/{workflow.pk}/events",
                       {"type": "tool_start", "tool": "bash", "expected_duration_s": 3})
    assert started.status_code == 200, started.content
    assert started.json()["workflow"]["state"] == "waiting_tool"
    ended = api.post(f"/api/workflows/{workflow.pk}/events", {"type": "tool_end"})
    assert ended.json()["workflow"]["state"] == "running" and ended.json()["tool"] == "bash"
    timeline = api.get(f"/api/workflows/{workflow.pk}/calls").json()
    assert [c["seq"] for c in timeline["calls"]] == [0]
    assert timeline["tool_calls"][0]["name"] == "bash"
    assert timeline["tool_calls"][0]["after_call_seq"] == 0
    assert timeline["tool_calls"][0]["duration_s"] >= 0


def test_illegal_moves_are_409_and_change_nothing(api: ApiClient) -> None:
    workflow_id = api.post("/api/workflows", {"template": "swe"}).json()["id"]
    assert_error(api.post(f"/api/workflows/{workflow_id}/complete"), 409,
                 "illegal_transition", "state")
    assert_error(api.post(f"/api/workflows/{workflow_id}/events", {"type": "tool_end"}), 409,
                 "illegal_transition")
    api.post(f"/api/workflows/{workflow_id}/cancel")
    assert_error(api.post(f"/api/workflows/{workflow_id}/cancel"), 409, "illegal_transition")
    assert Workflow.objects.get(pk=workflow_id).state == WorkflowState.CANCELLED


def test_unknown_event_types_are_422(api: ApiClient) -> None:
    workflow = running_workflow(api)
    assert_error(api.post(f"/api/workflows/{workflow.pk}/events", {"type": "nap"}), 422,
                 "invalid")
    assert_error(api.post(f"/api/workflows/{workflow.pk}/events", {"type": "tool_start"}), 422,
                 "invalid", "tool_start.tool")


def test_completion_feeds_the_templates_execution_graph(api: ApiClient, redis_url: str) -> None:
    """Completion queues a Celery task (Redis broker); a real worker updates the template."""
    workflow = running_workflow(api)
    api.post(f"/api/workflows/{workflow.pk}/events", {"type": "tool_start", "tool": "pytest"})
    api.post(f"/api/workflows/{workflow.pk}/events", {"type": "tool_end"})
    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        done = api.post(f"/api/workflows/{workflow.pk}/complete")
        assert done.status_code == 200 and done.json()["state"] == "completed"
        assert done.json()["tct_s"] is not None
        deadline = time.monotonic() + 20
        while not Workflow.objects.get(pk=workflow.pk).aeg_learned:
            assert time.monotonic() < deadline, "the worker never learned the workflow"
            time.sleep(0.1)
    template = AgentTemplate.objects.get(name="swe")
    assert template.aeg_updated_at is not None
    assert "tool:pytest" in str(template.aeg_stats)
    assert learn_from_workflow(workflow.pk) is False  # a redelivered task learns nothing twice

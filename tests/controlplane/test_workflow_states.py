"""The workflow state machine: legal edges only, enforced in one place, race-safe."""

from __future__ import annotations

from datetime import timedelta
from itertools import product

import pytest
from django.utils import timezone

from controlplane.tenants.models import Tenant
from controlplane.workflows.models import AgentTemplate, Workflow
from controlplane.workflows.states import (
    ALLOWED_TRANSITIONS,
    TERMINAL_STATES,
    IllegalTransition,
    WorkflowState,
    check_transition,
)

pytestmark = pytest.mark.django_db

EXPECTED_EDGES = {
    ("submitted", "running"), ("submitted", "failed"), ("submitted", "cancelled"),
    ("running", "waiting_tool"), ("running", "completed"), ("running", "failed"),
    ("running", "cancelled"),
    ("waiting_tool", "running"), ("waiting_tool", "completed"), ("waiting_tool", "failed"),
    ("waiting_tool", "cancelled"),
    ("submitted", "abandoned"), ("running", "abandoned"), ("waiting_tool", "abandoned"),
}


@pytest.fixture
def workflow() -> Workflow:
    tenant = Tenant.objects.create(slug="acme", name="Acme", slo_slowdown=2.0)
    template = AgentTemplate.objects.create(name="swe-agent")
    return Workflow.objects.create(tenant=tenant, template=template, external_id="task-1")


@pytest.mark.parametrize(("current", "target"), list(product(WorkflowState.values, repeat=2)))
def test_exactly_the_documented_edges_are_legal(current: str, target: str) -> None:
    if (current, target) in EXPECTED_EDGES:
        check_transition("wf", current, target)
    else:
        with pytest.raises(IllegalTransition) as excinfo:
            check_transition("wf", current, target)
        assert f"{current} -> {target}" in str(excinfo.value)


def test_terminal_states_lead_nowhere() -> None:
    assert all(not ALLOWED_TRANSITIONS[state] for state in TERMINAL_STATES)


def test_a_full_life_records_timestamps_and_completion(workflow: Workflow) -> None:
    workflow.est_isolated_s = 10.0
    workflow.submitted_at = timezone.now() - timedelta(seconds=15)
    workflow.save()
    workflow.transition_to(WorkflowState.RUNNING)
    started = workflow.started_at
    workflow.transition_to(WorkflowState.WAITING_TOOL)
    workflow.transition_to(WorkflowState.RUNNING)
    assert workflow.started_at == started  # first start is kept
    workflow.transition_to(WorkflowState.COMPLETED)
    workflow.refresh_from_db()
    assert workflow.state == WorkflowState.COMPLETED
    assert workflow.tct_s == pytest.approx(15.0, abs=2.0)
    assert workflow.slowdown == pytest.approx(1.5, abs=0.2)
    assert workflow.slo_met is True  # 1.5x <= the tenant's 2.0x


def test_slo_is_missed_when_slowdown_exceeds_the_tenants_target(workflow: Workflow) -> None:
    workflow.est_isolated_s = 1.0
    workflow.submitted_at = timezone.now() - timedelta(seconds=5)
    workflow.save()
    workflow.transition_to(WorkflowState.RUNNING)
    workflow.transition_to(WorkflowState.COMPLETED)
    workflow.refresh_from_db()
    assert workflow.slo_met is False


def test_illegal_transition_changes_nothing(workflow: Workflow) -> None:
    with pytest.raises(IllegalTransition, match="submitted -> completed"):
        workflow.transition_to(WorkflowState.COMPLETED)
    workflow.refresh_from_db()
    assert workflow.state == WorkflowState.SUBMITTED
    assert workflow.finished_at is None


def test_a_stale_writer_loses_the_race(workflow: Workflow) -> None:
    """Two processes hold the same workflow; the second move is judged on the real state."""
    first = Workflow.objects.get(pk=workflow.pk)
    second = Workflow.objects.get(pk=workflow.pk)
    first.transition_to(WorkflowState.CANCELLED)
    with pytest.raises(IllegalTransition, match="cancelled -> running"):
        second.transition_to(WorkflowState.RUNNING)
    assert second.state == WorkflowState.CANCELLED
    assert Workflow.objects.get(pk=workflow.pk).state == WorkflowState.CANCELLED


def test_state_is_not_editable_through_forms() -> None:
    assert not Workflow._meta.get_field("state").editable

"""Idle workflows are reaped as abandoned (and only they); a concurrency 429 says when a slot can
free; the demo's in-process runner runs the beat schedule."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from django.utils import timezone

from controlplane.quotas import QuotaExceeded
from controlplane.slo.models import QuotaRejection, SloPoint
from controlplane.tenants.models import Tenant
from controlplane.workflows import lifecycle, services
from controlplane.workflows.models import AgentTemplate, Call, CallOutcome, Workflow
from controlplane.workflows.states import WorkflowState
from tests.controlplane.slo_helpers import recorded_workflow, sim_node

CALLS = [(2000, 0, 100)]


@pytest.fixture
def tenant() -> Tenant:
    return Tenant.objects.create(slug="acme", name="Acme", max_concurrent_workflows=2)


def idle_for(tenant: Tenant, seconds: float, template: str = "swe-agent",
             **kwargs: Any) -> Workflow:
    return recorded_workflow(tenant, sim_node(f"n-{Workflow.objects.count()}"), CALLS,
                             end=timezone.now() - timedelta(seconds=seconds), finish=None,
                             template=template, **kwargs)


@pytest.mark.django_db
def test_only_workflows_idle_past_their_timeout_without_a_call_in_flight_are_reaped(
        tenant: Tenant, settings: Any) -> None:
    settings.SAGA_WORKFLOW_IDLE_TIMEOUT_S = 600
    AgentTemplate.objects.create(name="quick", idle_timeout_s=60)
    stale = idle_for(tenant, 700)
    fresh = idle_for(tenant, 100)
    quick = idle_for(tenant, 100, template="quick")
    busy = idle_for(tenant, 700)
    Call.objects.create(workflow=busy, seq=1, queued_at=timezone.now() - timedelta(hours=1),
                        outcome=CallOutcome.PENDING)  # a long call, still in flight
    waiting = idle_for(tenant, 700)
    services.start_tool(waiting, "pytest")  # a tool event just now is activity
    never_started = Workflow.objects.create(
        tenant=tenant, template=AgentTemplate.objects.get(name="swe-agent"),
        submitted_at=timezone.now() - timedelta(hours=2),
        state_changed_at=timezone.now() - timedelta(hours=2))

    reaped = lifecycle.reap_idle()
    assert sorted(reaped) == sorted([stale.pk, quick.pk, never_started.pk])
    states = dict(Workflow.objects.values_list("pk", "state"))
    assert states[stale.pk] == states[quick.pk] == WorkflowState.ABANDONED
    assert states[fresh.pk] == states[busy.pk] == WorkflowState.RUNNING
    assert states[waiting.pk] == WorkflowState.WAITING_TOOL
    assert lifecycle.reap_idle() == []


@pytest.mark.django_db
def test_reaping_frees_the_concurrency_slot(tenant: Tenant, settings: Any) -> None:
    settings.SAGA_WORKFLOW_IDLE_TIMEOUT_S = 600
    idle_for(tenant, 500)
    idle_for(tenant, 550)
    with pytest.raises(QuotaExceeded) as refused:
        services.create_workflow(tenant, "swe-agent")
    # the second one is reaped in 50 s: that is when to retry, not a fixed 30 s
    assert refused.value.retry_after_s == pytest.approx(50, abs=2)
    assert QuotaRejection.objects.get(tenant=tenant).count == 1
    with mock.patch("controlplane.workflows.lifecycle.timezone.now",
                    return_value=timezone.now() + timedelta(seconds=60)):
        assert len(lifecycle.reap_idle()) == 1
    services.create_workflow(tenant, "swe-agent")  # admitted


@pytest.mark.django_db
def test_retry_after_follows_how_long_the_tenants_workflows_take(tenant: Tenant,
                                                                  settings: Any) -> None:
    settings.SAGA_WORKFLOW_IDLE_TIMEOUT_S = 1800
    for _ in range(5):  # completed workflows of about 6.8 s
        recorded_workflow(tenant, sim_node(f"done-{Workflow.objects.count()}"),
                          [(1000, 0, 10)] * 3, call_s=0.5, gap_s=2.5)
    a = idle_for(tenant, 0.0, head_s=0.0, tail_s=0.0, call_s=1.0)  # started 1 s ago
    idle_for(tenant, 0.0, head_s=0.0, tail_s=0.0, call_s=1.0)
    tct = Workflow.objects.filter(state=WorkflowState.COMPLETED).first().tct_s
    assert tct == pytest.approx(6.7, abs=0.01)
    age = (timezone.now() - a.submitted_at).total_seconds()
    with pytest.raises(QuotaExceeded) as refused:
        services.create_workflow(tenant, "swe-agent")
    assert refused.value.retry_after_s == pytest.approx(tct - age, abs=1.5)


@pytest.mark.django_db(transaction=True)
def test_the_in_process_runner_runs_the_beat_tasks_at_their_intervals(settings: Any) -> None:
    from controlplane.periodic import run_periodic, scheduled

    names = {task for _name, task, _interval in scheduled()}
    assert {"controlplane.workflows.tasks.reap_idle_workflows",
            "controlplane.slo.tasks.aggregate_slo_series",
            "controlplane.nodes.tasks.sweep_stale_nodes"} <= names
    settings.SAGA_SLO_TIERS = ["1:3600"]
    Tenant.objects.create(slug="acme", name="Acme")
    schedule = {"slo": {"task": "controlplane.slo.tasks.aggregate_slo_series", "schedule": 0.3},
                "broken": {"task": "controlplane.nodes.tasks.no_such_task", "schedule": 0.2}}

    async def scenario() -> None:
        stop = asyncio.Event()
        runner = asyncio.create_task(run_periodic(stop, schedule))
        await asyncio.sleep(2.5)
        stop.set()
        await asyncio.wait_for(runner, timeout=5)  # a failing task did not stop the others

    asyncio.run(scenario())
    assert SloPoint.objects.filter(resolution_s=1).count() >= 2

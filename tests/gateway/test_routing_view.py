"""The gateway's WorkflowView (controlplane/gateway/workflow_views.py) and the row accumulators
its call records keep: the fields mean what plugins.views says, as on every other host."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.gateway.calls import Outcome, Ticket, _accumulate, _isolated_s
from controlplane.gateway.directory import ClusterDirectory, NodeEntry
from controlplane.gateway.workflow_views import between_calls_view, routing_view
from controlplane.tenants.models import Tenant
from controlplane.workflows import services
from controlplane.workflows.models import CallOutcome, Workflow
from nodeagent.sim.isolated import call_isolated_seconds, cost_model
from plugins.views import NodeView

pytestmark = pytest.mark.django_db

PROFILE = "h100-llama3-8b"


def _entry(name: str = "gpu-0", cached: dict[str, int] | None = None,
           with_cost: bool = True) -> NodeEntry:
    return NodeEntry(1, name, "http://x", "m", NodeView(name, 0, 0, 1000, 1000, 0.0, 0.0),
                     8, dict(cached or {}), cost_model(PROFILE) if with_cost else None, 16)


def _workflow(age_s: float) -> Workflow:
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    wf = services.create_workflow(tenant, "swe-agent", external_id="w", validate=False)
    wf.submitted_at = timezone.now() - timedelta(seconds=age_s)
    wf.save(update_fields=["submitted_at"])
    return wf


def test_a_routed_call_adds_its_estimate_to_agent_time_and_finished_calls() -> None:
    wf = _workflow(age_s=10.0)
    wf.calls_wall_s, wf.calls_isolated_s, wf.context_tokens, wf.service_s = 4.0, 1.5, 2000, 0.7
    directory = ClusterDirectory()
    home = _entry(cached={str(wf.pk): 1984})
    view = routing_view(wf, 3, 2600, home, home, directory)
    expected_output = directory.manager.aeg.forecast("swe-agent", "call").expected_output_tokens
    current = call_isolated_seconds(cost_model(PROFILE), 2600, 1984, round(expected_output))
    # 10 s of life, 4 s of it in calls: 6 s of agent time, 1.5 s of finished calls' work
    assert view.isolated_s == pytest.approx(6.0 + 1.5 + current, abs=0.05)
    assert view.service_s == 0.7
    assert view.cached_tokens == 1984 and view.home_node == "gpu-0"
    assert view.calls_done == 3 and view.context_tokens == 2600

    # a node without a known cost model: no estimate for the call, never a guess
    assert routing_view(wf, 3, 2600, home, _entry(with_cost=False), directory).isolated_s == (
        pytest.approx(7.5, abs=0.05))


def test_between_calls_the_gap_is_counted_by_the_builder() -> None:
    wf = _workflow(age_s=30.0)
    wf.calls_wall_s, wf.calls_isolated_s = 8.0, 2.0
    now = timezone.now().timestamp()
    ended = now - 5.0
    view = between_calls_view(wf, _entry(), 2, 1500, ended, "bash", now)
    # agent time up to the last call's end (30 - 5 - 8), finished calls, then the open gap
    assert view.isolated_s == pytest.approx(17.0 + 2.0 + 5.0, abs=0.05)
    assert view.tool_elapsed_s == pytest.approx(5.0, abs=0.05)
    assert view.context_tokens == 1500 and view.tool_name == "bash"


def test_a_finished_call_keeps_the_rows_accumulators() -> None:
    wf = _workflow(age_s=3.0)
    node = _entry()
    arrived = timezone.now() - timedelta(seconds=2.0)
    ticket = Ticket(1, wf.pk, "acme", wf.tenant_id, "swe-agent", node, False, 1000,
                    queued_at=arrived)
    done = Outcome(CallOutcome.COMPLETED, prompt_tokens=1000, completion_tokens=50,
                   service_s=0.25)
    iso = _isolated_s(node, wf, 1000, 0, done)
    assert iso == pytest.approx(call_isolated_seconds(cost_model(PROFILE), 1000, 0, 50))
    _accumulate(wf, ticket, done, 1000, iso, timezone.now())
    wf.refresh_from_db()
    assert wf.service_s == pytest.approx(0.25)
    assert wf.calls_isolated_s == pytest.approx(iso)
    assert wf.calls_wall_s == pytest.approx(2.0, abs=0.2)
    assert wf.context_tokens == 1050

    # the next call reuses the workflow's own context (whole blocks, short of its last token)
    nxt = _isolated_s(node, wf, 1200, 0, Outcome(CallOutcome.COMPLETED, completion_tokens=10))
    assert nxt == pytest.approx(call_isolated_seconds(cost_model(PROFILE), 1200, 1040, 10))

    # a failed call adds its time (as delay) but no work
    failed = Outcome(CallOutcome.FAILED, error="node lost")
    assert _isolated_s(node, wf, 1200, 0, failed) is None
    _accumulate(wf, ticket, failed, 1200, None, timezone.now())
    wf.refresh_from_db()
    assert wf.calls_isolated_s == pytest.approx(iso) and wf.context_tokens == 1050
    assert wf.calls_wall_s == pytest.approx(4.0, abs=0.4)

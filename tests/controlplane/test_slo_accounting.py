"""Every finished workflow's isolated time and SLO status, from its recorded calls."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.nodes.models import Node
from controlplane.tenants.models import Tenant
from controlplane.workflows.models import Call, CallOutcome, SloStatus
from controlplane.workflows.states import WorkflowState
from nodeagent.sim.costmodel import CostModel
from nodeagent.sim.isolated import IsolatedCall, MeasuredCost, isolated_tct_seconds
from tests.controlplane.slo_helpers import recorded_workflow, sim_node

pytestmark = pytest.mark.django_db

CALLS = [(2000, 0, 100), (2400, 2096, 120), (2900, 2512, 80)]


@pytest.fixture
def tenant() -> Tenant:
    return Tenant.objects.create(slug="acme", name="Acme", slo_slowdown=2.0)


def expected_isolated(cost: object, calls: list[tuple[int, int, int]], gap_s: float,
                      head_s: float, tail_s: float) -> float:
    """The shared function on the same calls, reusing prompt + output - 1 of the previous
    call in whole 16-token blocks, plus the agent's time before and after the calls."""
    iso: list[IsolatedCall] = []
    for i, (prompt, _cached, output) in enumerate(calls):
        own = 0 if i == 0 else (calls[i - 1][0] + calls[i - 1][2] - 1) // 16 * 16
        iso.append(IsolatedCall(prompt, own, output, gap_s))
    return head_s + isolated_tct_seconds(cost, iso) + tail_s  # type: ignore[arg-type]


def test_a_completed_workflow_gets_isolated_time_slowdown_and_slo(tenant: Tenant) -> None:
    node = sim_node()
    wf = recorded_workflow(tenant, node, CALLS, call_s=0.5, gap_s=2.0, head_s=0.1, tail_s=0.1)
    assert wf.state == WorkflowState.COMPLETED
    cost = CostModel("h100-llama3-8b")
    assert wf.est_isolated_s == pytest.approx(expected_isolated(cost, CALLS, 2.0, 0.1, 0.1),
                                              rel=1e-9)
    assert wf.tct_s == pytest.approx(0.1 + 3 * 0.5 + 2 * 2.0 + 0.1)
    assert wf.slowdown == pytest.approx(wf.tct_s / wf.est_isolated_s)
    assert wf.slo_status == SloStatus.MET and wf.slo_met is True
    assert wf.isolated_basis == "profile h100-llama3-8b"
    # call 1 re-sent 2,100 tokens and was served 2,096 of them; call 2 re-sent 2,520, got 2,512
    assert wf.recompute_tokens == 0


def test_the_slo_is_missed_when_the_calls_queued(tenant: Tenant) -> None:
    wf = recorded_workflow(tenant, sim_node(), CALLS, call_s=20.0, gap_s=1.0)
    assert wf.slowdown > 2.0
    assert wf.slo_status == SloStatus.MISSED and wf.slo_met is False


def test_an_unknown_profile_makes_the_slo_unevaluable_never_met(tenant: Tenant) -> None:
    node = Node.objects.create(name="mystery", engine="vllm", gpu_model="NVIDIA L4",
                               model_name="Qwen/Qwen2.5-7B")
    wf = recorded_workflow(tenant, node, CALLS)
    assert wf.est_isolated_s is None and wf.slowdown is None
    assert wf.slo_status == SloStatus.UNEVALUABLE and wf.slo_met is None
    assert "mystery" in wf.isolated_basis and "no known profile" in wf.isolated_basis


def test_a_deleted_node_makes_the_slo_unevaluable(tenant: Tenant) -> None:
    wf = recorded_workflow(tenant, None, CALLS)
    assert wf.slo_status == SloStatus.UNEVALUABLE
    assert "no longer registered" in wf.isolated_basis


def test_a_vllm_node_is_costed_by_its_measured_single_request_costs(tenant: Tenant) -> None:
    node = Node.objects.create(name="gpu-1", engine="vllm", gpu_model="NVIDIA H100 80GB HBM3",
                               model_name="meta-llama/Meta-Llama-3-8B-Instruct")
    Node.objects.filter(pk=node.pk).update(isolated_prefill_s_per_token=2e-5,
                                           isolated_decode_s_per_token=8e-3)
    node.refresh_from_db()
    wf = recorded_workflow(tenant, node, CALLS, gap_s=1.0)
    cost = MeasuredCost(2e-5, 8e-3)
    assert wf.est_isolated_s == pytest.approx(expected_isolated(cost, CALLS, 1.0, 0.1, 0.1))
    assert wf.isolated_basis == "measured single-request costs of gpu-1"


def test_a_vllm_node_without_measurements_uses_the_profile_of_its_gpu_and_model(
        tenant: Tenant) -> None:
    node = Node.objects.create(name="gpu-2", engine="vllm", gpu_model="NVIDIA H100 80GB HBM3",
                               model_name="meta-llama/Meta-Llama-3-8B-Instruct")
    wf = recorded_workflow(tenant, node, CALLS)
    assert wf.isolated_basis == "profile h100-llama3-8b"
    assert wf.est_isolated_s == pytest.approx(
        expected_isolated(CostModel("h100-llama3-8b"), CALLS, 2.0, 0.1, 0.1))


def test_heartbeats_carry_the_calibration_onto_the_node() -> None:
    node = Node(name="gpu-3", engine="vllm")
    node.assign_new_token()
    node.save()
    assert node.record_heartbeat({"running": 1, "isolated_prefill_s_per_token": 3e-5,
                                  "isolated_decode_s_per_token": None})
    node.refresh_from_db()
    assert node.isolated_prefill_s_per_token == 3e-5 and node.isolated_decode_s_per_token is None
    assert node.record_heartbeat({"isolated_decode_s_per_token": 9e-3})
    node.refresh_from_db()
    assert (node.isolated_prefill_s_per_token, node.isolated_decode_s_per_token) == (3e-5, 9e-3)


def test_what_the_node_served_is_not_what_running_alone_reuses(tenant: Tenant) -> None:
    """A cold cache (0 served) is recompute, not a longer isolated time; a prompt shorter than
    the previous context (compacted) reuses at most what the node served."""
    node = sim_node()
    cold = recorded_workflow(tenant, node, [(2000, 0, 100), (2400, 0, 120)])
    warm = recorded_workflow(tenant, node, [(2000, 0, 100), (2400, 2096, 120)])
    assert cold.est_isolated_s == pytest.approx(warm.est_isolated_s)
    assert cold.recompute_tokens == 2096 and warm.recompute_tokens == 0
    compacted = recorded_workflow(tenant, node, [(2000, 0, 100), (1500, 1024, 50)])
    cost = CostModel("h100-llama3-8b")
    calls = [IsolatedCall(2000, 0, 100, 2.0), IsolatedCall(1500, 1024, 50)]
    assert compacted.est_isolated_s == pytest.approx(0.2 + isolated_tct_seconds(cost, calls))


def test_failed_calls_count_as_delay_and_parallel_calls_as_one_stretch(tenant: Tenant) -> None:
    node = sim_node()
    wf = recorded_workflow(tenant, node, CALLS, finish=None)
    first = Call.objects.get(workflow=wf, seq=0)
    # a call overlapping call 0, and a failed attempt just before it (no isolated time: its
    # time and the 0.1 s head it overlaps count as delay)
    Call.objects.create(workflow=wf, seq=3, node=node, prompt_tokens=5000, output_tokens=5,
                        queued_at=first.queued_at, started_at=first.queued_at,
                        finished_at=first.finished_at, outcome=CallOutcome.COMPLETED)
    Call.objects.create(workflow=wf, seq=4, node=node, prompt_tokens=100, output_tokens=1,
                        queued_at=wf.submitted_at, finished_at=first.queued_at,
                        outcome=CallOutcome.NODE_LOST)
    from controlplane.slo.isolated import estimate

    end = Call.objects.get(workflow=wf, seq=2).finished_at + timedelta(seconds=0.1)
    found = estimate(wf, end)
    cost = CostModel("h100-llama3-8b")
    # the parallel call (seq 3) follows call 2 in the conversation: it reuses 2,979 -> 2,976
    stretch0 = max(cost.isolated_call_seconds(2000, 0, 100),
                   cost.isolated_call_seconds(5000, 2976, 5))
    rest = (cost.isolated_call_seconds(2400, 2096, 120)
            + cost.isolated_call_seconds(2900, 2512, 80))
    assert found.seconds == pytest.approx(stretch0 + rest + 2 * 2.0 + 0.1, rel=1e-9)
    assert found.calls == 5


def test_abandoned_cancelled_and_failed_workflows(tenant: Tenant) -> None:
    node = sim_node()
    abandoned = recorded_workflow(tenant, node, CALLS, finish=WorkflowState.ABANDONED)
    assert abandoned.slo_status == SloStatus.MISSED and abandoned.slo_met is False
    assert abandoned.tct_s is None and abandoned.est_isolated_s  # never completed
    cancelled = recorded_workflow(tenant, node, CALLS, finish=WorkflowState.CANCELLED)
    failed = recorded_workflow(tenant, node, CALLS, finish=WorkflowState.FAILED)
    assert cancelled.slo_status == failed.slo_status == SloStatus.EXCLUDED
    assert cancelled.slo_met is None and failed.slo_met is None


def test_a_workflow_without_calls_keeps_an_estimate_it_was_given(tenant: Tenant) -> None:
    wf = recorded_workflow(tenant, sim_node(), [], finish=None)
    wf.est_isolated_s = 10.0
    wf.submitted_at = timezone.now() - timedelta(seconds=15)
    wf.save()
    wf.transition_to(WorkflowState.COMPLETED)
    assert wf.slo_status == SloStatus.MET and wf.isolated_basis == "no calls recorded"
    bare = recorded_workflow(tenant, sim_node("sim-2"), [], finish=WorkflowState.COMPLETED)
    assert bare.slo_status == SloStatus.UNEVALUABLE


def test_the_api_reports_the_slo_status_and_why_it_is_unevaluable(tenant: Tenant) -> None:
    from django.test import Client

    from controlplane.tenants.models import ApiKey

    node = Node.objects.create(name="mystery", engine="vllm")
    wf = recorded_workflow(tenant, node, CALLS, external_id="task-1")
    _key, secret = ApiKey.issue(tenant, "agents")
    body = Client(headers={"Authorization": f"Bearer {secret}"}).get(
        f"/api/workflows/{wf.pk}").json()
    assert body["slo_status"] == "unevaluable" and body["slo_met"] is None
    assert body["slowdown"] is None and "mystery" in body["isolated_basis"]

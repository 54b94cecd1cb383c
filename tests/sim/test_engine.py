"""The simulated engine against the cost model, and its vLLM-like batching under pressure."""

from __future__ import annotations

import pytest

from nodeagent.sim.clock import SimulatedClock
from nodeagent.sim.costmodel import CostModel
from tests.sim.simkit import PROFILE, chain_workload, run_cluster


def test_single_request_latency_equals_cost_model() -> None:
    wl = chain_workload(n_workflows=1, calls=1, system_tokens=1000, task_tokens=3000,
                        output_tokens=64)
    _, res = run_cluster(wl, n_instances=1)
    call = wl.workflows[0].calls[0]
    expected = CostModel(PROFILE).isolated_call_seconds(call.input_tokens, 0, call.output_tokens)
    assert res.tasks[0].tct_s == pytest.approx(expected, rel=1e-9)


def test_chunked_prefill_latency_equals_cost_model() -> None:
    # 30k-token prompt: 4 chunks of max_num_batched_tokens, then 99 decode steps
    wl = chain_workload(n_workflows=1, calls=1, system_tokens=10_000, task_tokens=20_000,
                        output_tokens=100)
    _, res = run_cluster(wl, n_instances=1)
    call = wl.workflows[0].calls[0]
    expected = CostModel(PROFILE).isolated_call_seconds(call.input_tokens, 0, call.output_tokens)
    assert res.tasks[0].tct_s == pytest.approx(expected, rel=1e-9)


def test_lone_workflow_runs_at_its_isolated_time() -> None:
    """Calls after the first hit the prefix their predecessor cached (prompt + output)."""
    wl = chain_workload(n_workflows=1, calls=4, step_tokens=700, output_tokens=90, gap_s=3.0)
    cluster, res = run_cluster(wl, n_instances=1)
    iso = cluster.prepared.isolated_tct_s["wf000"]
    assert res.tasks[0].tct_s == pytest.approx(iso, rel=1e-9)
    assert res.nodes[0].recompute_tokens == 0
    # every call after the first found its predecessor's context cached, block-aligned
    plans = cluster.prepared.calls["wf000"]
    assert all(p.own_cached_tokens > 0 and p.own_cached_tokens % 16 == 0 for p in plans[1:])


def test_macro_steps_match_single_steps() -> None:
    wl = chain_workload(n_workflows=6, calls=3, step_tokens=900, output_tokens=150,
                        arrivals=[0.0, 0.1, 0.15, 2.0, 2.01, 3.0])
    _, one = run_cluster(wl, max_macro_steps=1)
    _, many = run_cluster(wl, max_macro_steps=128)
    assert many.nodes[0].macro_steps < one.nodes[0].macro_steps
    assert sum(n.steps for n in many.nodes) == sum(n.steps for n in one.nodes)
    for a, b in zip(one.tasks, many.tasks, strict=True):
        assert b.tct_s == pytest.approx(a.tct_s, rel=1e-6)


def test_preemption_by_recompute_under_kv_pressure_loses_nothing() -> None:
    wl = chain_workload(n_workflows=10, calls=3, system_tokens=500, task_tokens=2500,
                        step_tokens=500, output_tokens=600, gap_s=1.0,
                        arrivals=[0.0] * 10)
    cluster, res = run_cluster(wl, n_instances=1, kv_tokens=12_000)
    assert res.nodes[0].preemptions > 0
    assert res.calls_lost == 0
    assert res.calls_completed == res.calls_total == 30
    seen = [(wf, seq) for wf, seq, *_ in cluster.call_log]
    assert len(seen) == len(set(seen)) == 30
    for e in cluster.engines:
        assert e.idle
        assert e.cache.private_blocks == 0 and not e.cache.pins
        e.cache.check_invariants()


def test_prefill_of_evicted_context_counts_as_recompute() -> None:
    # Two workflows on one node whose contexts cannot both stay cached.
    wl = chain_workload(n_workflows=2, calls=3, system_tokens=16, task_tokens=6000,
                        step_tokens=200, output_tokens=20, gap_s=10.0, arrivals=[0.0, 1.0])
    _, res = run_cluster(wl, n_instances=1, kv_tokens=9000)
    node = res.nodes[0]
    assert node.recompute_tokens > 0
    assert node.recompute_tokens <= node.prefill_tokens


def test_simulated_clock_only_moves_forward() -> None:
    clock = SimulatedClock(5.0)
    clock.advance_to(3.0)
    assert clock.now() == 5.0
    clock.advance_to(8.0)
    assert clock.now() == 8.0


def test_safety_horizon_reports_lost_calls_instead_of_hanging() -> None:
    wl = chain_workload(n_workflows=3, calls=3, gap_s=50.0)
    _, res = run_cluster(wl, horizon_s=30.0)
    assert 0 < res.calls_lost < res.calls_total
    assert res.calls_completed + res.calls_lost == res.calls_total
    assert any(t.tct_s is None for t in res.tasks)


def test_a_call_larger_than_the_kv_pool_is_reported_lost() -> None:
    wl = chain_workload(n_workflows=2, calls=2, task_tokens=5000)
    _, res = run_cluster(wl, n_instances=1, kv_tokens=4000)
    assert res.calls_lost == res.calls_total

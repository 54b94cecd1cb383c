"""The one isolated-time definition shared by ``saga bench`` and the live control plane."""

from __future__ import annotations

import pytest

from nodeagent.sim.costmodel import CostModel
from nodeagent.sim.isolated import (
    IsolatedCall,
    MeasuredCost,
    isolated_tct_seconds,
    own_reused_tokens,
    profile_for,
    workflow_isolated_seconds,
)
from nodeagent.sim.prepared import prepare
from nodeagent.workloads.synthetic import generate
from tests.sim.simkit import PROFILE, chain_workload


def test_the_bench_isolated_tct_is_the_shared_function_of_its_calls() -> None:
    wl = generate("mix", 30, seed=5)
    cost = CostModel(PROFILE)
    prepared = prepare(wl, cost)
    for wf in wl.workflows:
        plans = prepared.calls[wf.workflow_id]
        calls = [IsolatedCall(c.input_tokens, p.own_cached_tokens, c.output_tokens, c.gap_after_s)
                 for c, p in zip(wf.calls, plans, strict=True)]
        assert isolated_tct_seconds(cost, calls) == prepared.isolated_tct_s[wf.workflow_id]


def test_a_chain_reuses_its_previous_prompt_and_output_in_whole_blocks() -> None:
    wl = chain_workload(n_workflows=1, calls=3, system_tokens=1000, task_tokens=500,
                        step_tokens=300, output_tokens=40)
    prepared = prepare(wl, CostModel(PROFILE))
    spec = wl.workflows[0]
    for prev, call, plan in zip(spec.calls, spec.calls[1:], prepared.calls["wf000"][1:],
                                strict=False):
        computed = prev.input_tokens + prev.output_tokens - 1
        assert plan.own_cached_tokens == own_reused_tokens(computed + 1, computed,
                                                           call.input_tokens, 16)
        assert plan.own_cached_tokens == computed // 16 * 16


def test_gaps_count_between_calls_only() -> None:
    assert workflow_isolated_seconds([1.0, 2.0, 3.0], [10.0, 20.0, 99.0]) == 36.0
    assert workflow_isolated_seconds([], []) == 0.0


def test_measured_costs_have_the_cost_models_shape() -> None:
    cost = MeasuredCost(prefill_s_per_token=1e-4, decode_s_per_token=1e-2)
    assert cost.isolated_call_seconds(1000, 0, 1) == pytest.approx(0.1)
    assert cost.isolated_call_seconds(1000, 1000, 11) == pytest.approx(1e-4 + 0.1)
    with pytest.raises(ValueError):
        cost.isolated_call_seconds(0, 0, 1)


@pytest.mark.parametrize(("args", "expected"), [
    (("h100-llama3-8b",), "h100-llama3-8b"),
    (("", "NVIDIA H100 80GB HBM3", "meta-llama/Meta-Llama-3-8B-Instruct", 1), "h100-llama3-8b"),
    (("", "NVIDIA H200", "meta-llama/Llama-3.1-70B-Instruct", 4), "h200-llama3-70b-tp4"),
    (("", "NVIDIA A100-SXM4-80GB", "meta-llama/Meta-Llama-3-70B", 8), "a100-llama3-70b-tp8"),
    (("", "NVIDIA H100 80GB HBM3", "meta-llama/Meta-Llama-3-70B", 2), None),
    (("", "NVIDIA L4", "meta-llama/Meta-Llama-3-8B", 1), None),
    (("", "NVIDIA H100", "Qwen/Qwen2.5-7B", 1), None),
    (("no-such-profile",), None),
])
def test_a_nodes_profile_is_found_from_what_it_registered(args: tuple, expected: str | None
                                                         ) -> None:
    found = profile_for(*args)
    assert (found.name if found else None) == expected

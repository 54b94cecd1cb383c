"""A vLLM node's measured costs (nodeagent/vllm_hooks/accounting.py): fitted from step times,
they must reproduce an affine step cost, keep queueing out of isolated time, and give isolated
call times of the cost model's shape."""

from __future__ import annotations

import pytest

from tests.vllm.fakes import VLLM_MISSING_REASON

pytest.importorskip("vllm", reason=VLLM_MISSING_REASON)

from nodeagent.sim.costmodel import CostModel
from nodeagent.sim.isolated import MeasuredCost
from nodeagent.vllm_hooks.accounting import MeasuredCosts, StepAccounting

FIXED_S, PER_TOKEN_S, DECODE_S = 0.004, 2e-5, 0.011


def test_nothing_is_claimed_before_a_step_is_measured() -> None:
    costs = MeasuredCosts(chunk_tokens=512)
    assert costs.snapshot() is None
    assert costs.queue_s_per_token is None
    costs.observe(FIXED_S + 100 * PER_TOKEN_S, {"a": (100, 0)})
    assert costs.snapshot() is None, "no decode step measured alone yet"


def test_an_affine_prefill_cost_is_recovered_from_single_request_steps() -> None:
    costs = MeasuredCosts(chunk_tokens=512)
    for n in (16, 48, 200, 512, 31, 400) * 5:
        costs.observe(FIXED_S + n * PER_TOKEN_S, {"a": (n, 0)})
    costs.observe(DECODE_S, {"a": (0, 1)})
    cost = costs.snapshot(block_size=16)
    assert cost is not None
    assert cost.prefill_step_s == pytest.approx(FIXED_S, rel=1e-6)
    assert cost.prefill_s_per_token == pytest.approx(PER_TOKEN_S, rel=1e-6)
    assert cost.decode_s_per_token == pytest.approx(DECODE_S)
    # 1200 uncached tokens at 512 per chunk: three steps, then 9 decode steps
    assert cost.isolated_call_seconds(1300, 100, 10) == pytest.approx(
        3 * FIXED_S + 1200 * PER_TOKEN_S + 9 * DECODE_S, rel=1e-6)
    assert costs.queue_s_per_token == pytest.approx(PER_TOKEN_S + FIXED_S / 512, rel=1e-6)


def test_batched_steps_never_enter_isolated_costs() -> None:
    costs = MeasuredCosts(chunk_tokens=512)
    for n in (64, 256, 512) * 4:
        costs.observe(FIXED_S + n * PER_TOKEN_S, {"a": (n, 0)})
    costs.observe(DECODE_S, {"a": (0, 1)})
    alone = costs.snapshot()
    for _ in range(50):  # contended steps: slower, several requests
        costs.observe(0.5, {"a": (300, 0), "b": (0, 1), "c": (0, 1)})
        costs.observe(0.3, {"b": (0, 1), "c": (0, 1)})
    assert costs.snapshot() == alone
    assert costs.queue_s_per_token is not None
    assert costs.queue_s_per_token > alone.queue_s_per_token  # the queue rate sees them


def test_one_prompt_size_gives_a_proportional_cost() -> None:
    costs = MeasuredCosts(chunk_tokens=512)
    for _ in range(3):
        costs.observe(0.01, {"a": (100, 0)})
    costs.observe(DECODE_S, {"a": (0, 1)})
    cost = costs.snapshot()
    assert cost is not None
    assert cost.prefill_step_s == 0.0
    assert cost.prefill_s_per_token == pytest.approx(1e-4)


def test_fitted_costs_approximate_the_cost_model_they_measure() -> None:
    """Steps timed by the simulator's cost model (what a GPU host's steps look like): the fit's
    isolated call times stay within a few percent of the model's own."""
    model = CostModel("a100-llama3-70b-tp4")
    chunk = model.profile.max_num_batched_tokens
    costs = MeasuredCosts(chunk_tokens=chunk)
    for n in (128, 512, 1024, 2048, 4096, chunk, 300, 3000):
        costs.observe(model.step_seconds(n, 0, 0, 0), {"a": (n, 0)})
    for context in (1000, 4000, 8000):
        costs.observe(model.step_seconds(0, 0, 1, context), {"a": (0, 1)})
    cost = costs.snapshot()
    assert cost is not None
    for prompt, output in ((2000, 200), (8000, 50), (20_000, 400)):
        assert cost.isolated_call_seconds(prompt, 0, output) == pytest.approx(
            model.isolated_call_seconds(prompt, 0, output), rel=0.1)


def test_a_preempted_requests_recompute_counts_as_prefill() -> None:
    accounting = StepAccounting(chunk_tokens=512)
    output = object()
    # "a" decodes one token; "b" recomputes 40 tokens of prompt and output after preemption
    accounting.scheduled(output, 1.0, {"a": 1, "b": 40}, {"a": 99, "b": 0}, {"a": 50, "b": 30})
    shares = {s.request_id: s for s in accounting.finished(output, 1.5)}
    assert (shares["a"].prefill_tokens, shares["a"].decode_tokens) == (0, 1)
    assert (shares["b"].prefill_tokens, shares["b"].decode_tokens) == (40, 0)
    assert shares["a"].gpu_s + shares["b"].gpu_s == pytest.approx(0.5)


def test_measured_cost_matches_the_shape_the_control_plane_rebuilds() -> None:
    cost = MeasuredCost(prefill_s_per_token=1e-4, decode_s_per_token=1e-2, prefill_step_s=0.01,
                        chunk_tokens=100)
    assert cost.isolated_call_seconds(250, 0, 1) == pytest.approx(3 * 0.01 + 250 * 1e-4)
    assert cost.isolated_call_seconds(250, 250, 3) == pytest.approx(0.01 + 1e-4 + 2e-2)

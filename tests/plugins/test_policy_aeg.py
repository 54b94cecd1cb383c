"""Agent Execution Graph: prior, online learning, conditional forecasts, JSON round trip."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.aeg import Z90, AEGPrior, AEGRegistry, AgentExecutionGraph, LogNormalFit
from plugins.views import WorkflowEvent


def ev(kind: str, wid: str, t: float, template: str = "coder", **kw: object) -> WorkflowEvent:
    return WorkflowEvent(kind, wid, "acme", template, t, **kw)  # type: ignore[arg-type]


def run_workflow(
    reg: AEGRegistry,
    wid: str,
    tool_latencies: list[float],
    tool: str = "bash",
    template: str = "coder",
    end: bool = True,
) -> float:
    """call, tool, call, tool, ..., call, [end]; each call 1 s, prompt +500 tokens per call."""
    t, prompt = 0.0, 1000
    for latency in tool_latencies:
        reg.observe(
            ev("call_start", wid, t, template, prompt_tokens=prompt, prefix_tokens=prompt - 500)
        )
        t += 1.0
        reg.observe(ev("call_end", wid, t, template, output_tokens=100))
        reg.observe(ev("tool_start", wid, t, template, tool_name=tool))
        t += latency
        reg.observe(ev("tool_end", wid, t, template, tool_name=tool))
        prompt += 500
    reg.observe(
        ev("call_start", wid, t, template, prompt_tokens=prompt, prefix_tokens=prompt - 500)
    )
    t += 1.0
    reg.observe(ev("call_end", wid, t, template, output_tokens=100))
    if end:
        reg.observe(ev("workflow_end", wid, t, template))
    return t


def test_prior_matches_the_documented_trace_figures() -> None:
    graph = AgentExecutionGraph("new")
    assert graph.pooled_tool.median == pytest.approx(9.0)
    assert graph.pooled_tool.quantile(Z90) == pytest.approx(72.0)
    assert graph.p_call_after("tool:anything") == pytest.approx(0.95)
    assert graph.reuse.mean == pytest.approx(0.974)
    p_next, gap, remaining = graph.call_summary()
    assert 0.9 < p_next < 1.0
    assert gap > 9.0  # the log-normal mean exceeds its median
    assert remaining > 5


def test_a_new_template_predicts_from_the_prior() -> None:
    reg = AEGRegistry()
    reg.observe(ev("call_start", "w1", 0.0, "fresh", prompt_tokens=4000))
    reg.observe(ev("call_end", "w1", 2.0, "fresh", output_tokens=200))
    reg.observe(ev("tool_start", "w1", 2.0, "fresh", tool_name="grep"))
    pred = reg.predict("w1", now_s=2.0)
    assert pred.p_next_call == pytest.approx(0.95)
    assert pred.expected_gap_s == pytest.approx(graph_mean(9.0, 72.0) + 0.2, rel=1e-6)
    assert pred.reuse_tokens == pytest.approx(0.974 * 4200)


def graph_mean(median: float, p90: float) -> float:
    sigma = (math.log(p90) - math.log(median)) / Z90
    return math.exp(math.log(median) + sigma * sigma / 2)


def test_evidence_overwrites_the_prior() -> None:
    reg = AEGRegistry()
    for i in range(200):
        run_workflow(reg, f"w{i}", [2.0, 2.0, 2.0])
    graph = reg.graph("coder")
    assert graph.tool_fit("bash").median == pytest.approx(2.0, rel=0.05)
    # 3 tools, each followed by a call: P(call | tool) -> 1; every call but the last -> tool.
    assert graph.p_call_after("tool:bash") > 0.98
    probs = graph.transition_probabilities("call")
    assert probs["tool:bash"] == pytest.approx(0.75, abs=0.02)
    assert probs["end"] == pytest.approx(0.25, abs=0.02)
    # reuse of call k = its prefix (the previous prompt) / previous context (prompt + 100 output)
    assert graph.reuse.mean == pytest.approx(
        (1000 / 1100 + 1500 / 1600 + 2000 / 2100) / 3, abs=1e-3
    )
    assert graph.growth.mean == pytest.approx(500, rel=0.05)
    assert graph.workflows_seen == 200


def test_reuse_is_learned_from_prefix_tokens_or_cached_tokens() -> None:
    reg = AEGRegistry(AEGPrior(mean_weight=1e-9))
    reg.observe(ev("call_start", "a", 0, prompt_tokens=1000))
    reg.observe(ev("call_end", "a", 1, output_tokens=0))
    reg.observe(ev("call_start", "a", 2, prompt_tokens=1200, prefix_tokens=500, cached_tokens=0))
    assert reg.graph("coder").reuse.mean == pytest.approx(0.5)
    reg.observe(ev("call_end", "a", 3, output_tokens=0))
    reg.observe(ev("call_start", "a", 4, prompt_tokens=1300, cached_tokens=1200))
    assert reg.graph("coder").reuse.mean == pytest.approx(0.75)


def test_time_to_next_call_is_conditioned_on_time_spent_in_the_tool() -> None:
    reg = AEGRegistry()
    reg.observe(ev("call_start", "w", 0.0, prompt_tokens=100))
    reg.observe(ev("call_end", "w", 1.0, output_tokens=10))
    reg.observe(ev("tool_start", "w", 1.0, tool_name="pytest"))
    gaps = [reg.predict("w", now_s=1.0 + e).expected_gap_s for e in (0.0, 5.0, 60.0, 600.0)]
    # Heavy-tailed tools (sigma ~1.6): the longer a tool has run, the longer it is expected to
    # keep running, unlike a memoryless or fixed-TTL view.
    assert gaps[0] < gaps[1] < gaps[2] < gaps[3]
    fit = reg.graph("coder").tool_fit("pytest")
    assert gaps[3] == pytest.approx(fit.mean_residual(600.0) + 0.2)


@settings(max_examples=30, deadline=None)
@given(
    median=st.floats(0.5, 50.0),
    spread=st.floats(1.2, 20.0),
    elapsed=st.floats(0.0, 200.0),
)
def test_mean_residual_matches_numerical_integration(
    median: float, spread: float, elapsed: float
) -> None:
    fit = LogNormalFit.from_quantiles(median, median * spread, 1.0)
    mu, s = fit.mu, fit.sigma

    # E[X - e | X > e] = integral_e^inf S(x) dx / S(e), S = survival; integrate in log space.
    def survival(x: float) -> float:
        return 0.5 * math.erfc((math.log(x) - mu) / (s * math.sqrt(2)))

    lo = math.log(max(elapsed, 1e-9))
    hi = mu + 12 * s
    if hi <= lo:
        return
    n = 4000
    h = (hi - lo) / n
    total = 0.0
    for i in range(n + 1):
        u = lo + i * h
        weight = 0.5 if i in (0, n) else 1.0
        total += weight * survival(math.exp(u)) * math.exp(u)
    total *= h
    if elapsed <= 0:
        expected = fit.mean
    else:
        s_e = survival(elapsed)
        if s_e < 1e-9:
            return
        expected = total / s_e
    assert fit.mean_residual(elapsed) == pytest.approx(expected, rel=2e-2)


def test_finished_and_unknown_workflows() -> None:
    reg = AEGRegistry()
    run_workflow(reg, "done", [1.0])
    pred = reg.predict("done", context_tokens=500)
    assert pred.p_next_call == 1.0 and pred.reuse_tokens == 500  # neutral: nothing is known
    reg.observe(ev("call_start", "live", 0.0, prompt_tokens=100))
    reg.forget("live")
    assert reg.predict("live").expected_gap_s == 0.0


def test_user_think_time_without_a_tool() -> None:
    reg = AEGRegistry()
    reg.observe(ev("call_start", "w", 0.0, template="chat", prompt_tokens=100))
    reg.observe(ev("call_end", "w", 1.0, template="chat", output_tokens=10))
    reg.observe(ev("call_start", "w", 31.0, template="chat", prompt_tokens=200))
    graph = reg.graph("chat")
    assert graph.counts["call"]["call"] == 1
    assert graph.think.n == pytest.approx(6.0)


def test_json_round_trip_preserves_predictions() -> None:
    reg = AEGRegistry()
    rng = random.Random(7)
    for i in range(20):
        run_workflow(reg, f"w{i}", [rng.lognormvariate(1.0, 1.0) for _ in range(4)], tool="bash")
        run_workflow(reg, f"v{i}", [rng.lognormvariate(3.0, 0.5) for _ in range(2)], tool="web")
    document = json.loads(json.dumps(reg.to_json("coder")))
    fresh = AEGRegistry()
    fresh.load(document)
    assert fresh.to_json("coder") == document
    for r in (reg, fresh):
        r.observe(ev("call_start", "probe", 0.0, prompt_tokens=1000))
        r.observe(ev("call_end", "probe", 1.0, output_tokens=50))
        r.observe(ev("tool_start", "probe", 1.0, tool_name="web"))
    assert reg.predict("probe", now_s=11.0) == fresh.predict("probe", now_s=11.0)


@settings(max_examples=25, deadline=None)
@given(
    latencies=st.lists(st.floats(0.01, 1e4), min_size=0, max_size=8),
    tool=st.text(alphabet="abcxyz_-", min_size=1, max_size=6),
)
def test_json_round_trip_property(latencies: list[float], tool: str) -> None:
    reg = AEGRegistry()
    run_workflow(reg, "w", latencies, tool=tool)
    document = json.loads(json.dumps(reg.to_json("coder")))
    assert AgentExecutionGraph.from_dict(document).to_dict() == document


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(format="other"), "format"),
        (lambda d: d.update(version=99), "version"),
        (lambda d: d.update(think=[1, 2]), "think"),
        (lambda d: d.update(tools={"bash": ["x", 1, 2]}), "tools.bash"),
        (lambda d: d.update(transitions={"call": {"end": "many"}}), "transitions.call.end"),
        (lambda d: d.update(growth=[-1, 3]), "growth"),
    ],
)
def test_malformed_documents_name_the_field(mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    document = AEGRegistry().to_json("t")
    mutate(document)
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        AgentExecutionGraph.from_dict(document)


def test_bad_prior_and_unknown_event_kind() -> None:
    with pytest.raises(ValueError, match="p_call_after_tool"):
        AEGPrior(p_call_after_tool=1.5)
    with pytest.raises(ValueError, match="kind"):
        AEGRegistry().observe(ev("teleport", "w", 0.0))


def test_a_pushed_graph_is_merged_with_what_live_workflows_taught_locally() -> None:
    """A node's own observations of workflows still running survive a pushed graph (the
    control plane learns workflows only once they complete); finished ones are not counted
    twice."""
    from plugins.aeg import AEGRegistry
    from plugins.views import WorkflowEvent

    def ev(kind: str, wf: str, t: float, **kw: object) -> WorkflowEvent:
        return WorkflowEvent(kind=kind, workflow_id=wf, tenant="t", template="swe", time_s=t,
                             **kw)  # type: ignore[arg-type]

    central = AEGRegistry()
    for e in (ev("call_start", "done", 0, prompt_tokens=100), ev("call_end", "done", 1,
              output_tokens=10), ev("tool_start", "done", 1, tool_name="bash"),
              ev("tool_end", "done", 4, tool_name="bash"), ev("workflow_end", "done", 5)):
        central.observe(e)
    pushed = central.to_json("swe")

    node = AEGRegistry()
    for e in (ev("call_start", "done", 0, prompt_tokens=100), ev("call_end", "done", 1,
              output_tokens=10), ev("tool_start", "done", 1, tool_name="bash"),
              ev("tool_end", "done", 4, tool_name="bash"), ev("workflow_end", "done", 5),
              ev("call_start", "live", 6, prompt_tokens=50), ev("call_end", "live", 7,
              output_tokens=5), ev("tool_start", "live", 7, tool_name="grep"),
              ev("tool_end", "live", 9, tool_name="grep")):
        node.observe(e)
    graph = node.load(pushed)
    assert graph.workflows_seen == 2  # the pushed one plus the live one, not three
    assert "grep" in graph.tools and graph.tools["bash"].n == pushed["tools"]["bash"][0]
    assert node.predict("live", 9.0).p_next_call > 0  # still followed live

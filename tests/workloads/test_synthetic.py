"""Synthetic SWE-bench-like and WebArena-like generators: seeded, shaped like their sources."""

from __future__ import annotations

import statistics

import pytest

from nodeagent.workloads.model import WorkloadError
from nodeagent.workloads.synthetic import (
    SWE_CONTEXT_LIMIT,
    SWE_SYSTEM_TOKENS,
    SWE_TEMPLATE,
    SWE_TOOLS,
    WEBARENA_SYSTEM_TOKENS,
    WEBARENA_TEMPLATE,
    generate,
    sigma_for,
)


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def test_seeded_and_deterministic() -> None:
    a, b, c = generate("mix", 40, seed=1), generate("mix", 40, seed=1), generate("mix", 40, 2)
    assert a.workflows == b.workflows and a.tree.to_lists() == b.tree.to_lists()
    assert a.workflows != c.workflows
    assert {w.template for w in a.workflows} == {SWE_TEMPLATE, WEBARENA_TEMPLATE}


def test_system_prompt_is_one_shared_segment_per_template() -> None:
    w = generate("mix", 60, seed=3)
    w.validate()
    roots: dict[str, set[int]] = {}
    for wf in w.workflows:
        root = w.tree.path(wf.calls[0].prompt_segment)[0]
        roots.setdefault(wf.template, set()).add(root)
    assert all(len(r) == 1 for r in roots.values())
    for (root,) in roots.values():
        assert w.tree.owner(root) is None
    swe_root = next(iter(roots[SWE_TEMPLATE]))
    assert w.tree.tokens(swe_root) == SWE_SYSTEM_TOKENS
    private = [s for s in w.tree.segments() if s not in (r for rs in roots.values() for r in rs)]
    assert all(w.tree.owner(s) is not None for s in private)


def test_swe_shape_matches_weka_measurements() -> None:
    """Weka (PROVENANCE.md + our 500-session measurement): calls p50 35, tool gap p25/50/90
    6/9/67 s, context growth p50 330 tokens, output p50 234, ~97% prefix reuse."""
    w = generate("swe", 400, seed=11)
    calls = [c for wf in w.workflows for c in wf.calls]
    gaps = [c.gap_after_s for c in calls if c.tool]
    assert 4.0 <= quantile(gaps, 0.25) <= 8.0
    assert 7.0 <= quantile(gaps, 0.5) <= 12.0
    assert 45.0 <= quantile(gaps, 0.9) <= 100.0
    assert 25 <= statistics.median(len(wf.calls) for wf in w.workflows) <= 50
    assert 180 <= statistics.median(c.output_tokens for c in calls) <= 300
    growth = [b.input_tokens - a.input_tokens - a.output_tokens
              for wf in w.workflows for a, b in zip(wf.calls, wf.calls[1:], strict=False)]
    assert 250 <= statistics.median(growth) <= 450
    reused = total = 0
    for wf in w.workflows:
        for a, b in zip(wf.calls, wf.calls[1:], strict=False):
            total += b.input_tokens
            reused += w.tree.common_prefix_tokens(a.prompt_segment, b.prompt_segment)
    assert reused / total > 0.95
    assert max(c.input_tokens for c in calls) <= SWE_CONTEXT_LIMIT
    assert {c.tool for c in calls} == {t.name for t in SWE_TOOLS} | {None}


def test_webarena_follows_the_reference_agent() -> None:
    """WebArena reference agent: <= 30 steps, observation truncated to 1,920 tokens, output
    <= 384 tokens, 2 s settle time after each action; only the system prompt is reused."""
    w = generate("webarena", 300, seed=5)
    calls = [c for wf in w.workflows for c in wf.calls]
    assert max(len(wf.calls) for wf in w.workflows) <= 30
    assert max(c.input_tokens for c in calls) <= WEBARENA_SYSTEM_TOKENS + 1_920 + 400
    assert 2_000 <= statistics.median(c.input_tokens for c in calls) <= 4_000
    assert max(c.output_tokens for c in calls) <= 384
    assert min(c.gap_after_s for c in calls if c.tool) >= 2.0
    assert all(c.output_segment == -1 for c in calls)
    for wf in w.workflows[:50]:
        for a, b in zip(wf.calls, wf.calls[1:], strict=False):
            common = w.tree.common_prefix_tokens(a.prompt_segment, b.prompt_segment)
            assert common == WEBARENA_SYSTEM_TOKENS


def test_bad_kind_and_count() -> None:
    with pytest.raises(WorkloadError, match="unknown synthetic kind 'chat'"):
        generate("chat")
    with pytest.raises(WorkloadError, match=">= 1"):
        generate("swe", 0)


def test_sigma_for_gives_the_requested_p90() -> None:
    import math
    s = sigma_for(35, 154)
    assert 35 * math.exp(1.2815515655446004 * s) == pytest.approx(154)

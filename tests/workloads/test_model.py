"""ContextTree, the workload dataclasses and arrival helpers."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.workloads.model import (
    ROOT,
    CallSpec,
    ContextTree,
    TenantSpec,
    WorkflowSpec,
    Workload,
    WorkloadError,
    poisson_arrivals,
    with_arrivals,
)


def small_tree() -> tuple[ContextTree, list[int]]:
    t = ContextTree()
    sys_ = t.add(ROOT, 100)  # shared
    a1 = t.add(sys_, 50, "a")
    a2 = t.add(a1, 30, "a")
    b1 = t.add(sys_, 70, "b")
    return t, [sys_, a1, a2, b1]


def test_tree_offsets_paths_and_owners() -> None:
    t, (sys_, a1, a2, b1) = small_tree()
    assert t.start_tokens(a2) == 150 and t.end_tokens(a2) == 180
    assert t.path(a2) == [sys_, a1, a2]
    assert t.depth(b1) == 2
    assert t.owner(sys_) is None and t.owner(a1) == "a"
    assert t.parent(sys_) == ROOT
    assert len(t) == 4


def test_common_prefix_and_ancestry() -> None:
    t, (sys_, a1, a2, b1) = small_tree()
    assert t.common_prefix_tokens(a2, b1) == 100
    assert t.common_prefix_tokens(a2, a1) == 150
    assert t.common_prefix_tokens(a2, a2) == 180
    assert t.is_ancestor(a1, a2) and not t.is_ancestor(b1, a2)
    other_root = t.add(ROOT, 5, "c")
    assert t.common_prefix_tokens(other_root, a2) == 0


def test_mark_shared_clears_owner_up_the_path() -> None:
    t, (_, a1, a2, b1) = small_tree()
    t.mark_shared(a2)
    assert t.owner(a2) is None and t.owner(a1) is None and t.owner(b1) == "b"


def test_tree_rejects_bad_segments() -> None:
    t = ContextTree()
    with pytest.raises(ValueError, match="tokens"):
        t.add(ROOT, 0)
    with pytest.raises(ValueError, match="parent"):
        t.add(7, 10)


def test_tree_list_roundtrip_and_validation() -> None:
    t, _ = small_tree()
    lists = t.to_lists()
    back = ContextTree.from_lists(lists["parent"], lists["tokens"], lists["owner"])
    assert back.to_lists() == lists
    with pytest.raises(WorkloadError, match="segment 1"):
        ContextTree.from_lists([ROOT, 5], [1, 1], [None, None])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 500)), min_size=1,
                max_size=60))
def test_end_tokens_is_sum_over_path(spec: list[tuple[int, int]]) -> None:
    t = ContextTree()
    for i, (p, n) in enumerate(spec):
        t.add(ROOT if i == 0 else p % i if p % 3 else ROOT, n)
    for seg in t.segments():
        assert t.end_tokens(seg) == sum(t.tokens(s) for s in t.path(seg))
        for other in t.segments():
            common = t.common_prefix_tokens(seg, other)
            shared = [s for s in t.path(seg) if s in set(t.path(other))]
            assert common == sum(t.tokens(s) for s in shared)


def tiny_workload() -> Workload:
    t = ContextTree()
    s0 = t.add(ROOT, 10, "w0")
    o0 = t.add(s0, 5, "w0")
    s1 = t.add(o0, 20, "w0")
    s2 = t.add(ROOT, 8, "w1")
    wfs = [
        WorkflowSpec("w0", "default", "x", 0.0,
                     (CallSpec(s0, 10, 5, "bash", 1.0, o0), CallSpec(s1, 35, 3, None, 0.0))),
        WorkflowSpec("w1", "default", "x", 0.0, (CallSpec(s2, 8, 2, None, 0.0),)),
    ]
    return Workload("tiny", "test", t, wfs, {"default": TenantSpec("default")})


def test_validate_accepts_consistent_workload_and_names_violations() -> None:
    w = tiny_workload()
    w.validate()
    bad = Workload(w.name, w.source, w.tree, [WorkflowSpec(
        "w9", "default", "x", 0.0, (CallSpec(0, 11, 5, None, 0.0),))], w.tenants)
    with pytest.raises(WorkloadError, match="w9 call 0: input_tokens 11"):
        bad.validate()
    bad_tenant = Workload(w.name, w.source, w.tree, [WorkflowSpec(
        "w8", "nobody", "x", 0.0, (CallSpec(0, 10, 5, None, 0.0),))], w.tenants)
    with pytest.raises(WorkloadError, match="unknown tenant"):
        bad_tenant.validate()
    bad_out = Workload(w.name, w.source, w.tree, [WorkflowSpec(
        "w7", "default", "x", 0.0, (CallSpec(0, 10, 4, None, 0.0, 1),))], w.tenants)
    with pytest.raises(WorkloadError, match="output_segment"):
        bad_out.validate()


def test_with_arrivals_sets_and_sorts() -> None:
    w = tiny_workload()
    moved = with_arrivals(w, [5.0, 2.0])
    assert [(x.workflow_id, x.arrival_s) for x in moved.workflows] == [("w1", 2.0), ("w0", 5.0)]
    assert [x.arrival_s for x in w.workflows] == [0.0, 0.0]  # original untouched
    assert w.with_arrivals([1.0, 0.5]).workflows[0].workflow_id == "w1"
    with pytest.raises(ValueError, match="entries"):
        with_arrivals(w, [1.0])


def test_poisson_arrivals_seeded_with_expected_rate() -> None:
    a = poisson_arrivals(4000, 2.0, seed=7)
    assert a == poisson_arrivals(4000, 2.0, seed=7)
    assert a != poisson_arrivals(4000, 2.0, seed=8)
    assert a[0] == 0.0 and all(x <= y for x, y in zip(a, a[1:], strict=False))
    gaps = [y - x for x, y in zip(a, a[1:], strict=False)]
    assert statistics.mean(gaps) == pytest.approx(0.5, rel=0.06)
    with pytest.raises(ValueError):
        poisson_arrivals(3, 0.0, seed=1)


def test_summary_counts_and_reuse() -> None:
    from nodeagent.workloads.summary import percentile, summarize

    s = summarize(tiny_workload())
    assert (s["workflows"], s["calls"], s["segments"]) == (2, 3, 4)
    assert s["prefix_reuse"] == pytest.approx(10 / 35)  # call 2 repeats call 1's 10 tokens
    assert s["tool_gap_s_p50"] == 1.0 and s["templates"] == {"x": 2}
    assert s["shared_tokens"] == 0
    assert percentile([], 50) == 0.0 and percentile([3.0, 1.0, 2.0], 50) == 2.0


def test_cap_gaps_caps_only_long_gaps() -> None:
    from nodeagent.workloads.model import cap_gaps

    w = tiny_workload()
    capped = cap_gaps(w, 0.5)
    assert [c.gap_after_s for c in capped.workflows[0].calls] == [0.5, 0.0]
    assert cap_gaps(w, 10.0).workflows == w.workflows
    with pytest.raises(ValueError):
        cap_gaps(w, -1.0)

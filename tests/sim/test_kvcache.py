"""The segment KV cache: block alignment, sharing, pins, leaf eviction, high-water marks."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.sim.kvcache import SegmentKVCache, TreeIndex
from nodeagent.workloads.model import ROOT, ContextTree


def _tree() -> tuple[ContextTree, dict[str, int]]:
    t = ContextTree()
    s = {}
    s["sys"] = t.add(ROOT, 40)            # tokens 0..40: owns blocks 0,1 (block 2 straddles)
    s["a1"] = t.add(s["sys"], 30, "a")    # 40..70: owns blocks 2,3 (end 70 -> 4 full blocks)
    s["a2"] = t.add(s["a1"], 50, "a")     # 70..120: owns blocks 4..6
    s["b1"] = t.add(s["sys"], 100, "b")   # 40..140: owns blocks 2..7
    return t, s


def test_owned_blocks_follow_absolute_alignment() -> None:
    t, s = _tree()
    idx = TreeIndex(t, 16)
    assert [idx.owned[s[k]] for k in ("sys", "a1", "a2", "b1")] == [2, 2, 3, 6]


def test_only_full_blocks_are_cached_and_shared_prefix_is_reused() -> None:
    t, s = _tree()
    cache = SegmentKVCache(TreeIndex(t, 16), 100)
    pa = t.path(s["a2"])
    added, frontier = cache.materialize(pa, 0, 115, now=1.0)
    assert added == 7  # 115 tokens -> 7 full blocks (112 tokens); the partial block is not cached
    assert cache.cached_end(pa, 10_000) == 112
    assert frontier == 3  # a2 owns blocks 4..6 only: all cached, block 7 would be a child's
    pb = t.path(s["b1"])
    assert cache.cached_end(pb, 10_000) == 32  # the shared system prompt's two full blocks
    cache.check_invariants()


def test_eviction_takes_leaf_tail_and_exposes_parent() -> None:
    t, s = _tree()
    cache = SegmentKVCache(TreeIndex(t, 16), 100)
    pa = t.path(s["a2"])
    cache.materialize(pa, 0, 120, now=1.0)
    assert cache.candidates() == [s["a2"]]
    assert cache.evict(s["a2"], 2) == 2
    assert cache.cached_end(pa, 10_000) == 80
    assert cache.evict(s["a2"], 5) == 1  # only one block left
    assert set(cache.candidates()) == {s["a1"]}
    cache.check_invariants()
    # high-water mark remembers what was cached: re-prefilling 64..120 is recompute
    assert cache.ever_cached_end(pa, 10_000) == 112
    assert cache.cached_end(pa, 10_000) == 64


def test_pinned_segments_are_not_candidates() -> None:
    t, s = _tree()
    cache = SegmentKVCache(TreeIndex(t, 16), 100)
    pa, pb = t.path(s["a2"]), t.path(s["b1"])
    cache.materialize(pa, 0, 120, now=1.0)
    cache.materialize(pb, 0, 140, now=2.0)
    cache.pin(pa)
    assert cache.candidates() == [s["b1"]]
    assert not cache.evict(s["a2"], 3)
    cache.unpin(pa)
    assert set(cache.candidates()) == {s["a2"], s["b1"]}


def test_evict_until_follows_a_workflows_chain_but_not_shared_parents() -> None:
    t, s = _tree()
    cache = SegmentKVCache(TreeIndex(t, 16), 13)
    cache.materialize(t.path(s["a2"]), 0, 120, now=1.0)
    cache.materialize(t.path(s["b1"]), 0, 140, now=2.0)
    assert cache.free_blocks == 0
    asked: list[list[int]] = []

    def order(cands: list[int]) -> list[int]:
        asked.append(sorted(cands))
        return sorted(cands)  # a2 (id 2) before b1 (id 3)

    assert cache.evict_until(5, order)
    # a2's 3 blocks, then its parent a1 (same workflow) for 2 more; b1 untouched
    assert cache.blocks.get(s["a2"], 0) == 0 and cache.blocks.get(s["a1"], 0) == 0
    assert cache.blocks[s["b1"]] == 6 and cache.blocks[s["sys"]] == 2
    assert len(asked) == 1
    cache.check_invariants()


def test_read_integrates_useful_block_seconds() -> None:
    t, s = _tree()
    cache = SegmentKVCache(TreeIndex(t, 16), 100)
    pa = t.path(s["a1"])
    cache.materialize(pa, 0, 70, now=0.0)  # 4 blocks at t=0
    cache.read(pa, 70, now=10.0)
    assert cache.useful_block_seconds == 40.0
    cache.read(pa, 32, now=15.0)  # only sys's 2 blocks read again
    assert cache.useful_block_seconds == 50.0


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=10_000))
def test_random_operations_keep_invariants(seed: int) -> None:
    rng = random.Random(seed)
    t = ContextTree()
    segs = [t.add(ROOT, rng.randint(1, 60), None)]
    for i in range(25):
        segs.append(t.add(rng.choice(segs), rng.randint(1, 60), f"w{i % 4}"))
    cache = SegmentKVCache(TreeIndex(t, 16), 30)
    pinned: list[list[int]] = []
    for step in range(60):
        op = rng.random()
        path = t.path(rng.choice(segs))
        if op < 0.5:
            upto = rng.randint(1, t.end_tokens(path[-1]))
            cache.pin(path)
            need = cache.new_blocks_needed(path, 0, upto)
            if cache.evict_until(need, lambda c: sorted(c)):
                added, _ = cache.materialize(path, 0, upto, float(step))
                assert added == need
            cache.unpin(path)
        elif op < 0.7:
            cache.pin(path)
            pinned.append(path)
        elif op < 0.85 and pinned:
            cache.unpin(pinned.pop(rng.randrange(len(pinned))))
        else:
            for seg in cache.candidates():
                cache.evict(seg, rng.randint(1, 3))
        cache.check_invariants()
        for p in (t.path(x) for x in segs):
            assert cache.cached_end(p, 10**9) <= cache.ever_cached_end(p, 10**9)

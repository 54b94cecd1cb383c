"""Farthest-next-use replayed on a node's timeline: the like-for-like Belady heuristic.

``recompute_vs_belady_concurrent`` compares a policy's recompute with that of farthest-next-use
eviction on *the same per-node timeline and capacity*: the same admissions and releases as the
online run, so concurrently running calls pin their blocks (and their private blocks take
capacity) as online; only the eviction choices differ. ``recompute_vs_belady`` uses the true
lower bound of :mod:`nodeagent.sim.belady_bound` instead: this replay is a heuristic, because

* next use is per segment: a leaf's blocks are all next needed by the first later access whose
  path contains the segment (on a prefix tree a leaf's next use is never earlier than its
  parent's, so leaf-only eviction loses nothing against Belady on the same tree);
* with variable-size entries and prefix dependencies farthest-next-use is the classical
  heuristic, not a proven optimum (the general problem is NP-hard), so a policy can beat it.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from nodeagent.sim.engine import ADMIT, AccessEvent
from nodeagent.sim.kvcache import SegmentKVCache, TreeIndex

NEVER = float("inf")


class _Oracle:
    """Next use of a segment: the index of the next access whose path contains it."""

    def __init__(self, paths: Sequence[Sequence[int]], index: TreeIndex) -> None:
        occ: dict[int, list[int]] = {}
        for j, path in enumerate(paths):
            for seg in path:
                lst = occ.get(seg)
                if lst is None:
                    occ[seg] = [j]
                else:
                    lst.append(j)
        self.occ = occ
        self.start = index.start
        self.current = 0

    def next_use(self, seg: int) -> float:
        lst = self.occ.get(seg)
        if not lst:
            return NEVER
        k = bisect.bisect_right(lst, self.current)
        return float(lst[k]) if k < len(lst) else NEVER

    def order(self, cands: list[int]) -> list[int]:
        """Farthest next use first (never-used-again first), deeper first on ties."""
        start = self.start
        return sorted(cands, key=lambda s: (-self.next_use(s), -start[s], s))


def _insert(cache: SegmentKVCache, oracle: _Oracle, path: Sequence[int], upto: int,
            extra_blocks: int, now: float) -> int:
    """Make room (Belady order) and cache the path up to ``upto``; ``extra_blocks`` more are
    reserved as private. Caches the longest prefix that fits; returns private blocks taken."""
    want = cache.new_blocks_needed(path, 0, upto) + extra_blocks
    if want > cache.free_blocks:
        cache.evict_until(want, oracle.order)
    if cache.new_blocks_needed(path, 0, upto) > cache.free_blocks:
        upto = _largest_fitting(cache, path, upto)
    cache.materialize(path, 0, upto, now)
    private = min(extra_blocks, cache.free_blocks)
    cache.reserve_private(private)
    return private


def belady_recompute_concurrent(index: TreeIndex, capacity_blocks: int,
                                log: Sequence[AccessEvent]) -> int:
    """Belady's MIN on the node's *timeline*: the same admissions and releases as the online
    run, so the calls that were running concurrently pin their blocks (and their private
    blocks take capacity) as online; only the eviction choices differ. A call holds, from its
    admission, the KV it had computed when it was released (a call preempted early holds
    little); only the prefill it actually did can be recompute. A re-admission after
    preemption is an access like any other.
    """
    held_at_release: dict[str, list[int]] = {}
    for e in log:
        if e.kind != ADMIT:
            held_at_release.setdefault(e.call_id, []).append(e.written)
    for lst in held_at_release.values():
        lst.reverse()  # pop() yields them in order
    admits = [e for e in log if e.kind == ADMIT]
    bs = index.block_size
    oracle = _Oracle([e.path for e in admits], index)
    cache = SegmentKVCache(index, capacity_blocks)
    running: dict[str, tuple[Sequence[int], int]] = {}
    recompute = 0
    j = -1
    for e in log:
        if e.kind != ADMIT:
            held = running.pop(e.call_id, None)
            if held is not None:
                cache.unpin(held[0])
                cache.reserve_private(-held[1])
            continue
        j += 1
        oracle.current = j
        pending = held_at_release.get(e.call_id)
        written = pending.pop() if pending else max(e.need, e.written)
        cap = (e.need - 1) // bs * bs
        hit = cache.cached_end(e.path, cap)
        ever = min(cache.ever_cached_end(e.path, cap), written)
        if ever > hit:
            recompute += ever - hit
        cache.pin(e.path)
        upto = min(written, e.path_end)
        private = -(-written // bs) - upto // bs
        taken = _insert(cache, oracle, e.path, upto, private, float(j))
        running[e.call_id] = (e.path, taken)
    return recompute


def _largest_fitting(cache: SegmentKVCache, path: Sequence[int], upto: int) -> int:
    lo, hi = 0, upto // cache.bs
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cache.new_blocks_needed(path, 0, mid * cache.bs) <= cache.free_blocks:
            lo = mid
        else:
            hi = mid - 1
    return lo * cache.bs

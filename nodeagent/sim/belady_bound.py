"""A true lower bound on a run's recompute: Belady's MIN on a relaxation of the node's cache.

``recompute_vs_belady`` must never fall below 1.0, at any pressure: its yardstick has to be at
most the recompute of *any* eviction order on the same access sequence. Farthest-next-use on
variable-size prefix segments is only a heuristic (the older sequential replay of
:mod:`nodeagent.sim.belady` could exceed a policy's own recompute at low pressure), so the
yardstick is computed on a relaxation where Belady's rule is provably optimal:

* the unit is a KV block; every block is a page of the same size (segments, tree structure and
  contiguity are dropped: a block may be cached while its parent is not, and a hit counts per
  block rather than for the contiguous prefix only);
* accesses are the node's calls' first admissions, in order; at access ``j`` the requested
  pages are the full blocks of its prompt short of the last token, the online engine's rule;
  afterwards the call's blocks up to what it will have written are inserted;
* only the requested pages must be present for a hit; nothing is pinned, no call holds
  private blocks, the whole capacity is cache; after each access the cache keeps at most
  ``capacity_blocks`` pages, which it may choose freely among what it held and what was
  inserted (bypass allowed);
* a miss costs ``block_size`` tokens of recompute when the page had been inserted by an earlier
  access (computed on this node before), 0 otherwise (compulsory).

Every online schedule (any eviction policy, pins, preemptions) is feasible in this relaxation:
its cache never holds more than the capacity, it holds only pages computed earlier, and its
recompute counts (contiguous high-water mark minus contiguous hit) are at least the relaxed
per-page misses of seen pages. For uniform pages with bypass, keeping the pages whose next
request is nearest (evicting the farthest first) minimises misses (Belady 1966; Mattson et al.
1970), and since compulsory misses are fixed it minimises recompute. So the value is a lower
bound at every pressure, and 0 when nothing needs evicting.

Cost: within a segment a block's next use is never earlier than that of the block before it,
so the cache holds a prefix of each segment and evicts from its tail; a max-heap over segments
keyed by the next use of their tail block gives O(path length x log segments) per access.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from nodeagent.sim.engine import ADMIT, AccessEvent
from nodeagent.sim.kvcache import TreeIndex

_NEVER = float("inf")


class _Uses:
    """Per segment, the later accesses that request it and how many of its blocks each does."""

    __slots__ = ("at", "blocks", "ptr")

    def __init__(self) -> None:
        self.at: dict[int, list[int]] = {}
        self.blocks: dict[int, list[int]] = {}
        self.ptr: dict[int, int] = {}

    def add(self, seg: int, access: int, blocks: int) -> None:
        self.at.setdefault(seg, []).append(access)
        self.blocks.setdefault(seg, []).append(blocks)

    def advance(self, seg: int, access: int) -> None:
        """Move the segment's cursor past ``access`` (called once the access is done)."""
        at = self.at.get(seg)
        if at is None:
            return
        i = self.ptr.get(seg, 0)
        while i < len(at) and at[i] <= access:
            i += 1
        self.ptr[seg] = i

    def next_use(self, seg: int, block: int) -> tuple[float, int]:
        """The next access requesting the segment's ``block`` (0-based), and the most blocks
        any access before that one requests (blocks at or above it share that next use)."""
        at = self.at.get(seg)
        if at is None:
            return _NEVER, 0
        blocks = self.blocks[seg]
        below = 0
        for i in range(self.ptr.get(seg, 0), len(at)):
            if blocks[i] > block:
                return float(at[i]), below
            below = max(below, blocks[i])
        return _NEVER, below


def _blocks_of(index: TreeIndex, seg: int, upto_tokens: int) -> int:
    """Full blocks of ``seg`` that lie below ``upto_tokens`` of its path."""
    first = index.start[seg] // index.block_size
    return max(0, min(index.owned[seg], upto_tokens // index.block_size - first))


def recompute_lower_bound(index: TreeIndex, capacity_blocks: int,
                          log: Sequence[AccessEvent]) -> int:
    """The least recompute (tokens) any eviction order could have had on this node's accesses
    (see the module docstring for the relaxation and why it is a bound)."""
    bs = index.block_size
    accesses = [e for e in log if e.kind == ADMIT and e.first]
    requested: list[list[tuple[int, int]]] = []
    inserted: list[list[tuple[int, int]]] = []
    uses = _Uses()
    for j, e in enumerate(accesses):
        cap = (e.need - 1) // bs * bs
        upto = min(max(e.need, e.written), e.path_end)
        req = [(s, _blocks_of(index, s, cap)) for s in e.path if index.start[s] < max(cap, upto)]
        requested.append([(s, b) for s, b in req if b > 0])
        inserted.append([(s, _blocks_of(index, s, upto)) for s, _ in req])
        for s, b in requested[-1]:
            uses.add(s, j, b)

    cached: dict[int, int] = {}
    ever: dict[int, int] = {}
    version: dict[int, int] = {}
    heap: list[tuple[float, int, int]] = []  # (-next use of the tail block, segment, version)
    total = 0
    recompute = 0

    def rekey(seg: int) -> None:
        v = version.get(seg, 0) + 1
        version[seg] = v
        c = cached.get(seg, 0)
        if c > 0:
            heapq.heappush(heap, (-uses.next_use(seg, c - 1)[0], seg, v))

    for j in range(len(accesses)):
        for s, b in requested[j]:
            seen = min(ever.get(s, 0), b)
            hit = min(cached.get(s, 0), b)
            recompute += (seen - hit) * bs
        for s, b in inserted[j]:
            uses.advance(s, j)
            c = cached.get(s, 0)
            if b > c:
                cached[s] = b
                total += b - c
            if b > ever.get(s, 0):
                ever[s] = b
            rekey(s)
        while total > capacity_blocks:
            _, s, v = heapq.heappop(heap)
            if version.get(s) != v:
                continue
            c = cached[s]
            below = uses.next_use(s, c - 1)[1]
            # blocks [below, c) share the tail's next use: drop as many as the excess needs
            drop = min(c - below, total - capacity_blocks)
            cached[s] = c - drop
            total -= drop
            rekey(s)
    return recompute

"""A node's paged KV cache, represented by prefix segments instead of one object per block.

Why segments: a replay of hundreds of agent sessions with 100k-token contexts holds millions of
16-token blocks per node; the simulator must touch only a handful of objects per call. The
cache stores, for each segment of the global :class:`~nodeagent.workloads.model.ContextTree`, how
many of the blocks the segment *owns* are cached. It stays exact at block granularity the way
vLLM's prefix cache is:

* Blocks are aligned on absolute token positions from the start of the prompt (block ``b``
  holds tokens ``[16b, 16b+16)``). A block belongs to the segment in which it *ends*, because
  its hash (vLLM's chained block hash) depends on that segment's content. So segment ``s``
  owns ``end//16 - start//16`` blocks, possibly zero for a short segment inside one block.
* Only full blocks are cached and reusable; a prompt's partial last block is private to the
  running request (the engine counts it separately).
* What a node holds for a path is always a contiguous, block-aligned prefix from the root:
  a segment has cached blocks only when every ancestor is fully cached.
* Evictable entries are unpinned leaves (segments with cached blocks and no present child);
  eviction removes blocks from the leaf's tail, exactly as vLLM frees a request's blocks tail
  first. When a leaf empties, its parent may become a leaf.

Pins are reference counts held by running calls and by tool-retention windows.

The cache also keeps what the metrics need: a per-segment high-water mark (recompute = prefill
of blocks that were cached on this node before and got evicted) and, per segment, runs of
"last touched" times so that the useful share of KV capacity can be integrated exactly
(see :meth:`SegmentKVCache.read`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from nodeagent.workloads.model import ROOT, ContextTree
from plugins.views import CacheEntryView


class TreeIndex:
    """Flat lists of a ContextTree's parents, starts, ends and owned block counts.

    Built once per workload and shared by every node and every policy run; list indexing is
    several times faster than method calls in the engine's inner loops.
    """

    __slots__ = ("tree", "parent", "start", "end", "owned", "owner", "block_size")

    def __init__(self, tree: ContextTree, block_size: int = 16) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        n = len(tree)
        self.tree = tree
        self.block_size = block_size
        self.parent = [tree.parent(s) for s in range(n)]
        self.start = [tree.start_tokens(s) for s in range(n)]
        self.end = [tree.end_tokens(s) for s in range(n)]
        self.owned = [e // block_size - s // block_size
                      for s, e in zip(self.start, self.end, strict=True)]
        self.owner = [tree.owner(s) for s in range(n)]


class SegmentKVCache:
    """One node's KV cache: cached blocks per segment, pins, LRU times, evictable leaves.

    ``capacity_blocks`` is the node's whole KV pool. Blocks that running calls hold privately
    (a partial last block, output that no later prompt reuses) are reserved with
    :meth:`reserve_private` so that capacity is shared exactly as in vLLM's single block pool.
    """

    def __init__(self, index: TreeIndex, capacity_blocks: int) -> None:
        if capacity_blocks < 1:
            raise ValueError(f"capacity_blocks must be >= 1, got {capacity_blocks}")
        self.index = index
        self.bs = index.block_size
        self.capacity_blocks = capacity_blocks
        self.blocks: dict[int, int] = {}
        self.nchild: dict[int, int] = {}
        self.pins: dict[int, int] = {}
        self.last_access: dict[int, float] = {}
        self.hwm: dict[int, int] = {}
        self.leaves: set[int] = set()
        self.tree_blocks = 0
        self.pinned_blocks = 0
        """Cached blocks of pinned segments (held by running calls or retention): the rest of
        ``tree_blocks`` can be evicted."""
        self.private_blocks = 0
        self.owner_blocks: dict[str, int] = {}
        """Cached blocks per owning workflow (shared segments excluded): O(1) cached-context
        size for WorkflowView.cached_tokens and NodeView.cached_workflows."""
        self.evicted_blocks = 0
        # Useful-capacity integration: per segment, runs [n_blocks, mark_time] from the head.
        self._runs: dict[int, list[list[float]]] = {}
        self.useful_block_seconds = 0.0

    # ----------------------------------------------------------------- queries
    @property
    def used_blocks(self) -> int:
        return self.tree_blocks + self.private_blocks

    @property
    def evictable_blocks(self) -> int:
        """Cached blocks no pin holds: all of them can be evicted (a segment's descendants are
        unpinned when it is, since a pin holds a whole path from the root)."""
        return self.tree_blocks - self.pinned_blocks

    @property
    def free_blocks(self) -> int:
        return self.capacity_blocks - self.tree_blocks - self.private_blocks

    def cached_end(self, path: Sequence[int], limit_tokens: int) -> int:
        """Tokens of the path's prefix cached here (block-aligned), at most ``limit_tokens``."""
        return self._contiguous_end(path, limit_tokens, self.blocks)

    def ever_cached_end(self, path: Sequence[int], limit_tokens: int) -> int:
        """Like :meth:`cached_end` but for the high-water mark: how far this path was ever
        cached on this node (contiguously from the root). Recompute = prefill below this."""
        return self._contiguous_end(path, limit_tokens, self.hwm)

    def _contiguous_end(self, path: Sequence[int], limit_tokens: int,
                        counts: dict[int, int]) -> int:
        idx = self.index
        start, end, owned, bs = idx.start, idx.end, idx.owned, self.bs
        last_end = 0
        for seg in path:
            s = start[seg]
            if s >= limit_tokens:
                break
            b = counts.get(seg, 0)
            if b < owned[seg]:
                return min(limit_tokens // bs, s // bs + b) * bs
            last_end = end[seg]
        return min(limit_tokens, last_end) // bs * bs

    def new_blocks_needed(self, path: Sequence[int], from_idx: int, upto_tokens: int) -> int:
        """Blocks :meth:`materialize` would add to hold the path's first ``upto_tokens``."""
        idx = self.index
        start, owned, bs = idx.start, idx.owned, self.bs
        blocks = self.blocks
        need = 0
        for i in range(from_idx, len(path)):
            seg = path[i]
            s = start[seg]
            if s >= upto_tokens:
                break
            target = min(owned[seg], upto_tokens // bs - s // bs)
            if target > 0:
                b = blocks.get(seg, 0)
                if target > b:
                    need += target - b
        return need

    def materialize(self, path: Sequence[int], from_idx: int, upto_tokens: int,
                    now: float) -> tuple[int, int]:
        """Cache the path's full blocks up to ``upto_tokens``; return (blocks added, new
        frontier index). Segments before ``from_idx`` must already be fully cached (the caller
        keeps them pinned). The caller has made room (free_blocks >= blocks added)."""
        idx = self.index
        start, owned, bs, owner = idx.start, idx.owned, self.bs, idx.owner
        blocks, hwm = self.blocks, self.hwm
        added = 0
        i = from_idx
        n = len(path)
        while i < n:
            seg = path[i]
            s = start[seg]
            if s >= upto_tokens:
                break
            o = owned[seg]
            target = min(o, upto_tokens // bs - s // bs)
            b = blocks.get(seg, 0)
            if target > b:
                delta = target - b
                blocks[seg] = target
                added += delta
                if seg in self.pins:
                    self.pinned_blocks += delta
                if target > hwm.get(seg, 0):
                    hwm[seg] = target
                w = owner[seg]
                if w is not None:
                    self.owner_blocks[w] = self.owner_blocks.get(w, 0) + delta
                runs = self._runs.get(seg)
                if runs is None:
                    self._runs[seg] = [[float(delta), now]]
                else:
                    runs.append([float(delta), now])
                if b == 0 and self.nchild.get(seg, 0) == 0:
                    self._became_present(seg)
                self._update_leaf(seg)
            if target < o:
                break
            i += 1
        self.tree_blocks += added
        return added, i

    def reserve_private(self, n: int) -> None:
        """Take ``n`` blocks (negative: give back) for a running call's private KV."""
        self.private_blocks += n

    # ----------------------------------------------------------------- pins / access
    def pin(self, path: Sequence[int]) -> None:
        pins, blocks = self.pins, self.blocks
        discard = self.leaves.discard
        for seg in path:
            c = pins.get(seg, 0)
            if not c:
                self.pinned_blocks += blocks.get(seg, 0)
            pins[seg] = c + 1
            discard(seg)

    def unpin(self, path: Sequence[int]) -> None:
        pins, blocks, nchild, leaves = self.pins, self.blocks, self.nchild, self.leaves
        for seg in path:
            c = pins[seg] - 1
            if c:
                pins[seg] = c
            else:
                del pins[seg]
                b = blocks.get(seg, 0)
                self.pinned_blocks -= b
                if b > 0 and not nchild.get(seg, 0):
                    leaves.add(seg)

    def touch(self, path: Sequence[int], upto_tokens: int, now: float) -> None:
        """Record an access (LRU time) for the path's segments below ``upto_tokens``."""
        start, la = self.index.start, self.last_access
        for seg in path:
            if start[seg] >= upto_tokens:
                break
            la[seg] = now

    def read(self, path: Sequence[int], upto_tokens: int, now: float) -> None:
        """A call that ran until ``now`` read the path's cached blocks below ``upto_tokens``.

        Integrates useful KV occupancy exactly: every cached block counts as useful from the
        later of its insertion and its previous read up to this read; blocks that are never
        read again after their last use (or are evicted first) count as waste.
        """
        idx = self.index
        start, bs = idx.start, self.bs
        runs_by_seg = self._runs
        useful = 0.0
        for seg in path:
            s = start[seg]
            if s >= upto_tokens:
                break
            runs = runs_by_seg.get(seg)
            if not runs:
                continue
            k = min(self.blocks.get(seg, 0), upto_tokens // bs - s // bs)
            if k <= 0:
                continue
            left = float(k)
            head: list[list[float]] = [[float(k), now]]
            j = 0
            while j < len(runs) and left > 0:
                n, mark = runs[j]
                take = min(n, left)
                useful += take * (now - mark)
                left -= take
                if take < n:
                    head.append([n - take, mark])
                j += 1
            runs[:j] = head
        self.useful_block_seconds += useful

    # ----------------------------------------------------------------- eviction
    def candidates(self) -> list[int]:
        """Evictable entries: unpinned leaf segments with cached blocks."""
        return list(self.leaves)

    def evict(self, seg: int, max_blocks: int) -> int:
        """Remove up to ``max_blocks`` blocks from the tail of leaf ``seg``; return removed."""
        if seg not in self.leaves:
            return 0
        b = self.blocks[seg]
        take = min(b, max_blocks)
        if take <= 0:
            return 0
        nb = b - take
        self.tree_blocks -= take
        self.evicted_blocks += take
        w = self.index.owner[seg]
        if w is not None:
            left = self.owner_blocks[w] - take
            if left:
                self.owner_blocks[w] = left
            else:
                del self.owner_blocks[w]
        runs = self._runs.get(seg)
        if runs:
            drop = float(take)
            while runs and drop > 0:
                if runs[-1][0] <= drop:
                    drop -= runs[-1][0]
                    runs.pop()
                else:
                    runs[-1][0] -= drop
                    drop = 0.0
        if nb:
            self.blocks[seg] = nb
        else:
            del self.blocks[seg]
            self._runs.pop(seg, None)
            self.leaves.discard(seg)
            if self.nchild.get(seg, 0) == 0:
                self._became_absent(seg)
        return take

    def evict_until(self, need_free: int, order_fn: Callable[[list[int]], list[int]]) -> bool:
        """Evict tail blocks of the entries ``order_fn(candidates)`` ranks first until
        ``free_blocks >= need_free``; return whether there is room.

        When an entry is emptied and its parent becomes an evictable leaf of the *same*
        workflow, eviction continues into the parent at the same rank, as vLLM frees a
        request's chain tail first: the parent was touched by the same calls (same LRU time)
        and is next needed by the same call (same next use), so every policy would rank it
        there. A shared parent (owner None) or another workflow's is not followed; it becomes a
        candidate of the next round, when the policy is asked again.
        """
        owner = self.index.owner
        parent = self.index.parent
        while self.free_blocks < need_free:
            cands = self.candidates()
            if not cands:
                return False
            order = order_fn(cands)
            progressed = False
            for seg in order:
                short = need_free - self.free_blocks
                if short <= 0:
                    break
                while short > 0 and seg in self.leaves:
                    removed = self.evict(seg, short)
                    if not removed:
                        break
                    progressed = True
                    short -= removed
                    if seg in self.blocks:
                        break
                    w = owner[seg]
                    p = parent[seg]
                    if w is None or p == ROOT or owner[p] != w or p not in self.leaves:
                        break
                    seg = p
            if not progressed:
                return False
        return True

    # ----------------------------------------------------------------- internals
    def _update_leaf(self, seg: int) -> None:
        if (self.blocks.get(seg, 0) > 0 and self.nchild.get(seg, 0) == 0
                and seg not in self.pins):
            self.leaves.add(seg)
        else:
            self.leaves.discard(seg)

    def _became_present(self, seg: int) -> None:
        parent, nchild, blocks = self.index.parent, self.nchild, self.blocks
        p = parent[seg]
        while p != ROOT:
            c = nchild.get(p, 0)
            nchild[p] = c + 1
            self.leaves.discard(p)
            if c > 0 or blocks.get(p, 0) > 0:
                break
            p = parent[p]

    def _became_absent(self, seg: int) -> None:
        parent, nchild, blocks = self.index.parent, self.nchild, self.blocks
        p = parent[seg]
        while p != ROOT:
            c = nchild[p] - 1
            if c:
                nchild[p] = c
                break
            del nchild[p]
            if blocks.get(p, 0) > 0:
                self._update_leaf(p)
                break
            p = parent[p]

    def check_invariants(self) -> None:
        """Assert the structural invariants (tests call this after random operations)."""
        idx = self.index
        total = 0
        for seg, b in self.blocks.items():
            assert 0 < b <= idx.owned[seg], (seg, b)
            total += b
            p = idx.parent[seg]
            while p != ROOT:
                assert self.blocks.get(p, 0) == idx.owned[p], ("gap above", seg, p)
                p = idx.parent[p]
        assert total == self.tree_blocks, (total, self.tree_blocks)
        pinned = sum(self.blocks.get(seg, 0) for seg in self.pins)
        assert pinned == self.pinned_blocks, (pinned, self.pinned_blocks)
        for seg in self.leaves:
            assert self.blocks.get(seg, 0) > 0 and self.nchild.get(seg, 0) == 0
            assert seg not in self.pins
        for seg, b in self.blocks.items():
            if self.nchild.get(seg, 0) == 0 and seg not in self.pins:
                assert seg in self.leaves, ("missing leaf", seg, b)
        assert self.used_blocks <= self.capacity_blocks, "over capacity"


def cache_entry_views(
    cache: SegmentKVCache,
    segs: Sequence[int],
    node_id: str,
    tenant_of: Callable[[str], str | None],
    next_use: Callable[[int, str | None], float | None] | None = None,
) -> list[CacheEntryView]:
    """The eviction policy's view of cached segments ``segs`` of one node.

    ``tenant_of`` names an owning workflow's tenant; ``next_use`` (an oracle, simulator only)
    says when a segment is read again.
    """
    index, bs = cache.index, cache.bs
    start, owner = index.start, index.owner
    blocks, last_access = cache.blocks, cache.last_access
    views = []
    for s in segs:
        b = blocks[s]
        w = owner[s]
        views.append(CacheEntryView(
            entry_id=s, workflow_id=w, tenant=None if w is None else tenant_of(w),
            tokens=b * bs, blocks=b, depth_tokens=start[s], last_access_s=last_access.get(s, 0.0),
            pinned=False, next_use_s=next_use(s, w) if next_use is not None else None,
            node_id=node_id))
    return views

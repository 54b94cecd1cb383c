"""Eviction order of vLLM's prefix cache from the active eviction policy.

vLLM evicts from the head of its free-block queue: cached blocks are appended when freed, a
request's blocks in reverse (chain tail first), so the queue is LRU. There is no eviction hook,
but the queue is a linked list with O(1) ``remove`` and a ``prepend_n``: SAGA re-orders the
evictable head of the queue into the policy's order before a step that may evict.

Entries. The policies rank :class:`~plugins.views.CacheEntryView` objects, not blocks.
:class:`BlockProvenance` remembers, for each freed block, which free event ("stamp") released it,
for which workflow, at which position of the request's block table and when; an entry is the
set of free-queue blocks of one stamp (split into the part only this workflow used and the part
several workflows shared, which has no owner). Blocks stay in queue order inside an entry
(tail first, as vLLM freed them). ``last_access_s`` is the free time on a strictly increasing
clock and ``entry_id`` the queue position, so ``lru`` reproduces vLLM's own order exactly
(tested against the real ``BlockPool``).

Work per step is bounded: nothing happens unless blocks were freed since the last reordering
(``dirty``) and fewer than ``margin`` never-cached blocks sit ahead of the first cached block
(so this step cannot evict anything), and one reordering looks at most at ``window`` cached
blocks from the head. Approximation: candidates are free-event entries, not strictly the leaves
of a prefix tree; an entry may be the parent of another entry's blocks, as in vLLM's own LRU.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vllm.v1.core.block_pool import BlockPool
from vllm.v1.core.kv_cache_utils import KVCacheBlock

from plugins.policyset import PolicySet
from plugins.views import CacheEntryView, SchedulingContext


@dataclass(slots=True)
class BlockRecord:
    """Who freed a block last, and what it held then."""

    stamp: int
    workflow_id: str | None
    position: int
    block_hash: object
    time_s: float
    shared: bool
    counted: bool = False
    """Counted in its workflow's private cached blocks (:attr:`BlockProvenance.private`)."""


class BlockProvenance:
    """Free events of blocks, keyed by block id (bounded by the pool size), and per workflow
    the blocks its calls freed that no other workflow used and that still hold that content
    (``private``: ``WorkflowView.cached_tokens`` / block size, kept exact at every free and
    eviction; :func:`~nodeagent.vllm_hooks.occupancy.private_cached_blocks` recounts it)."""

    def __init__(self) -> None:
        self.records: dict[int, BlockRecord] = {}
        self.private: dict[str, int] = {}
        self._stamps = itertools.count(1)

    def record_free(
        self, groups: Sequence[Sequence[KVCacheBlock]], workflow_id: str | None, time_s: float
    ) -> None:
        """Remember a request's (or a released pin's) blocks, in block-table order per group."""
        stamp = next(self._stamps)
        records = self.records
        for blocks in groups:
            for position, block in enumerate(blocks):
                if block.is_null:
                    continue
                block_hash = block.block_hash
                previous = records.get(block.block_id)
                shared = (
                    previous is not None
                    and block_hash is not None
                    and previous.block_hash == block_hash
                    and (previous.shared or previous.workflow_id != workflow_id)
                )
                if previous is not None and previous.counted:
                    self._uncount(previous)
                record = BlockRecord(stamp, workflow_id, position, block_hash, time_s, shared)
                if workflow_id is not None and block_hash is not None and not shared:
                    record.counted = True
                    self.private[workflow_id] = self.private.get(workflow_id, 0) + 1
                records[block.block_id] = record

    def evicted(self, block_id: int) -> None:
        """The pool dropped the block's cached content (it no longer counts as anyone's)."""
        record = self.records.get(block_id)
        if record is not None and record.counted:
            self._uncount(record)

    def _uncount(self, record: BlockRecord) -> None:
        record.counted = False
        workflow_id = record.workflow_id
        assert workflow_id is not None
        left = self.private[workflow_id] - 1
        if left:
            self.private[workflow_id] = left
        else:
            del self.private[workflow_id]

    def clear(self) -> None:
        self.records.clear()
        self.private.clear()


@dataclass(slots=True)
class _Entry:
    workflow_id: str | None
    time_s: float
    min_position: int
    blocks: list[KVCacheBlock]


class FreeQueueReorderer:
    """Puts the evictable head of a block pool's free queue into the eviction policy's order."""

    def __init__(
        self,
        block_pool: BlockPool,
        provenance: BlockProvenance,
        block_size: int,
        window: int,
        tenant_of: Callable[[str], str | None],
    ) -> None:
        self.block_pool = block_pool
        self.provenance = provenance
        self.block_size = block_size
        self.window = window
        self.tenant_of = tenant_of
        self.dirty = False
        self.evaluations = 0
        self.reorders = 0
        self.moves = 0

    def mark_dirty(self) -> None:
        self.dirty = True

    def maybe_reorder(self, policy_set: PolicySet, ctx: SchedulingContext, margin: int) -> bool:
        """Reorder if blocks were freed since last time and this step may evict; True if done."""
        if not self.dirty or not self.block_pool.enable_caching:
            return False
        queue = self.block_pool.free_block_queue
        tail = queue.fake_free_list_tail
        block = queue.fake_free_list_head.next_free_block
        uncached: list[KVCacheBlock] = []
        while block is not None and block is not tail and block.block_hash is None:
            if len(uncached) >= margin:
                return False  # enough never-cached blocks: nothing can be evicted this step
            uncached.append(block)
            block = block.next_free_block
        window: list[KVCacheBlock] = []
        while block is not None and block is not tail and len(window) < self.window:
            if block.block_hash is None:
                uncached.append(block)
            else:
                window.append(block)
            block = block.next_free_block
        self.dirty = False
        if not window:
            return False
        entries, views = self._entries(window, ctx.now_s)
        order = policy_set.eviction_order(ctx, views)
        self.evaluations += 1
        reordered = [b for entry_id in order for b in entries[entry_id].blocks]
        if all(a is b for a, b in zip(reordered, window, strict=True)):
            return False
        for b in uncached:
            queue.remove(b)
        for b in window:
            queue.remove(b)
        queue.prepend_n(uncached + reordered)
        self.reorders += 1
        self.moves += len(window)
        return True

    def _entries(
        self, window: Sequence[KVCacheBlock], now_s: float
    ) -> tuple[list[_Entry], list[CacheEntryView]]:
        """Group the window's blocks into entries (stamp x shared), in queue order."""
        records = self.provenance.records
        entries: list[_Entry] = []
        index: dict[tuple[int, bool], int] = {}
        last_time = 0.0
        unknown_run: int | None = None
        for block in window:
            record = records.get(block.block_id)
            if record is None or record.block_hash != block.block_hash:
                # Freed by a path SAGA does not see (e.g. sliding-window trimming): its own entry,
                # as old as what precedes it in the queue, so LRU keeps vLLM's order.
                if unknown_run is None:
                    unknown_run = len(entries)
                    entries.append(_Entry(None, last_time, 0, []))
                entries[unknown_run].blocks.append(block)
                continue
            unknown_run = None
            key = (record.stamp, record.shared)
            i = index.get(key)
            if i is None:
                i = index[key] = len(entries)
                owner = None if record.shared else record.workflow_id
                entries.append(_Entry(owner, record.time_s, record.position, []))
            entry = entries[i]
            entry.blocks.append(block)
            entry.min_position = min(entry.min_position, record.position)
            last_time = max(last_time, record.time_s)
        bs = self.block_size
        views = [
            CacheEntryView(
                entry_id=i,
                workflow_id=e.workflow_id,
                tenant=self.tenant_of(e.workflow_id) if e.workflow_id is not None else None,
                tokens=len(e.blocks) * bs,
                blocks=len(e.blocks),
                depth_tokens=e.min_position * bs,
                last_access_s=e.time_s,
            )
            for i, e in enumerate(entries)
        ]
        return entries, views

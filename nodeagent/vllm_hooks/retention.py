"""The mechanics of retention on vLLM's block pool: how a workflow's KV blocks are held while its
agent runs a tool. *When* to pin and unpin is the shared host layer's
(:class:`nodeagent.host.retention.Retention`: pin at tool start for the eviction policy's time,
release once the next call is admitted, at the deadline or at the workflow's end);
:class:`RetentionPins` is its :class:`~nodeagent.host.retention.Pinner` here.

When a call ends its blocks return to vLLM's free queue: still cached, but the first to go under
pressure. A pin takes them back: :meth:`BlockPool.touch` takes them out of the free queue and
adds a reference, exactly as a request that hits the prefix cache does, so vLLM's own accounting
keeps them. Unpinning frees them (``free_blocks``, tail first). Blocks a pin returns unused
rejoin the LRU as of the call's end (the tool time is not a use): their provenance keeps that
time and the eviction reordering places them accordingly (within its window). Only blocks that
still hold the content they had when the call ended are pinned (a block evicted in between is
lost, as in vLLM).

Pins never hold more than ``max_pinned_blocks``: a new pin first releases the oldest pins (and
tells the host layer, ``on_dropped``), and pins only the head of a chain that does not fit (a
prefix is useful without its tail, not the other way round).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vllm.v1.core.block_pool import BlockPool
from vllm.v1.core.kv_cache_utils import KVCacheBlock

FreedHook = Callable[[str, Sequence[Sequence[KVCacheBlock]], float], None]
"""Called with (workflow id, blocks per group, time the call freed them) when a pin's blocks go
back to the free queue."""
DroppedHook = Callable[[str], None]
"""Called with the workflow whose pin was released to make room for a newer one."""


@dataclass(slots=True)
class Pin:
    workflow_id: str
    groups: list[list[KVCacheBlock]]
    pinned_s: float
    freed_s: float

    @property
    def num_blocks(self) -> int:
        return sum(len(g) for g in self.groups)


@dataclass(slots=True)
class _Remembered:
    groups: list[list[tuple[KVCacheBlock, object]]]
    freed_s: float


class RetentionPins:
    """Pinned blocks per workflow, and the last freed block table of each tagged workflow."""

    def __init__(self, block_pool: BlockPool, max_pinned_blocks: int, on_freed: FreedHook,
                 on_dropped: DroppedHook | None = None):
        self.block_pool = block_pool
        self.max_pinned_blocks = max_pinned_blocks
        self.on_freed = on_freed
        self.on_dropped = on_dropped or (lambda workflow_id: None)
        self.pins: dict[str, Pin] = {}
        self._last_freed: dict[str, _Remembered] = {}
        self.pinned_blocks = 0
        self.pinned_total = 0
        self.released_total = 0

    def remember(
        self,
        workflow_id: str,
        groups: Sequence[Sequence[KVCacheBlock]],
        freed_s: float,
    ) -> None:
        """A call of the workflow is freeing these blocks (block-table order per group)."""
        self._last_freed[workflow_id] = _Remembered(
            [[(b, b.block_hash) for b in blocks if not b.is_null] for blocks in groups],
            freed_s,
        )

    def forget(self, workflow_id: str) -> None:
        self._last_freed.pop(workflow_id, None)
        self.release(workflow_id)

    def pin(self, workflow_id: str, now_s: float) -> int:
        """Pin what is left of the workflow's last call; returns the number of blocks pinned."""
        remembered = self._last_freed.get(workflow_id)
        if remembered is None:
            return 0
        self.release(workflow_id)
        alive = [
            [b for b, h in group if h is not None and b.block_hash == h]
            for group in remembered.groups
        ]
        wanted = sum(len(g) for g in alive)
        while self.pins and self.pinned_blocks + wanted > self.max_pinned_blocks:
            oldest = min(self.pins.values(), key=lambda p: p.pinned_s)
            self.release(oldest.workflow_id)
            self.on_dropped(oldest.workflow_id)
        room = self.max_pinned_blocks - self.pinned_blocks
        if wanted > room:  # keep the head of each chain (a prefix is useful without its tail)
            share = room // max(len(alive), 1)
            alive = [g[:share] for g in alive]
        count = sum(len(g) for g in alive)
        if count == 0:
            return 0
        for group in alive:
            self.block_pool.touch(group)
        self.pins[workflow_id] = Pin(workflow_id, alive, now_s, remembered.freed_s)
        self.pinned_blocks += count
        self.pinned_total += count
        return count

    def release(self, workflow_id: str) -> int:
        pin = self.pins.pop(workflow_id, None)
        if pin is None:
            return 0
        for group in pin.groups:
            self.block_pool.free_blocks(reversed(group))
        count = pin.num_blocks
        self.pinned_blocks -= count
        self.released_total += count
        self.on_freed(workflow_id, pin.groups, pin.freed_s)
        return count

    def unpin(self, workflow_id: str, now_s: float) -> int:
        return self.release(workflow_id)

    def release_all(self) -> int:
        return sum(self.release(w) for w in list(self.pins))

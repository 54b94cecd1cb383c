"""Retention's mechanics on the simulated engine's segment cache, with vLLM's cap.

The shared host layer (:class:`nodeagent.host.retention.Retention`) decides when a workflow's
blocks are held during a tool call; :class:`SegmentPins` is its
:class:`~nodeagent.host.retention.Pinner` on a :class:`~nodeagent.sim.kvcache.SegmentKVCache`,
for the bench cluster and the live simulated node alike. It holds pins as SagaScheduler's
``RetentionPins`` holds them on vLLM's block pool (``nodeagent/vllm_hooks/retention.py``), so
the simulator retains what a vLLM node would: pins never hold more than ``max_pinned_blocks``
(``max_pinned_fraction`` of the pool, 0.5 by default on both); a new pin first releases the
oldest pins (and tells the host layer, ``on_dropped``), and pins only the head of a path that
still does not fit (a prefix is useful without its tail). Only what is still cached is held.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from nodeagent.sim.kvcache import SegmentKVCache

DEFAULT_MAX_PINNED_FRACTION = 0.5
"""SagaSchedulerConfig.max_pinned_fraction's default (``nodeagent/vllm_hooks/config.py``)."""


class SegmentPins:
    """Pinned write paths per workflow on one segment cache."""

    def __init__(self, cache: SegmentKVCache, last_path: Callable[[str], Sequence[int]],
                 poke: Callable[[float], None], on_dropped: Callable[[str], None],
                 max_pinned_fraction: float = DEFAULT_MAX_PINNED_FRACTION) -> None:
        self.cache = cache
        self.last_path = last_path
        self.poke = poke
        self.on_dropped = on_dropped
        self.max_pinned_blocks = int(max_pinned_fraction * cache.capacity_blocks)
        self.pinned_blocks = 0
        """Blocks retention pins hold (counted per pin, as vLLM counts its pins' references;
        running calls' own pins on their paths are not retention's)."""
        self._pinned: dict[str, tuple[Sequence[int], float, int]] = {}

    def _cached_head(self, path: Sequence[int], room: int) -> tuple[Sequence[int], int]:
        """The longest head of ``path`` whose cached blocks fit ``room`` (and stay contiguous
        from the root), with its block count."""
        blocks, owned = self.cache.blocks, self.cache.index.owned
        total = 0
        for k, seg in enumerate(path):
            n = blocks.get(seg, 0)
            if total + n > room or (n == 0 and owned[seg] > 0):
                return path[:k], total
            total += n
            if n < owned[seg]:  # partly cached: nothing further down the path is
                return path[:k + 1], total
        return path, total

    def pin(self, workflow_id: str, now_s: float) -> int:
        path = self.last_path(workflow_id)
        self.unpin(workflow_id, now_s)
        head, wanted = self._cached_head(path, self.cache.capacity_blocks)
        if wanted == 0:
            return 0
        while self._pinned and self.pinned_blocks + wanted > self.max_pinned_blocks:
            oldest = min(self._pinned, key=lambda w: self._pinned[w][1])
            self.unpin(oldest, now_s)
            self.on_dropped(oldest)
        room = self.max_pinned_blocks - self.pinned_blocks
        if wanted > room:
            head, wanted = self._cached_head(head, room)
            if wanted == 0:
                return 0
        self.cache.pin(head)
        self._pinned[workflow_id] = (head, now_s, wanted)
        self.pinned_blocks += wanted
        return wanted

    def held_blocks(self, workflow_id: str) -> int:
        """Blocks the workflow's pin holds (0: none)."""
        held = self._pinned.get(workflow_id)
        return held[2] if held is not None else 0

    def unpin(self, workflow_id: str, now_s: float) -> int:
        held = self._pinned.pop(workflow_id, None)
        if held is None:
            return 0
        head, _since, blocks = held
        self.cache.unpin(head)
        self.pinned_blocks -= blocks
        self.poke(now_s)
        return blocks

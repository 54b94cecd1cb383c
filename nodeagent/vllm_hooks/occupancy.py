"""What vLLM's block pool holds, in the contract's terms: free blocks that hold nothing, and the
private cached context of each workflow.

vLLM counts every block in its free queue as free, cached prefixes included; the contract's
``NodeView.kv_free_tokens`` is KV a new call can take *without evicting anything*. The free queue
keeps never-cached blocks at its head (``free_blocks`` prepends them) and cached ones behind, so
the evictable-cached share is counted as blocks enter and leave the queue:
:class:`CachedFreeCounter` wraps the pool instance's ``free_blocks``, ``touch``,
``get_new_blocks`` (a popped cached block is evicted), ``evict_blocks`` and
``reset_prefix_cache``, and every ``RESYNC_STEPS`` steps recounts the queue exactly (the recount
is O(pool); the drift it corrects is reported as ``drift_total``).

``WorkflowView.cached_tokens`` comes from the block provenance (:mod:`.eviction`), kept exact
at every free and eviction: blocks a workflow's calls freed, that no other workflow also used,
and that still hold the content they held then; ``private_cached_blocks`` recounts the same from
scratch (tests check the two agree).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from nodeagent.vllm_hooks.eviction import BlockProvenance

RESYNC_STEPS = 256


class CachedFreeCounter:
    """Blocks in the free queue that hold a cached prefix (evictable), kept exact.

    ``on_evicted(block_id)`` hears of every block whose cached content the pool drops (popped
    from the free queue for a new allocation, or evicted by id), so per-workflow counts built on
    the block provenance stay exact too."""

    def __init__(self, pool: Any, on_evicted: Callable[[int], None] | None = None) -> None:
        self.pool = pool
        self.on_evicted = on_evicted
        self.count = self.recount()
        self.drift_total = 0
        self._steps = 0
        self._wrap(pool)

    def recount(self) -> int:
        queue = self.pool.free_block_queue
        tail = queue.fake_free_list_tail
        block = queue.fake_free_list_head.next_free_block
        n = 0
        while block is not None and block is not tail:
            if block.block_hash is not None:
                n += 1
            block = block.next_free_block
        return n

    @property
    def uncached_free_blocks(self) -> int:
        return max(self.pool.get_num_free_blocks() - self.count, 0)

    def step(self) -> None:
        self._steps += 1
        if self._steps % RESYNC_STEPS == 0:
            exact = self.recount()
            self.drift_total += abs(exact - self.count)
            self.count = exact

    def _wrap(self, pool: Any) -> None:
        free_blocks, touch = pool.free_blocks, pool.touch
        get_new_blocks, reset = pool.get_new_blocks, pool.reset_prefix_cache
        evict_blocks = getattr(pool, "evict_blocks", None)

        def counted_free(ordered: Iterable[Any]) -> None:
            blocks = list(ordered)
            self.count += sum(1 for b in blocks if not b.is_null and b.ref_cnt == 1
                              and b.block_hash is not None and (b.pool is None or b.pool is pool))
            free_blocks(blocks)

        def counted_touch(blocks: Sequence[Any]) -> None:
            self.count -= sum(1 for b in blocks if not b.is_null and b.ref_cnt == 0
                              and b.block_hash is not None)
            touch(blocks)

        def counted_new(num_blocks: int) -> list[Any]:
            queue = pool.free_block_queue
            block = queue.fake_free_list_head.next_free_block
            popped_cached: list[int] = []
            for _ in range(min(num_blocks, pool.get_num_free_blocks())):
                if block is None or block is queue.fake_free_list_tail:
                    break
                if block.block_hash is not None:
                    popped_cached.append(block.block_id)
                block = block.next_free_block
            result = get_new_blocks(num_blocks)
            self.count -= len(popped_cached)
            if self.on_evicted is not None:
                for block_id in popped_cached:
                    self.on_evicted(block_id)
            return result  # type: ignore[no-any-return]

        def counted_reset() -> bool:
            done = bool(reset())
            if done:
                self.count = 0
            return done

        pool.free_blocks = counted_free
        pool.touch = counted_touch
        pool.get_new_blocks = counted_new
        pool.reset_prefix_cache = counted_reset
        if evict_blocks is not None:
            def counted_evict(block_ids: set[int]) -> None:
                self.count -= sum(1 for i in block_ids if pool.blocks[i].ref_cnt == 0
                                  and pool.blocks[i].block_hash is not None)
                dropped = [i for i in block_ids if pool.blocks[i].block_hash is not None]
                evict_blocks(block_ids)
                if self.on_evicted is not None:
                    for block_id in dropped:
                        self.on_evicted(block_id)

            pool.evict_blocks = counted_evict


def private_cached_blocks(provenance: BlockProvenance, pool: Any) -> dict[str, int]:
    """Per workflow: blocks its calls freed that no other workflow used and that still hold
    the same content (O(records); computed on demand)."""
    counts: dict[str, int] = {}
    blocks = pool.blocks
    for block_id, record in provenance.records.items():
        if record.workflow_id is None or record.shared or record.block_hash is None:
            continue
        if blocks[block_id].block_hash == record.block_hash:
            counts[record.workflow_id] = counts.get(record.workflow_id, 0) + 1
    return counts

"""With the baseline policies (lru / session-affinity / fcfs) SagaScheduler *is* vLLM.

Stock vLLM and SagaScheduler run the same agent workload in lockstep on the real BlockPool: a
system prompt shared by all workflows, growing multi-call contexts, a pool small enough that
every step evicts. After every step both must have scheduled the same tokens, preempted and
finished the same requests, and hold the free-block queue (vLLM's eviction order) in exactly the
same order. SAGA's eviction reordering runs the ``lru`` policy on those steps (it is consulted,
and it reproduces vLLM's order).
"""

from __future__ import annotations

import pytest

from tests.vllm.fakes import VLLM_MISSING_REASON

pytest.importorskip("vllm", reason=VLLM_MISSING_REASON)

import random
from pathlib import Path

from vllm.v1.core.sched.async_scheduler import AsyncScheduler

from tests.vllm.harness import FakeClock, make_request, make_scheduler, step, tokens

SYSTEM = tokens(900, 32)


def _free_queue(scheduler) -> list[tuple[int, bool]]:  # type: ignore[no-untyped-def]
    queue = scheduler.kv_cache_manager.block_pool.free_block_queue
    return [(b.block_id, b.block_hash is not None) for b in queue.get_all_free_blocks()]


def _count_evictions(scheduler) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Count the cached blocks vLLM evicts (wraps the pool's eviction of one block)."""
    pool = scheduler.kv_cache_manager.block_pool
    evict = pool._maybe_evict_cached_block
    counter = {"n": 0}

    def counting(block):  # type: ignore[no-untyped-def]
        evicted = evict(block)
        counter["n"] += int(evicted)
        return evicted

    pool._maybe_evict_cached_block = counting
    return counter


@pytest.mark.parametrize("scheduling_policy", ["fcfs", "priority"])
def test_baseline_policies_reproduce_vllm_step_by_step(
    llama_dir: Path, clock: FakeClock, scheduling_policy: str
) -> None:
    kwargs = dict(
        num_blocks=24,
        max_num_seqs=4,
        max_num_batched_tokens=96,
        scheduling_policy=scheduling_policy,
    )
    stock = make_scheduler(llama_dir, cls=AsyncScheduler, **kwargs)  # type: ignore[arg-type]
    saga = make_scheduler(llama_dir, clock=clock, saga={"policy_set": "baseline"}, **kwargs)  # type: ignore[arg-type]
    evictions = _count_evictions(stock)
    rng = random.Random(7)
    contexts = {f"w{i}": [*SYSTEM, *tokens(100 * i, 24)] for i in range(6)}
    calls_left = dict.fromkeys(contexts, 4)
    in_flight: dict[str, str] = {}
    ready_at = {w: rng.randint(0, 4) for w in contexts}
    arrival = 1_000.0
    compared_steps = 0
    preemptions = 0
    for i in range(400):
        for w in contexts:
            if w not in in_flight and calls_left[w] > 0 and ready_at[w] <= i:
                rid = f"{w}-{calls_left[w]}"
                max_tokens = rng.randint(3, 20)
                arrival += 0.01
                for scheduler in (stock, saga):
                    scheduler.add_request(
                        make_request(
                            rid,
                            contexts[w],
                            workflow=w,
                            max_tokens=max_tokens,
                            arrival_time=arrival,
                        )
                    )
                in_flight[w] = rid
                calls_left[w] -= 1
        if not in_flight and not any(calls_left.values()):
            break
        out_stock, done_stock = step(stock)
        out_saga, done_saga = step(saga, clock=clock, step_s=0.05)
        assert out_saga.num_scheduled_tokens == out_stock.num_scheduled_tokens, i
        assert (out_saga.preempted_req_ids or set()) == (out_stock.preempted_req_ids or set()), i
        assert done_saga == done_stock, i
        preemptions += len(out_stock.preempted_req_ids or ())
        assert _free_queue(saga) == _free_queue(stock), i
        compared_steps += 1
        for rid in done_stock:
            w = rid.rsplit("-", 1)[0]
            del in_flight[w]
            contexts[w] = [*contexts[w], *tokens(300 + i, 40)]
            if calls_left[w]:
                saga.notify_tool_start(w, "bash")  # lru retains nothing: still vLLM
                ready_at[w] = i + rng.randint(1, 5)
            else:
                saga.notify_workflow_end(w)
    assert compared_steps > 20
    assert evictions["n"] >= 10, "the workload must make vLLM evict cached blocks"
    assert preemptions >= 1, "the workload must make vLLM preempt"
    assert stock.get_num_unfinished_requests() == saga.get_num_unfinished_requests() == 0
    assert saga.saga_reorderer.evaluations >= 5
    assert saga.saga_reorderer.reorders == 0
    assert saga.saga_pins.pinned_total == 0

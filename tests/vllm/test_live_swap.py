"""(d) Live policy swaps inside the engine: no request is lost or duplicated.

Agent workflows (several calls each, tool pauses in between, three tenants) run on a small KV
pool that forces preemptions and evictions, while the control channel swaps whole policy sets
and single policies every few steps; one call is aborted. Every call must finish exactly once
(or be the aborted one), and the engine must end empty: no request, no pin, every block free.
"""

from __future__ import annotations

import pytest

from tests.vllm.fakes import VLLM_MISSING_REASON

pytest.importorskip("vllm", reason=VLLM_MISSING_REASON)

import random
from collections import Counter
from pathlib import Path

from tests.vllm.harness import FakeClock, make_request, make_scheduler, step, tokens

SETS = ["baseline", "saga", "continuum", "autellix", "vtc", "lpm", "saga"]
SINGLE = [
    ("fairness", "afs"),
    ("eviction", "ttl"),
    ("admission", "lpm"),
    ("eviction", "aeg"),
]


@pytest.mark.parametrize(("scheduling_policy", "seed"), [("priority", 1), ("fcfs", 2)])
def test_every_call_finishes_exactly_once_across_swaps(
    llama_dir: Path, clock: FakeClock, scheduling_policy: str, seed: int
) -> None:
    rng = random.Random(seed)
    scheduler = make_scheduler(
        llama_dir,
        num_blocks=24,
        max_num_seqs=4,
        max_num_batched_tokens=128,
        scheduling_policy=scheduling_policy,
        clock=clock,
    )
    workflows = {f"w{i}": rng.randint(2, 4) for i in range(8)}  # calls per workflow
    context = {w: tokens(120 * i, 40) for i, w in enumerate(workflows)}
    next_call = dict.fromkeys(workflows, 0)
    ready_at = {w: rng.randint(0, 6) for w in workflows}  # step at which the next call arrives
    in_flight: dict[str, str] = {}  # workflow -> request id
    added: list[str] = []
    finished: Counter[str] = Counter()
    aborted: list[str] = []
    swaps = 0
    preemptions = 0

    for i in range(600):
        for w, n in workflows.items():
            if w not in in_flight and next_call[w] < n and ready_at[w] <= i:
                rid = f"{w}-{next_call[w]}"
                scheduler.add_request(
                    make_request(
                        rid,
                        context[w],
                        workflow=w,
                        tenant=f"t{int(w[1:]) % 3}",
                        max_tokens=rng.randint(4, 40),
                        arrival_time=clock.now,
                    )
                )
                added.append(rid)
                in_flight[w] = rid
                next_call[w] += 1
        if i % 5 == 4:
            scheduler.saga_control("activate_set", {"policy_set": SETS[swaps % len(SETS)]})
            swaps += 1
        if i % 7 == 6:
            kind, name = SINGLE[i % len(SINGLE)]
            scheduler.saga_control("activate", {"kind": kind, "name": name})
        if i == 9 and in_flight:
            victim = sorted(in_flight.values())[0]
            assert [r.request_id for r in scheduler.finish_requests(victim, _aborted())] == [victim]
            aborted.append(victim)
        output, done = step(scheduler, clock=clock, step_s=0.05)
        preemptions += len(output.preempted_req_ids or ())
        finished.update(done)
        for rid in [*done, *aborted]:
            w = rid.rsplit("-", 1)[0]
            if in_flight.get(w) == rid:
                del in_flight[w]
                context[w] = [*context[w], *tokens(500 + i, 24)]  # output + tool result
                if next_call[w] < workflows[w]:
                    scheduler.notify_tool_start(w, rng.choice(["bash", "edit", "search"]))
                    ready_at[w] = i + rng.randint(1, 8)
                else:
                    scheduler.notify_workflow_end(w)
        if not in_flight and all(next_call[w] == n for w, n in workflows.items()):
            break

    assert swaps >= 3
    # The scenario exercises every SAGA path under swaps: preemption, pins, eviction order.
    assert preemptions >= 1
    assert scheduler.saga_pins.pinned_total >= 1
    assert scheduler.saga_reorderer.evaluations >= 1
    assert set(finished) | set(aborted) == set(added)
    assert all(count == 1 for count in finished.values()), finished.most_common(3)
    assert not set(finished) & set(aborted)
    step(scheduler)  # apply the last workflow_end boundaries
    assert not scheduler.has_requests()
    assert not scheduler.requests and not scheduler.running and not scheduler.waiting
    assert scheduler.saga_pins.pinned_blocks == 0
    pool = scheduler.kv_cache_manager.block_pool
    assert pool.get_num_free_blocks() == pool.num_gpu_blocks - 1
    assert scheduler.saga_tracker.workflows == {}


def _aborted():  # type: ignore[no-untyped-def]
    from vllm.v1.request import RequestStatus

    return RequestStatus.FINISHED_ABORTED

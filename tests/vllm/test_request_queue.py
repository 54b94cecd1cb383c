"""SagaRequestQueue behaves as vLLM's own queues until SAGA re-orders it.

vLLM's scheduler code drives the queue (append, prepend of preempted or skipped requests, pops,
removals); any difference from vLLM's deque or heap would change vLLM's behaviour, so random
operation sequences are checked against the real ``FCFSRequestQueue`` / ``PriorityRequestQueue``.
"""

from __future__ import annotations

import pytest

from tests.vllm.fakes import VLLM_MISSING_REASON

pytest.importorskip("vllm", reason=VLLM_MISSING_REASON)

from hypothesis import given, settings
from hypothesis import strategies as st
from vllm.v1.core.sched.request_queue import (
    FCFSRequestQueue,
    PriorityRequestQueue,
    SchedulingPolicy,
)

from nodeagent.vllm_hooks.ordering import SagaRequestQueue
from tests.vllm.harness import ids, make_request

OPS = st.lists(
    st.tuples(
        st.sampled_from(["add", "prepend", "prepend_many", "pop", "remove", "remove_many"]),
        st.integers(0, 5),  # priority of a new request / which queued request to remove
        st.integers(0, 3),  # arrival time of a new request (ties on purpose)
    ),
    max_size=40,
)


def _replay(policy: SchedulingPolicy, ops: list[tuple[str, int, int]]) -> None:
    stock = FCFSRequestQueue() if policy == SchedulingPolicy.FCFS else PriorityRequestQueue()
    saga = SagaRequestQueue(policy, lambda r: r.priority)
    counter = 0

    def new(priority: int, arrival: int):  # type: ignore[no-untyped-def]
        nonlocal counter
        counter += 1
        return make_request(f"r{counter}", [5] * 4, priority=priority, arrival_time=float(arrival))

    for op, a, b in ops:
        if op == "add":
            r = new(a, b)
            stock.add_request(r)
            saga.add_request(r)
        elif op == "prepend":
            r = new(a, b)
            stock.prepend_request(r)
            saga.prepend_request(r)
        elif op == "prepend_many":
            batch = [new(a, b), new(b, a)]
            stock.prepend_requests(batch)
            saga.prepend_requests(batch)
        elif op == "pop" and stock:
            assert saga.pop_request() is stock.pop_request()
        elif op in ("remove", "remove_many") and stock:
            queued = list(stock)
            victims = [queued[a % len(queued)]]
            if op == "remove_many":
                victims.append(queued[b % len(queued)])
                stock.remove_requests(victims)
                saga.remove_requests(victims)
            else:
                stock.remove_request(victims[0])
                saga.remove_request(victims[0])
        assert len(saga) == len(stock)
        assert bool(saga) == bool(stock)
        assert ids(saga) == ids(stock)
        if stock:
            assert saga.peek_request() is stock.peek_request()


@settings(max_examples=60, deadline=None)
@given(OPS)
def test_fcfs_queue_matches_vllm(ops: list[tuple[str, int, int]]) -> None:
    _replay(SchedulingPolicy.FCFS, ops)


@settings(max_examples=60, deadline=None)
@given(OPS)
def test_priority_queue_matches_vllm(ops: list[tuple[str, int, int]]) -> None:
    _replay(SchedulingPolicy.PRIORITY, ops)


def test_reorder_installs_ranks_within_user_priority_bands() -> None:
    queue = SagaRequestQueue(SchedulingPolicy.PRIORITY, lambda r: r.priority)
    a = make_request("a", [5] * 4, priority=1, arrival_time=1.0)
    b = make_request("b", [5] * 4, priority=0, arrival_time=2.0)
    c = make_request("c", [5] * 4, priority=0, arrival_time=3.0)
    for r in (a, b, c):
        queue.add_request(r)
    assert ids(queue) == ["b", "c", "a"]
    queue.reorder({"a": 0, "c": 1, "b": 2})
    # The user's priority stays the primary key; SAGA's ranks order inside a band.
    assert ids(queue) == ["c", "b", "a"]
    late = make_request("d", [5] * 4, priority=0, arrival_time=0.5)
    queue.add_request(late)  # not ranked yet: behind the ranked calls of its band
    assert ids(queue) == ["c", "b", "d", "a"]
    assert queue.pop_request() is c
    assert queue[0] is b


def test_fcfs_reorder_then_prepend_keeps_vllm_front_semantics() -> None:
    queue = SagaRequestQueue(SchedulingPolicy.FCFS, lambda r: r.priority)
    reqs = [make_request(n, [5] * 4) for n in "abc"]
    for r in reqs:
        queue.add_request(r)
    queue.reorder({"c": 0, "a": 1, "b": 2})
    assert ids(queue) == ["c", "a", "b"]
    preempted = make_request("p", [5] * 4)
    queue.prepend_request(preempted)  # a preempted request resumes first, as in vLLM
    assert ids(queue) == ["p", "c", "a", "b"]

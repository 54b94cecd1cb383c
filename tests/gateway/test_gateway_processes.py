"""Gateway processes that die and gateway processes that share a port.

A control plane killed with SIGKILL leaves its calls pending; the next one to start closes them
(interrupted) and the in-flight counts come back to zero. Two gateway processes behind one port
share homes, in-flight counts and quotas exactly."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from controlplane.gateway.routing_state import RedisRoutingState
from controlplane.workflows.models import Call, CallOutcome
from tests.faults import ServedControlPlane, database_url_of_test_db, wait_until
from tests.gateway.conftest import NODE_KEY, tenant_key
from tests.live import NodeProcess

pytestmark = pytest.mark.django_db(transaction=True)
LONG = {"saga_sim": {"output_tokens": 131072}}


def served(redis_url: str, workers: int = 1) -> ServedControlPlane:
    import redis

    RedisRoutingState(redis_url).clear()
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter("saga:tpm:*"):  # tenant ids restart with each test database
        client.delete(key)
    return ServedControlPlane(database_url_of_test_db(), redis_url, NODE_KEY, workers).start()


@pytest.fixture
def nodes_for() -> Iterator[Any]:
    started: list[NodeProcess] = []

    def start(url: str) -> list[NodeProcess]:
        # Slow enough (10 simulated seconds per second) that a long call outlasts the test.
        started.extend(NodeProcess(url, f"gpu-{i}", api_key=NODE_KEY, speed=10.0).start()
                       for i in range(2))
        return started

    yield start
    for node in started:
        node.stop()


def inflight(redis_url: str) -> int:
    state = RedisRoutingState(redis_url)
    return sum(f.calls for f in state.inflight(["gpu-0", "gpu-1"]).values())


def live_gateways(redis_url: str) -> int:
    import redis

    return sum(1 for _ in redis.Redis.from_url(redis_url).scan_iter("saga:gateway:*"))


def open_stream(url: str, key: str, workflow: str, opened: threading.Event,
                release: threading.Event, results: list[int]) -> None:
    with httpx.Client(timeout=60) as client, client.stream(
            "POST", f"{url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}", "X-Saga-Workflow": workflow},
            json={"model": "llama-3-8b", "stream": True, "messages": [
                {"role": "user", "content": workflow}], **LONG}) as response:
        results.append(response.status_code)
        lines = response.iter_lines()  # held: dropping the iterator would close the stream
        if response.status_code == 200:
            next(lines)
        opened.set()
        release.wait(60)


def test_a_killed_control_plane_leaves_nothing_open_after_restart(
        redis_url: str, nodes_for: Any) -> None:
    cp = served(redis_url)
    try:
        nodes_for(cp.url)
        _tenant, key = tenant_key("acme")
        opened, release, results = threading.Event(), threading.Event(), []
        client = threading.Thread(target=open_stream, daemon=True,
                                  args=(cp.url, key, "w1", opened, release, results))
        client.start()
        assert opened.wait(20) and results == [200]
        assert Call.objects.get().outcome == CallOutcome.PENDING
        assert inflight(redis_url) == 1
        cp.kill()
        release.set()
        cp.start()
        closed = wait_until(lambda: Call.objects.get().outcome != CallOutcome.PENDING,
                            "the restarted control plane to close the call", 30)
        print(f"restarted control plane closed the killed one's call after {closed:.1f} s")
        call = Call.objects.get()
        assert call.outcome == CallOutcome.INTERRUPTED and "stopped" in call.error
        assert inflight(redis_url) == 0
    finally:
        cp.stop()


def test_a_control_plane_stopped_cleanly_closes_its_calls_at_once(
        redis_url: str, nodes_for: Any) -> None:
    cp = served(redis_url)
    nodes_for(cp.url)
    _tenant, key = tenant_key("acme")
    opened, release, results = threading.Event(), threading.Event(), []
    threading.Thread(target=open_stream, daemon=True,
                     args=(cp.url, key, "w1", opened, release, results)).start()
    assert opened.wait(20) and results == [200]
    cp.stop()  # SIGTERM: uvicorn's lifespan shutdown runs
    release.set()
    wait_until(lambda: Call.objects.get().outcome != CallOutcome.PENDING, "the call closed", 30)
    assert Call.objects.get().outcome in {CallOutcome.INTERRUPTED, CallOutcome.CANCELLED}
    assert inflight(redis_url) == 0


ROUNDS = 5
"""Rounds of ten concurrent streams at most, until one round is served by both processes."""


def quota_round(url: str, redis_url: str, tenant: str) -> set[str]:
    """Ten streams of a tenant allowed six concurrent workflows: exactly six are admitted,
    across both processes; returns the processes that took them."""
    _tenant, key = tenant_key(tenant, max_concurrent_workflows=6)
    opened = [threading.Event() for _ in range(10)]
    release, results = threading.Event(), []
    threads = [threading.Thread(target=open_stream, daemon=True,
                                args=(url, key, f"{tenant}-w{i}", opened[i], release, results))
               for i in range(10)]
    for thread in threads:
        thread.start()
    assert all(event.wait(30) for event in opened)
    assert sorted(results) == [200] * 6 + [429] * 4  # the quota, exactly, across processes
    assert inflight(redis_url) == 6
    holders = set(Call.objects.filter(workflow__tenant=_tenant)
                  .values_list("gateway", flat=True))
    release.set()
    for thread in threads:
        thread.join(30)
    wait_until(lambda: inflight(redis_url) == 0, "every lease released", 30)
    # The lease goes just before the outcome is written: wait for the records too.
    wait_until(lambda: not Call.objects.filter(outcome=CallOutcome.PENDING).exists(),
               "every call recorded", 30)
    return holders


def test_two_gateway_processes_share_homes_inflight_and_quotas(
        redis_url: str, nodes_for: Any) -> None:
    cp = served(redis_url, workers=2)
    try:
        # The first worker to answer is not the second: wait until both hold a liveness lease
        # (their housekeeping starts with the lifespan), or one may take every connection.
        wait_until(lambda: live_gateways(redis_url) == 2, "both gateway processes up", 60)
        nodes_for(cp.url)
        # Which process accepts a connection is the kernel's choice (both wait on one listening
        # socket), so a round may land on one process only: the quota must be exact in every
        # round, and some round must have had its calls taken by both processes.
        holders: set[str] = set()
        for round_ in range(ROUNDS):
            holders = quota_round(cp.url, redis_url, f"acme{round_}")
            if len(holders) == 2:
                break
        assert len(holders) == 2, holders  # both processes took calls (of one tenant's six)

        # Homes: a workflow's calls, whichever process takes each, go to one node.
        _other, other_key = tenant_key("globex", tokens_per_minute=400)
        # The budget is per minute: a window starting mid-sequence would refill it (and the
        # calls after the first 429 would pass). The sequence takes a few seconds; start it in
        # a window with enough of it left.
        left = 60 - time.time() % 60
        if left < 20:
            time.sleep(left + 0.1)

        def step(i: int) -> int:
            return httpx.post(f"{cp.url}/v1/chat/completions", timeout=30, headers={
                "Authorization": f"Bearer {other_key}", "X-Saga-Workflow": "shared"},
                json={"model": "llama-3-8b", "max_tokens": 10,
                      "messages": [{"role": "user", "content": "x" * 40}]}).status_code

        with ThreadPoolExecutor(max_workers=1) as pool:
            statuses = list(pool.map(step, range(30)))
        served_calls = Call.objects.filter(workflow__external_id="shared",
                                           outcome=CallOutcome.COMPLETED)
        assert len(set(served_calls.values_list("node_id", flat=True))) == 1
        assert list(Call.objects.filter(workflow__external_id="shared").order_by("seq")
                    .values_list("seq", flat=True)) == list(range(served_calls.count()))
        # Tokens per minute: one shared counter; once it is spent, both processes refuse.
        assert 429 in statuses and statuses.index(429) >= 1
        assert all(s == 429 for s in statuses[statuses.index(429):])
        import redis

        window = int(time.time() // 60)
        charged = sum(int(redis.Redis.from_url(redis_url).get(f"saga:tpm:{_other.pk}:{w}") or 0)
                      for w in (window - 1, window))
        recorded = sum(c.prompt_tokens + c.output_tokens for c in served_calls)
        assert charged == recorded

        # At concurrency, both processes at once: each workflow keeps one home and contiguous
        # calls, every token recorded is charged once, and every lease goes.
        third, third_key = tenant_key("initech", tokens_per_minute=10**9)

        def agent(i: int) -> list[int]:
            with httpx.Client(timeout=30) as client:
                return [client.post(f"{cp.url}/v1/chat/completions", headers={
                    "Authorization": f"Bearer {third_key}", "X-Saga-Workflow": f"c{i}"},
                    json={"model": "llama-3-8b", "max_tokens": 3,
                          "messages": [{"role": "user", "content": f"c{i} {n}"}]}).status_code
                        for n in range(6)]

        with ThreadPoolExecutor(max_workers=8) as pool:
            assert all(s == 200 for statuses in pool.map(agent, range(8)) for s in statuses)
        calls = Call.objects.filter(workflow__tenant=third)
        assert calls.filter(outcome=CallOutcome.COMPLETED).count() == 48
        for i in range(8):
            mine = calls.filter(workflow__external_id=f"c{i}")
            assert len(set(mine.values_list("node_id", flat=True))) == 1
            assert sorted(mine.values_list("seq", flat=True)) == list(range(6))
        window = int(time.time() // 60)
        charged = sum(int(redis.Redis.from_url(redis_url).get(f"saga:tpm:{third.pk}:{w}") or 0)
                      for w in (window - 1, window))
        assert charged == sum(c.prompt_tokens + c.output_tokens for c in calls)
        assert inflight(redis_url) == 0
    finally:
        cp.stop()

"""The control connection under faults: a connection held over Redis past its socket timeout,
revocation and rotation that cut a connected node off, drain that survives heartbeats, a second
connection with the same token, and reconnect delays whatever the outage length."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from controlplane.nodes.models import Node, NodeStatus
from nodeagent.agent.control import Backoff, ControlPlaneLink, ControlPlaneRefused
from nodeagent.agent.sim_backend import SimBackend
from tests.live import STOP_GRACE_S, wait_for
from tests.nodeagent.test_control_live import control_plane, make_node  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


def status(name: str) -> str:
    return Node.objects.get(name=name).status


def engine() -> SimBackend:
    return SimBackend("h100-llama3-8b", model_name="m", speed=100.0)


@pytest.fixture
def fast_heartbeats(settings: Any) -> Iterator[None]:
    settings.NODE_HEARTBEAT_INTERVAL_S = 1
    yield


def test_a_connection_outlives_the_redis_socket_timeout(control_plane: str,  # noqa: F811
                                                         settings: Any) -> None:
    """channels_redis blocks 5 s in BZPOPMIN; with redis-py 8's default 5 s socket timeout
    every consumer crashed and reconnected every 5-10 s. One session must last."""
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"].startswith("channels_redis")
    token = make_node("gpu-long")

    async def scenario() -> None:
        channel = ControlPlaneLink(control_plane, token, engine(), backoff=Backoff(0.05, 0.2))
        task = asyncio.create_task(channel.run_forever())
        try:
            await asyncio.wait_for(channel.synced.wait(), 15)
            await asyncio.sleep(12)  # longer than two blocking pops and the socket timeout
            assert channel.sessions == 1 and channel.connected.is_set()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    wait_for(lambda: status("gpu-long") == NodeStatus.DOWN, "the closed session's node down")


@pytest.mark.parametrize("change", ["revoke", "rotate"])
def test_revoking_or_rotating_the_token_cuts_the_connected_node_off(
        control_plane: str, change: str) -> None:  # noqa: F811
    token = make_node("gpu-cut")

    async def scenario() -> None:
        channel = ControlPlaneLink(control_plane, token, engine(), backoff=Backoff(0.05, 0.2))
        task = asyncio.create_task(channel.run_forever())
        await asyncio.wait_for(channel.synced.wait(), 15)
        assert await sync_to_async(status)("gpu-cut") == NodeStatus.UP
        node = await sync_to_async(Node.objects.get)(name="gpu-cut")
        await sync_to_async(node.revoke_token if change == "revoke" else node.rotate_token)()
        # Down (so out of routing) at once, before the connection has even closed.
        assert await sync_to_async(status)("gpu-cut") == NodeStatus.DOWN
        with pytest.raises(ControlPlaneRefused, match="token"):
            await asyncio.wait_for(task, 10)
        assert channel.sessions == 1  # refused for good, not retried

    asyncio.run(scenario())
    assert status("gpu-cut") == NodeStatus.DOWN


def test_drain_survives_heartbeats_and_reconnections(control_plane: str,  # noqa: F811
                                                     fast_heartbeats: None) -> None:
    from controlplane.gateway.directory import ClusterDirectory

    token = make_node("gpu-d")

    async def scenario() -> None:
        channel = ControlPlaneLink(control_plane, token, engine(), backoff=Backoff(0.05, 0.2))
        task = asyncio.create_task(channel.run_forever())
        try:
            await asyncio.wait_for(channel.synced.wait(), 15)
            node = await sync_to_async(Node.objects.get)(name="gpu-d")
            await sync_to_async(node.drain)()
            beats = (await sync_to_async(Node.objects.get)(name="gpu-d")).last_heartbeat_at
            deadline = time.monotonic() + 10
            while (await sync_to_async(Node.objects.get)(name="gpu-d")).last_heartbeat_at \
                    == beats:
                assert time.monotonic() < deadline, "no heartbeat after the drain"
                await asyncio.sleep(0.1)
            assert await sync_to_async(status)("gpu-d") == NodeStatus.DRAINING
            directory = ClusterDirectory()
            await sync_to_async(directory.refresh)(force=True)
            assert directory.node("gpu-d") is None  # no new calls
            await sync_to_async(node.undrain)()
            assert await sync_to_async(status)("gpu-d") == NodeStatus.UP
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())


def test_a_second_connection_replaces_the_first_and_the_node_stays_up(
        control_plane: str, fast_heartbeats: None) -> None:  # noqa: F811
    token = make_node("gpu-twin")

    async def scenario() -> None:
        first = ControlPlaneLink(control_plane, token, engine(), backoff=Backoff(0.05, 0.2))
        first_task = asyncio.create_task(first.run_forever())
        await asyncio.wait_for(first.synced.wait(), 15)
        second = ControlPlaneLink(control_plane, token, engine(), backoff=Backoff(0.05, 0.2))
        second_task = asyncio.create_task(second.run_forever())
        try:
            await asyncio.wait_for(second.synced.wait(), 15)
            with pytest.raises(ControlPlaneRefused, match="another agent"):
                await asyncio.wait_for(first_task, 10)
            await asyncio.sleep(2.5)  # the old connection's close and two heartbeats later
            assert await sync_to_async(status)("gpu-twin") == NodeStatus.UP
            assert second.sessions == 1 and second.connected.is_set()
        finally:
            second_task.cancel()
            await asyncio.gather(second_task, return_exceptions=True)

    asyncio.run(scenario())
    wait_for(lambda: status("gpu-twin") == NodeStatus.DOWN, "the current connection's close")


class FakeClock:
    """Time that advances only when the channel sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


class Refused:
    """A connector that fails until ``ready_at`` on the fake clock, then raises Up."""

    class Up(Exception):
        pass

    def __init__(self, clock: FakeClock, ready_at: float) -> None:
        self.clock = clock
        self.ready_at = ready_at
        self.attempts = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.attempts += 1
        if self.clock.now >= self.ready_at:
            raise Refused.Up
        raise ConnectionRefusedError("connection refused")


@pytest.mark.parametrize("outage_s", [1.0, 5.0, 25.0, 120.0, 3600.0])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reconnect_delay_after_the_control_plane_is_back_is_bounded(
        outage_s: float, seed: int) -> None:
    """Whatever the outage, the first try after the control plane is back comes within 4 s
    (the backoff cap with jitter): the old cap of 30 s left nodes away for up to 36 s."""
    clock = FakeClock()
    connector = Refused(clock, outage_s)
    channel = ControlPlaneLink("http://127.0.0.1:1", "nt_x", engine(), seed=seed,
                             sleep=clock.sleep, connector=connector)
    with pytest.raises(Refused.Up):
        asyncio.run(channel.run_forever())
    assert clock.now - outage_s <= Backoff().max_s * (1 + Backoff().jitter)
    assert connector.attempts <= 3 + outage_s / (Backoff().max_s * (1 - Backoff().jitter))


def test_backoff_grows_then_caps_with_jitter() -> None:
    backoff, rng = Backoff(), random.Random(0)
    delays = [backoff.delay(i, rng) for i in range(12)]
    assert delays[0] < delays[1] < delays[2]
    assert all(0.4 <= d <= 3.6 for d in delays) and max(delays) > 2.4


def test_time_to_resync_after_a_restart_is_short(redis_url: str) -> None:
    """Measured, live: stop the control plane for a while, start it again on the same port,
    and time how long the node takes to be registered and synced again."""
    import threading

    import uvicorn

    from tests.live import free_port

    token = make_node("gpu-back")
    port = free_port()

    def server() -> tuple[uvicorn.Server, threading.Thread]:
        s = uvicorn.Server(uvicorn.Config("controlplane.asgi:application", host="127.0.0.1",
                                          port=port, lifespan="on", log_level="warning",
                                          timeout_graceful_shutdown=STOP_GRACE_S))
        thread = threading.Thread(target=s.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not s.started:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        return s, thread

    first, first_thread = server()

    async def scenario() -> float:
        channel = ControlPlaneLink(f"http://127.0.0.1:{port}", token, engine())
        task = asyncio.create_task(channel.run_forever())
        try:
            await asyncio.wait_for(channel.synced.wait(), 15)
            first.should_exit = True
            await asyncio.to_thread(first_thread.join, 10)
            await asyncio.sleep(8.0)  # the outage
            assert not channel.synced.is_set() or not channel.connected.is_set()
            second, second_thread = await asyncio.to_thread(server)
            ready = time.monotonic()
            try:
                while not (channel.connected.is_set() and channel.synced.is_set()
                           and channel.sessions == 2):
                    await asyncio.sleep(0.02)
                return time.monotonic() - ready
            finally:
                second.should_exit = True
                await asyncio.to_thread(second_thread.join, 10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    resync_s = asyncio.run(scenario())
    print(f"node re-synced {resync_s:.2f} s after the control plane was ready again")
    assert resync_s < 5.0


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.7", "gpu-host.internal", "::"])
def test_a_node_without_an_api_key_refuses_to_listen_beyond_loopback(
        host: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from controlplane.cli import main

    monkeypatch.delenv("SAGA_NODE_API_KEY", raising=False)
    code = main(["node", "--control-plane", "http://127.0.0.1:8000", "--token", "nt_x",
                 "--engine", "sim", "--host", host])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--api-key (or SAGA_NODE_API_KEY) is required" in err


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("localhost", True),
                                                ("::1", True), ("[::1]", True),
                                                ("0.0.0.0", False), ("192.168.1.2", False)])
def test_loopback_hosts(host: str, loopback: bool) -> None:
    from nodeagent.agent.cli import is_loopback

    assert is_loopback(host) is loopback

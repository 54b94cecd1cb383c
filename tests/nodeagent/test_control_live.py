"""Node agents against the real control plane (uvicorn + Channels + Redis + PostgreSQL):
registration, policy sync, a live swap reaching every node, refusals and revoked tokens."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import uvicorn
from asgiref.sync import sync_to_async

from controlplane.nodes.models import Node, NodePolicyState, NodeStatus, PolicyApplyStatus
from controlplane.policies.models import Policy
from controlplane.policies.services import activate_policy
from controlplane.tenants.models import Tenant
from controlplane.workflows.models import AgentTemplate
from nodeagent.agent.control import Backoff, ControlPlaneLink, ControlPlaneRefused
from nodeagent.agent.sim_backend import SimBackend
from tests.live import STOP_GRACE_S

pytestmark = pytest.mark.django_db(transaction=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def control_plane(redis_url: str) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config("controlplane.asgi:application", host="127.0.0.1",
                                           port=port, lifespan="off", log_level="warning",
                                           timeout_graceful_shutdown=STOP_GRACE_S))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "control plane did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def make_node(name: str) -> str:
    node = Node(name=name)
    token = node.assign_new_token()
    node.save()
    return token


def activate(kind: str, name: str, params: dict | None = None) -> int:
    policy = Policy(kind=kind, plugin_name=name, params=params or {})
    policy.full_clean()
    policy.save()
    return activate_policy(policy, actor="operator").pk


async def until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def node_states() -> dict[tuple[str, str], tuple[str, int | None, str]]:
    return {(s.node.name, s.kind): (s.status, s.activation_id, s.error)
            for s in NodePolicyState.objects.select_related("node")}


def test_a_swap_reaches_every_node_and_is_acknowledged(control_plane: str) -> None:
    Tenant.objects.create(slug="acme", name="Acme", weight=2.0)
    from tests.controlplane.test_node_consumer import _learned_graph

    AgentTemplate.objects.create(name="swe-agent", aeg_stats=_learned_graph("swe-agent"))
    first = activate("eviction", "lru")
    tokens = {name: make_node(name) for name in ("gpu-a", "gpu-b")}

    async def scenario() -> None:
        engines = {n: SimBackend("h100-llama3-8b", model_name="m", node_id=n, speed=100.0)
                   for n in tokens}
        channels = {n: ControlPlaneLink(control_plane, tokens[n], engines[n]) for n in tokens}
        tasks = [asyncio.create_task(c.run_forever()) for c in channels.values()]

        async def acked(activation: int, status: str) -> None:
            """Wait until the control plane has recorded both nodes' acks for an activation."""
            def check() -> bool:
                states = node_states()
                return all(states.get((n, "eviction"), ("", None, ""))[:2]
                           == (status, activation) for n in tokens)
            deadline = time.monotonic() + 15
            while not await sync_to_async(check)():
                assert time.monotonic() < deadline, f"acks for {activation}"
                await asyncio.sleep(0.05)

        try:
            for name, channel in channels.items():
                await asyncio.wait_for(channel.synced.wait(), 15)
                assert engines[name].active_policies()["eviction"].startswith("lru@")
                assert channel.applied["eviction"] == first
                assert engines[name].tenants["acme"].weight == 2.0
                learned = engines[name].manager.aeg.to_json("swe-agent")
                assert learned["workflows_seen"] == 1 and "bash" in learned["tools"]
            await acked(first, PolicyApplyStatus.APPLIED)

            swap = await sync_to_async(activate)("eviction", "ttl", {"ttl_s": 20})
            await until(lambda: all(c.applied.get("eviction") == swap
                                    for c in channels.values()), "both nodes to apply ttl")
            assert all(e.active_policies()["eviction"].startswith("ttl@")
                       for e in engines.values())

            await acked(swap, PolicyApplyStatus.APPLIED)

            # Belady needs a trace's future: nodes refuse it, keep ttl, and say why.
            refused = await sync_to_async(activate)("eviction", "belady")
            await acked(refused, PolicyApplyStatus.REJECTED)
            states = await sync_to_async(node_states)()
            assert "simulator replays only" in states[("gpu-a", "eviction")][2]
            assert all(e.active_policies()["eviction"].startswith("ttl@")
                       for e in engines.values())
            statuses = await sync_to_async(
                lambda: set(Node.objects.values_list("status", flat=True)))()
            assert statuses == {NodeStatus.UP}
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(scenario())


def test_a_revoked_node_is_refused_and_stops(control_plane: str) -> None:
    token = make_node("gpu-x")
    Node.objects.get(name="gpu-x").revoke_token()
    engine = SimBackend("h100-llama3-8b", model_name="m", speed=100.0)
    channel = ControlPlaneLink(control_plane, token, engine, backoff=Backoff(0.01, 0.05))
    with pytest.raises(ControlPlaneRefused, match="refused this node's token"):
        asyncio.run(asyncio.wait_for(channel.run_forever(), 20))


def test_reconnects_with_backoff_until_the_control_plane_answers(redis_url: str) -> None:
    """No control plane yet: the channel retries; once one listens, it registers and syncs."""
    token = make_node("gpu-late")
    port = free_port()
    engine = SimBackend("h100-llama3-8b", model_name="m", speed=100.0)
    channel = ControlPlaneLink(f"http://127.0.0.1:{port}", token, engine,
                             backoff=Backoff(0.05, 0.2), seed=1)
    server = uvicorn.Server(uvicorn.Config("controlplane.asgi:application", host="127.0.0.1",
                                           port=port, lifespan="off", log_level="warning",
                                           timeout_graceful_shutdown=STOP_GRACE_S))

    async def scenario() -> None:
        task = asyncio.create_task(channel.run_forever())
        await asyncio.sleep(0.5)
        assert not channel.connected.is_set()
        serving = asyncio.create_task(server.serve())
        try:
            await asyncio.wait_for(channel.synced.wait(), 20)
            assert channel.sessions == 1
        finally:
            task.cancel()
            server.should_exit = True
            await asyncio.gather(task, serving, return_exceptions=True)

    asyncio.run(scenario())

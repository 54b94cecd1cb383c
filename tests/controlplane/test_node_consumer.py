"""The node-agent websocket, through the real ASGI application and a real Redis channel layer."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from controlplane.asgi import application
from controlplane.nodes.consumers import CLUSTER_GROUP, node_group
from controlplane.nodes.models import Node, NodeStatus
from controlplane.tenants.models import Tenant
from tests.sockets import refused

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture(autouse=True)
def _redis_layer(redis_url: str, settings: Any) -> None:
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer"


@database_sync_to_async
def make_node(name: str = "gpu-1") -> tuple[Node, str]:
    node = Node(name=name)
    token = node.assign_new_token()
    node.save()
    return node, token


@database_sync_to_async
def reload(node: Node) -> Node:
    return Node.objects.get(pk=node.pk)


def communicator(token: str | None, origin: str | None = None) -> WebsocketCommunicator:
    headers = []
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return WebsocketCommunicator(application, "/ws/node/", headers=headers)


@pytest.mark.parametrize("token", [None, "nt_abcdefgh_not-a-real-token", "garbage"])
async def test_unknown_tokens_are_refused(token: str | None) -> None:
    await make_node()
    assert await refused(communicator(token))


async def test_revoked_token_is_refused() -> None:
    node, token = await make_node()
    await database_sync_to_async(node.revoke_token)()
    assert await refused(communicator(token))


async def test_rotated_token_replaces_the_old_one() -> None:
    node, old = await make_node()

    @database_sync_to_async
    def rotate() -> str:
        new = node.assign_new_token()
        node.save()
        return new

    new = await rotate()
    assert await refused(communicator(old))
    comm = communicator(new)
    assert (await comm.connect())[0]
    await comm.disconnect()


async def test_a_foreign_browser_origin_is_refused_even_with_a_token() -> None:
    _node, token = await make_node()
    assert await refused(communicator(token, origin="https://evil.example"))


async def test_register_and_heartbeat_update_the_node_and_reach_the_cluster_group() -> None:
    node, token = await make_node()
    await database_sync_to_async(Tenant.objects.create)(slug="acme", name="Acme", weight=2.0)
    await database_sync_to_async(Tenant.objects.create)(slug="gone", name="G", is_active=False)
    layer = get_channel_layer()
    watcher = await layer.new_channel()
    await layer.group_add(CLUSTER_GROUP, watcher)

    comm = communicator(token)
    assert (await comm.connect())[0]
    await comm.send_json_to({
        "type": "register", "engine": "sim", "model": "llama-3-8b", "gpu_model": "H100",
        "gpu_count": 1, "kv_capacity_tokens": 420_000, "address": "http://127.0.0.1:9001",
    })
    reply = await comm.receive_json_from(timeout=5)
    assert reply["type"] == "registered" and reply["node"] == "gpu-1"
    assert reply["heartbeat_interval_s"] > 0
    assert reply["tenants"] == [{"name": "acme", "weight": 2.0, "slo_slowdown": 2.0,
                                 "slo_percentile": 95.0}]
    assert (await comm.receive_json_from(timeout=5)) == {"type": "policy.sync", "policies": []}

    await comm.send_json_to({"type": "heartbeat", "waiting": 3, "running": 5,
                             "kv_used_tokens": 1000, "kv_total_tokens": 420_000,
                             "prefix_cache_hit_rate": 0.9, "queue_delay_s": 0.25})
    assert (await comm.receive_json_from(timeout=5))["type"] == "heartbeat.ack"

    stored = await reload(node)
    assert stored.status == NodeStatus.UP
    assert stored.kv_capacity_tokens == 420_000 and stored.gpu_model == "H100"
    assert stored.last_load["running"] == 5 and stored.last_load["waiting"] == 3
    assert stored.last_heartbeat_at is not None

    events = [await layer.receive(watcher) for _ in range(2)]
    assert events[-1]["type"] == "node.status"
    assert events[-1]["status"] == "up" and events[-1]["load"]["running"] == 5

    await comm.disconnect()
    assert (await reload(node)).status == NodeStatus.DOWN
    down = await layer.receive(watcher)
    assert down["status"] == "down"


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"type": "heartbeat", "running": -1}, "heartbeat.running"),
        ({"type": "heartbeat", "prefix_cache_hit_rate": 1.5}, "heartbeat.prefix_cache_hit_rate"),
        ({"type": "register", "engine": "tpu"}, "register.engine"),
        ({"type": "launch-missiles"}, "type"),
    ],
)
async def test_bad_messages_get_an_error_naming_the_field_and_change_nothing(
    message: dict[str, Any], field: str
) -> None:
    node, token = await make_node()
    comm = communicator(token)
    assert (await comm.connect())[0]
    await comm.send_json_to(message)
    reply = await comm.receive_json_from(timeout=5)
    assert reply["type"] == "error"
    assert reply["field"] == field
    assert (await reload(node)).status == NodeStatus.PENDING
    # the connection survives a bad message
    await comm.send_json_to({"type": "heartbeat"})
    assert (await comm.receive_json_from(timeout=5))["type"] == "heartbeat.ack"
    await comm.disconnect()


async def test_commands_sent_to_the_node_group_are_forwarded() -> None:
    node, token = await make_node()
    comm = communicator(token)
    assert (await comm.connect())[0]
    await get_channel_layer().group_send(
        node_group(node.pk), {"type": "node.command", "command": {"op": "ping", "n": 1}}
    )
    assert await comm.receive_json_from(timeout=5) == {
        "type": "command", "command": {"op": "ping", "n": 1}
    }
    await comm.disconnect()


async def test_tenant_edits_are_pushed_to_connected_nodes() -> None:
    _node, token = await make_node()
    comm = communicator(token)
    assert (await comm.connect())[0]
    await database_sync_to_async(Tenant.objects.create)(slug="acme", name="Acme", weight=3.0)
    frame = await comm.receive_json_from(timeout=5)
    assert frame == {"type": "tenants", "tenants": [
        {"name": "acme", "weight": 3.0, "slo_slowdown": 2.0, "slo_percentile": 95.0}]}
    await comm.disconnect()


def _learned_graph(template: str) -> dict[str, Any]:
    from plugins.aeg import AEGRegistry
    from plugins.views import WorkflowEvent

    registry = AEGRegistry()
    for kind, t, extra in (("call_start", 0.0, {"prompt_tokens": 100}),
                           ("call_end", 1.0, {"output_tokens": 20}),
                           ("tool_start", 1.0, {"tool_name": "bash"}),
                           ("tool_end", 4.0, {"tool_name": "bash"}),
                           ("workflow_end", 4.0, {})):
        registry.observe(WorkflowEvent(kind, "w", "acme", template, t, **extra))
    return registry.to_json(template)


async def test_nodes_get_the_learned_execution_graphs_at_registration_and_on_update() -> None:
    from controlplane.workflows.learning import _announce
    from controlplane.workflows.models import AgentTemplate

    graph = _learned_graph("swe-agent")
    await database_sync_to_async(AgentTemplate.objects.create)(name="swe-agent", aeg_stats=graph)
    await database_sync_to_async(AgentTemplate.objects.create)(name="fresh")  # nothing learned
    _node, token = await make_node()
    comm = communicator(token)
    assert (await comm.connect())[0]
    await comm.send_json_to({"type": "register", "engine": "sim"})
    reply = await comm.receive_json_from(timeout=5)
    assert reply["execution_graphs"] == [graph]
    await comm.receive_json_from(timeout=5)  # policy.sync

    await database_sync_to_async(_announce)("swe-agent")
    assert await comm.receive_json_from(timeout=5) == {"type": "execution_graphs",
                                                       "graphs": [graph]}
    await comm.disconnect()

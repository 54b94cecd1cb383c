"""Websocket consumers for node agents and for the browser's live cluster view."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from pydantic import ValidationError

from controlplane.nodes.messages import (
    HeartbeatMessage,
    PolicyAckMessage,
    RegisterMessage,
    node_message_adapter,
)
from controlplane.nodes.models import Node, NodeStatus
from controlplane.policies.distribution import NODES_GROUP, current_cluster_policies, record_ack
from controlplane.tenants.models import Tenant
from controlplane.workflows.models import AgentTemplate

CLUSTER_GROUP = "cluster"
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403


def node_group(node_id: int) -> str:
    """Channel-layer group that reaches one node's connection (policy pushes, commands)."""
    return f"node.{node_id}"


def bearer_token(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            text = value.decode("latin1")
            if text.lower().startswith("bearer "):
                return text[7:].strip()
    return None


def tenant_views() -> list[dict[str, Any]]:
    """Active tenants as the policy layer's TenantView fields (fair-share weight and SLO)."""
    return [
        {"name": t.slug, "weight": t.weight, "slo_slowdown": t.slo_slowdown,
         "slo_percentile": t.slo_percentile}
        for t in Tenant.objects.filter(is_active=True)
    ]


def execution_graphs(template: str | None = None) -> list[dict[str, Any]]:
    """Agent Execution Graphs learned from completed workflows (``AgentTemplate.aeg_stats``)."""
    rows = AgentTemplate.objects.exclude(aeg_stats={})
    if template is not None:
        rows = rows.filter(name=template)
    return [t.aeg_stats for t in rows]


def node_status_event(node: Node) -> dict[str, Any]:
    return {
        "type": "node.status",
        "node": node.name,
        "status": node.status,
        "last_heartbeat_at": node.last_heartbeat_at.isoformat() if node.last_heartbeat_at else None,
        "load": node.last_load,
    }


class NodeAgentConsumer(AsyncJsonWebsocketConsumer):
    """A node agent's control connection, authenticated by the node's bearer token.

    Unknown or revoked tokens are refused before the handshake completes. The node registers its
    engine and capacity, then heartbeats with its load; each heartbeat is broadcast to the
    ``cluster`` group for the live UI. On registration the node gets the active policies
    (``policy.sync``); later activations arrive as ``policy`` frames (group ``nodes``), and the
    node answers each with ``policy.ack``. Messages sent to ``node.<id>`` are forwarded to the
    agent as ``command`` frames.
    """

    node: Node | None = None

    async def connect(self) -> None:
        token = bearer_token(self.scope)
        node = await database_sync_to_async(Node.authenticate)(token) if token else None
        if node is None:
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        self.node = node
        await self.channel_layer.group_add(node_group(node.pk), self.channel_name)
        await self.channel_layer.group_add(NODES_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.node is None:
            return
        await self.channel_layer.group_discard(node_group(self.node.pk), self.channel_name)
        await self.channel_layer.group_discard(NODES_GROUP, self.channel_name)
        node = await database_sync_to_async(self._mark_down)()
        await self.channel_layer.group_send(CLUSTER_GROUP, node_status_event(node))

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        try:
            message = node_message_adapter.validate_python(content)
        except ValidationError as exc:
            await self.send_json(_validation_error_frame(exc))
            return
        if isinstance(message, RegisterMessage):
            tenants, graphs, policies = await database_sync_to_async(self._register)(message)
            await self.send_json({
                "type": "registered", "node": self.node.name,  # type: ignore[union-attr]
                "tenants": tenants, "execution_graphs": graphs, **self._timing(),
            })
            await self.send_json({"type": "policy.sync", "policies": policies})
        elif isinstance(message, HeartbeatMessage):
            await database_sync_to_async(self._heartbeat)(message)
            await self.send_json({"type": "heartbeat.ack"})
        elif isinstance(message, PolicyAckMessage):
            await database_sync_to_async(record_ack)(
                self.node, message.activation_id, message.kind, message.applied, message.error
            )
            return  # acknowledgements change no node status
        await self.channel_layer.group_send(CLUSTER_GROUP, node_status_event(self.node))  # type: ignore[arg-type]

    async def policy_activate(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "policy", "policy": event["policy"]})

    async def tenants_changed(self, event: dict[str, Any]) -> None:
        tenants = await database_sync_to_async(tenant_views)()
        await self.send_json({"type": "tenants", "tenants": tenants})

    async def graphs_changed(self, event: dict[str, Any]) -> None:
        graphs = await database_sync_to_async(execution_graphs)(event["template"])
        await self.send_json({"type": "execution_graphs", "graphs": graphs})

    async def node_command(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "command", "command": event["command"]})

    def _timing(self) -> dict[str, int]:
        from django.conf import settings

        return {
            "heartbeat_interval_s": settings.NODE_HEARTBEAT_INTERVAL_S,
            "heartbeat_timeout_s": settings.NODE_HEARTBEAT_TIMEOUT_S,
        }

    def _register(
        self, message: RegisterMessage
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """Store what the node reported; return what it needs to start: tenants, learned
        execution graphs and the active policies (one database round trip for all)."""
        node = self.node
        assert node is not None
        node.engine = message.engine
        node.model_name = message.model
        node.gpu_model = message.gpu_model
        node.gpu_count = message.gpu_count
        node.kv_capacity_tokens = message.kv_capacity_tokens
        if message.address:
            node.address = message.address
        node.save(
            update_fields=[
                "engine", "model_name", "gpu_model", "gpu_count", "kv_capacity_tokens", "address",
            ]
        )
        node.record_heartbeat(node.last_load)
        return tenant_views(), execution_graphs(), current_cluster_policies()

    def _heartbeat(self, message: HeartbeatMessage) -> None:
        assert self.node is not None
        self.node.record_heartbeat(message.model_dump(exclude={"type"}))

    def _mark_down(self) -> Node:
        assert self.node is not None
        Node.objects.filter(pk=self.node.pk).update(status=NodeStatus.DOWN)
        self.node.status = NodeStatus.DOWN
        return self.node


class ClusterEventsConsumer(AsyncJsonWebsocketConsumer):
    """Live node status for staff users' browsers (session-authenticated, origin-checked)."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        if not user.is_staff:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.channel_layer.group_add(CLUSTER_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(CLUSTER_GROUP, self.channel_name)

    async def node_status(self, event: dict[str, Any]) -> None:
        await self.send_json(event)


def _validation_error_frame(exc: ValidationError) -> dict[str, Any]:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "type"
    return {"type": "error", "field": field, "message": first["msg"]}

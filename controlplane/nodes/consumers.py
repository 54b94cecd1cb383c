"""Websocket consumers for node agents and for the browser's live cluster view."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from pydantic import ValidationError

from controlplane.nodes.models import CLOSE_REPLACED, CLOSE_REVOKED, Node, NodeStatus, node_group
from controlplane.policies.distribution import NODES_GROUP, current_cluster_policies, record_ack
from controlplane.policies.rollout import settle_open_rollouts
from controlplane.tenants.models import Tenant
from controlplane.workflows.models import AgentTemplate
from nodeagent import wire

CLUSTER_GROUP = "cluster"
CLOSE_UNAUTHORIZED = CLOSE_REVOKED
CLOSE_FORBIDDEN = 4403


def bearer_token(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            text = value.decode("latin1")
            if text.lower().startswith("bearer "):
                return text[7:].strip()
    return None


def tenant_views() -> list[wire.TenantWire]:
    """Active tenants as nodes need them (fair-share weight and SLO)."""
    return [wire.TenantWire(name=t.slug, weight=t.weight, slo_slowdown=t.slo_slowdown,
                            slo_percentile=t.slo_percentile)
            for t in Tenant.objects.filter(is_active=True)]


def execution_graphs(template: str | None = None) -> list[dict[str, Any]]:
    """Agent Execution Graphs learned from completed workflows (``AgentTemplate.aeg_stats``)."""
    rows = AgentTemplate.objects.exclude(aeg_stats={})
    if template is not None:
        rows = rows.filter(name=template)
    return [t.aeg_stats for t in rows]


def node_status_event(node: Node) -> dict[str, Any]:
    """What the live pages get after each heartbeat or status change (``sample``: the
    heartbeat's point of the console's sparklines)."""
    history = node.load_history or []
    return {
        "type": "node.status",
        "node": node.name,
        "status": node.status,
        "last_heartbeat_at": node.last_heartbeat_at.isoformat() if node.last_heartbeat_at else None,
        "load": node.last_load,
        "engine": node.engine,
        "model": node.model_name,
        "gpu_model": node.gpu_model,
        "gpu_count": node.gpu_count,
        "kv_capacity_tokens": node.kv_capacity_tokens,
        "drained": node.drained_at is not None,
        "sample": history[-1] if history else None,
    }


class NodeAgentConsumer(AsyncJsonWebsocketConsumer):
    """A node agent's control connection, authenticated by the node's bearer token.

    Unknown or revoked tokens are refused before the handshake completes. The node registers its
    engine and capacity, then heartbeats with its load; each heartbeat is broadcast to the
    ``cluster`` group for the live UI. On registration the node gets the active policies
    (``policy.sync``); later activations arrive as ``policy`` frames (group ``nodes``), and the
    node answers each with ``policy.ack``. Messages sent to ``node.<id>`` are forwarded to the
    agent as ``command`` frames.

    One connection per node: a new connection with the node's token replaces the one before it
    (which is closed with code 4409), because the usual reason for a second connection is an
    agent restarted before its old TCP connection timed out. Only the current connection may
    mark the node down when it closes, or bring it up with a heartbeat. Revoking or rotating
    the token closes the connection (code 4401) and the node leaves routing at once.
    """

    node: Node | None = None
    current = False

    async def connect(self) -> None:
        token = bearer_token(self.scope)
        node = await database_sync_to_async(Node.authenticate)(token) if token else None
        if node is None:
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        self.node = node
        await self.channel_layer.group_add(node_group(node.pk), self.channel_name)
        await self.channel_layer.group_add(NODES_GROUP, self.channel_name)
        previous = await database_sync_to_async(self._take_over)()
        self.current = True
        await self.accept()
        if previous and previous != self.channel_name:
            await self.channel_layer.send(previous, {
                "type": "node.disconnect", "code": CLOSE_REPLACED,
                "reason": "replaced by a newer connection with this node's token"})

    async def disconnect(self, code: int) -> None:
        if self.node is None:
            return
        await self.channel_layer.group_discard(node_group(self.node.pk), self.channel_name)
        await self.channel_layer.group_discard(NODES_GROUP, self.channel_name)
        if self.current:
            node = await database_sync_to_async(self._mark_down)()
            if node is not None:
                await self.channel_layer.group_send(CLUSTER_GROUP, node_status_event(node))

    async def node_disconnect(self, event: dict[str, Any]) -> None:
        """Close this connection (token revoked or rotated, or replaced by a newer one)."""
        if event["code"] == CLOSE_REPLACED:
            self.current = False  # the newer connection owns the node's status now
        await self.send_json(wire.Closing(code=event["code"], reason=event["reason"]).frame())
        await self.close(code=event["code"])

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        try:
            message = wire.node_frames.validate_python(content)
        except ValidationError as exc:
            await self.send_json(wire.error_frame(exc))
            return
        if isinstance(message, wire.Register):
            tenants, graphs, policies = await database_sync_to_async(self._register)(message)
            await self.send_json(wire.Registered(
                node=self.node.name, tenants=tenants, execution_graphs=graphs,  # type: ignore[union-attr]
                **self._timing()).frame())
            await self.send_json(wire.PolicySync(policies=policies).frame())
        elif isinstance(message, wire.Heartbeat):
            if not await database_sync_to_async(self._heartbeat)(message):
                await self.node_disconnect({
                    "type": "node.disconnect", "code": CLOSE_REVOKED,
                    "reason": "this connection's token was revoked or rotated"})
                return
            await self.send_json(wire.HeartbeatAck().frame())
        elif isinstance(message, wire.PolicyAck):
            await database_sync_to_async(record_ack)(
                self.node, message.activation_id, message.kind, message.applied, message.error,
                message.run_time, message.hook, message.replaced_by)
            return  # acknowledgements change no node status
        await self.channel_layer.group_send(CLUSTER_GROUP, node_status_event(self.node))  # type: ignore[arg-type]

    async def policy_activate(self, event: dict[str, Any]) -> None:
        await self.send_json(wire.PolicyPush(policy=event["policy"]).frame())

    async def tenants_changed(self, event: dict[str, Any]) -> None:
        tenants = await database_sync_to_async(tenant_views)()
        await self.send_json(wire.Tenants(tenants=tenants).frame())

    async def graphs_changed(self, event: dict[str, Any]) -> None:
        graphs = await database_sync_to_async(execution_graphs)(event["template"])
        await self.send_json(wire.ExecutionGraphs(graphs=graphs).frame())

    async def workflow_boundary(self, event: dict[str, Any]) -> None:
        """A tool or workflow boundary of a workflow homed here (``controlplane.workflows.
        boundaries``): forwarded to the node, which applies it to its engine."""
        await self.send_json(wire.WorkflowBoundary(**event["boundary"]).frame())

    async def node_command(self, event: dict[str, Any]) -> None:
        await self.send_json(wire.Command(command=event["command"]).frame())

    def _timing(self) -> dict[str, int]:
        from django.conf import settings

        return {
            "heartbeat_interval_s": settings.NODE_HEARTBEAT_INTERVAL_S,
            "heartbeat_timeout_s": settings.NODE_HEARTBEAT_TIMEOUT_S,
        }

    def _register(
        self, message: wire.Register
    ) -> tuple[list[wire.TenantWire], list[dict[str, Any]], list[dict[str, Any]]]:
        """Store what the node reported; return what it needs to start: tenants, learned
        execution graphs and the active policies (one database round trip for all)."""
        node = self.node
        assert node is not None
        node.engine = message.engine
        node.model_name = message.model
        node.gpu_model = message.gpu_model
        node.gpu_count = message.gpu_count
        node.kv_capacity_tokens = message.kv_capacity_tokens
        node.max_num_seqs = message.max_num_seqs
        node.profile = message.profile
        if message.address:
            node.address = message.address
        node.save(
            update_fields=[
                "engine", "model_name", "gpu_model", "gpu_count", "kv_capacity_tokens",
                "max_num_seqs", "profile", "address",
            ]
        )
        node.record_heartbeat(node.last_load, self.channel_name)
        return tenant_views(), execution_graphs(), current_cluster_policies()

    def _take_over(self) -> str:
        """Make this the node's current connection; returns the channel it replaces."""
        assert self.node is not None
        previous = Node.objects.filter(pk=self.node.pk).values_list("connection", flat=True)[0]
        Node.objects.filter(pk=self.node.pk).update(connection=self.channel_name)
        return previous

    def _heartbeat(self, message: wire.Heartbeat) -> bool:
        assert self.node is not None
        return self.node.record_heartbeat(message.model_dump(exclude={"type"}),
                                          self.channel_name, sample=True)

    def _mark_down(self) -> Node | None:
        """Down, unless a newer connection has taken the node over meanwhile."""
        assert self.node is not None
        if not Node.objects.filter(pk=self.node.pk, connection=self.channel_name).update(
                status=NodeStatus.DOWN, connection=""):
            return None
        self.node.status = NodeStatus.DOWN
        settle_open_rollouts()  # its pending answers no longer count
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

    async def policy_rollout(self, event: dict[str, Any]) -> None:
        """A node answered an activation (``controlplane.console.events.rollout_changed``)."""
        await self.send_json(event)



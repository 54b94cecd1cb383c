"""Admin endpoints for GPU nodes: list with live status, register (token shown once), rotate or
revoke a token, drain."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.db import transaction
from django.http import HttpRequest
from ninja import Field, Router, Schema, Status

from controlplane.api.auth import actor_of, admin_auth
from controlplane.api.errors import not_found
from controlplane.audit.models import record, snapshot
from controlplane.nodes.models import Node, NodeStatus

router = Router(tags=["admin: nodes"], auth=admin_auth)


class NodeIn(Schema):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[-a-zA-Z0-9_]+$")
    engine: Literal["vllm", "sim"] = "sim"
    address: str = Field("", max_length=200)


class NodeOut(Schema):
    name: str
    engine: str
    status: str
    model_name: str
    gpu_model: str
    gpu_count: int
    kv_capacity_tokens: int
    address: str
    last_heartbeat_at: datetime | None
    last_load: dict[str, Any]
    token_prefix: str | None
    token_revoked: bool
    policies: dict[str, str]


class NodeWithTokenOut(NodeOut):
    token: str = Field(description="The node's token. Shown in this response only.")


def _node_out(node: Node) -> dict[str, Any]:
    return {
        "name": node.name, "engine": node.engine, "status": node.status,
        "model_name": node.model_name, "gpu_model": node.gpu_model, "gpu_count": node.gpu_count,
        "kv_capacity_tokens": node.kv_capacity_tokens, "address": node.address,
        "last_heartbeat_at": node.last_heartbeat_at, "last_load": node.last_load,
        "token_prefix": node.token_prefix, "token_revoked": node.token_revoked_at is not None,
        "policies": {s.kind: f"{s.status} (activation {s.activation_id})"
                     for s in node.policy_states.all()},
    }


def _node(name: str) -> Node:
    node = Node.objects.filter(name=name).first()
    if node is None:
        raise not_found(f"node {name!r}")
    return node


@router.get("/nodes", response=list[NodeOut])
def list_nodes(request: HttpRequest) -> list[dict[str, Any]]:
    return [_node_out(n) for n in Node.objects.prefetch_related("policy_states")]


@router.post("/nodes", response={201: NodeWithTokenOut})
def create_node(request: HttpRequest, body: NodeIn) -> Status[dict[str, Any]]:
    node = Node(name=body.name, engine=body.engine, address=body.address)
    token = node.assign_new_token()
    node.full_clean()
    with transaction.atomic():
        node.save()
        record(actor=actor_of(request), action="node.create", obj=node, after=snapshot(node))
    return Status(201, {**_node_out(node), "token": token})


@router.get("/nodes/{name}", response=NodeOut)
def get_node(request: HttpRequest, name: str) -> dict[str, Any]:
    return _node_out(_node(name))


@router.post("/nodes/{name}/rotate-token", response=NodeWithTokenOut)
def rotate_token(request: HttpRequest, name: str) -> dict[str, Any]:
    node = _node(name)
    with transaction.atomic():
        token = node.assign_new_token()
        node.save(update_fields=["token_prefix", "token_hash", "token_revoked_at"])
        record(actor=actor_of(request), action="node.rotate_token", obj=node)
    return {**_node_out(node), "token": token}


@router.post("/nodes/{name}/revoke-token", response=NodeOut)
def revoke_token(request: HttpRequest, name: str) -> dict[str, Any]:
    node = _node(name)
    with transaction.atomic():
        node.revoke_token()
        record(actor=actor_of(request), action="node.revoke_token", obj=node)
    return _node_out(node)


@router.post("/nodes/{name}/drain", response=NodeOut,
             summary="Stop routing new workflows to the node; running ones finish")
def drain(request: HttpRequest, name: str) -> dict[str, Any]:
    node = _node(name)
    before = snapshot(node)
    with transaction.atomic():
        Node.objects.filter(pk=node.pk).update(status=NodeStatus.DRAINING)
        node.status = NodeStatus.DRAINING
        record(actor=actor_of(request), action="node.drain", obj=node, before=before,
               after=snapshot(node))
    return _node_out(node)

"""Admin endpoints for GPU nodes: list with live status, register (token shown once), rotate or
revoke a token, drain. A duplicate name is 409."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.db import transaction
from django.http import HttpRequest
from ninja import Field, Path, Router, Schema, Status

from controlplane.api.auth import actor_of, admin_auth
from controlplane.api.errors import ApiError, errors, not_found
from controlplane.audit.models import record, snapshot
from controlplane.nodes.models import Node
from controlplane.validation import Input, NodeName

router = Router(tags=["admin: nodes"], auth=admin_auth)

ADDRESS_PATTERN = r"^(https?://[^\s\u0000]{1,192})?$"


class NodeIn(Input):
    name: NodeName
    engine: Literal["vllm", "sim"] = "sim"
    address: str = Field("", pattern=ADDRESS_PATTERN,
                         description="http(s) URL of the node's API; empty: the node reports "
                         "its own when it registers.")


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
    drained: bool
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
        "drained": node.drained_at is not None,
        "policies": {s.kind: f"{s.status} (activation {s.activation_id})"
                     for s in node.policy_states.all()},
    }


def _node(name: str) -> Node:
    node = Node.objects.filter(name=name).first()
    if node is None:
        raise not_found(f"node {name!r}")
    return node


NamePath = Path[NodeName]
NODE_ERRORS = errors(401, 403, 404, 422)


@router.get("/nodes", response={200: list[NodeOut], **errors(401, 403)})
def list_nodes(request: HttpRequest) -> list[dict[str, Any]]:
    return [_node_out(n) for n in Node.objects.prefetch_related("policy_states")]


@router.post("/nodes", response={201: NodeWithTokenOut, **errors(400, 401, 403, 409, 413, 422)})
def create_node(request: HttpRequest, body: NodeIn) -> Status[dict[str, Any]]:
    if Node.objects.filter(name=body.name).exists():
        raise ApiError(409, "conflict", f"node {body.name!r} exists already", "name")
    node = Node(name=body.name, engine=body.engine, address=body.address)
    token = node.assign_new_token()
    node.full_clean()
    with transaction.atomic():
        node.save()
        record(actor=actor_of(request), action="node.create", obj=node, after=snapshot(node))
    return Status(201, {**_node_out(node), "token": token})


@router.get("/nodes/{name}", response={200: NodeOut, **NODE_ERRORS})
def get_node(request: HttpRequest, name: NamePath) -> dict[str, Any]:
    return _node_out(_node(name))


@router.post("/nodes/{name}/rotate-token", response={200: NodeWithTokenOut, **NODE_ERRORS})
def rotate_token(request: HttpRequest, name: NamePath) -> dict[str, Any]:
    node = _node(name)
    with transaction.atomic():
        before = snapshot(node)
        token = node.rotate_token()
        record(actor=actor_of(request), action="node.rotate_token", obj=node, before=before,
               after=snapshot(node))
    return {**_node_out(node), "token": token}


@router.post("/nodes/{name}/revoke-token", response={200: NodeOut, **NODE_ERRORS})
def revoke_token(request: HttpRequest, name: NamePath) -> dict[str, Any]:
    node = _node(name)
    before = snapshot(node)
    with transaction.atomic():
        node.revoke_token()
        record(actor=actor_of(request), action="node.revoke_token", obj=node, before=before,
               after=snapshot(node))
    return _node_out(node)


@router.post("/nodes/{name}/drain", response={200: NodeOut, **NODE_ERRORS},
             summary="Stop routing new workflows to the node; running ones finish")
def drain(request: HttpRequest, name: NamePath) -> dict[str, Any]:
    node = _node(name)
    before = snapshot(node)
    with transaction.atomic():
        node.drain()
        record(actor=actor_of(request), action="node.drain", obj=node, before=before,
               after=snapshot(node))
    return _node_out(node)


@router.post("/nodes/{name}/undrain", response={200: NodeOut, **NODE_ERRORS},
             summary="Route new calls to the node again")
def undrain(request: HttpRequest, name: NamePath) -> dict[str, Any]:
    node = _node(name)
    before = snapshot(node)
    with transaction.atomic():
        node.undrain()
        record(actor=actor_of(request), action="node.undrain", obj=node, before=before,
               after=snapshot(node))
    return _node_out(node)

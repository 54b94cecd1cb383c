"""Admin endpoints for policies: the catalogue of installed plugins, activation (validated with
the plugin's schema, audited, pushed to nodes), rollback, history, and what each node runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.db import transaction
from django.http import HttpRequest
from ninja import Field, Path, Query, Router, Schema, Status

from controlplane.api.auth import actor_of, admin_auth, user_of
from controlplane.api.errors import ApiError, errors, not_found
from controlplane.nodes.models import NodePolicyState
from controlplane.policies.catalogue import registry
from controlplane.policies.models import PolicyActivation, PolicyFailure, PolicyKind
from controlplane.policies.rollout import node_answers
from controlplane.policies.services import (
    ActivationError,
    ConcurrentActivation,
    activate_policy,
    configured_policy,
    current_activation,
    rollback,
)
from controlplane.validation import DbId, Input, JsonObject, Text

router = Router(tags=["admin: policies"], auth=admin_auth)

Kind = Literal["eviction", "routing", "admission", "fairness"]


class CatalogueEntry(Schema):
    kind: str
    name: str
    version: str
    summary: str
    requires_oracle: bool
    params_schema: dict[str, Any]


class ActivateIn(Input):
    kind: Kind
    name: Text(100, min_length=1)
    params: JsonObject = Field(
        default_factory=dict,
        description="The plugin's parameters, validated with its schema (see the catalogue).")
    reason: Text(500) = ""


class RollbackIn(Input):
    kind: Kind
    reason: Text(500) = ""


class NodeStateOut(Schema):
    node: str
    status: str
    activation_id: int | None
    error: str
    updated_at: datetime


class ActivationOut(Schema):
    id: int
    kind: str
    name: str
    params: dict[str, Any]
    policy_version: int
    plugin_version: str
    previous_id: int | None
    is_rollback: bool
    actor: str
    reason: str
    activated_at: datetime
    rollout: str = Field(description="pending (nodes still to answer), applied (every node that "
                         "answered runs it; a routing activation, which the gateway applies, at "
                         "once), partial (some refused), failed (every node refused it: not the "
                         "active policy; the nodes kept the one before)")


class ActiveOut(ActivationOut):
    nodes: list[NodeStateOut]


class NodeAnswerOut(Schema):
    node: str
    node_status: str
    status: str = Field(description="pending, applied or rejected")
    error: str = Field(description="the node's reason when it refused")
    updated_at: datetime
    runs: dict[str, Any] | None = Field(
        description="the newest activation of this kind the node applied: what it runs now")


class RolloutOut(ActivationOut):
    nodes: list[NodeAnswerOut]
    in_force_id: int | None = Field(description="the activation of this kind in force now")


class HistoryFilters(Schema):
    kind: Kind | None = None
    limit: int = Field(50, ge=1, le=500)


def _activation_out(a: PolicyActivation) -> dict[str, Any]:
    return {"id": a.pk, "kind": a.kind, "name": a.policy.plugin_name,
            "params": a.policy.params, "policy_version": a.policy.version,
            "plugin_version": a.policy.plugin_version, "previous_id": a.previous_id,
            "is_rollback": a.is_rollback, "actor": a.actor, "reason": a.reason,
            "activated_at": a.activated_at, "rollout": a.rollout}


@router.get("/policies/catalogue", response={200: list[CatalogueEntry], **errors(401, 403)},
            summary="Installed policy plugins with their parameter schemas")
def catalogue(request: HttpRequest) -> list[dict[str, Any]]:
    return [info.to_dict() for info in registry().infos()]


@router.post("/policies/activate",
             response={201: ActivationOut, **errors(400, 401, 403, 409, 413, 422)},
             summary="Validate and activate a policy for the whole cluster")
def activate(request: HttpRequest, body: ActivateIn) -> Status[dict[str, Any]]:
    """422 when the plugin is unknown, of another kind, or refuses the parameters."""
    with transaction.atomic():
        # the plugin's own schema; 422 naming the field on failure
        policy = configured_policy(body.kind, body.name, body.params, user_of(request))
        try:
            activation = activate_policy(policy, actor=actor_of(request), reason=body.reason)
        except ConcurrentActivation as exc:
            raise ApiError(409, "concurrent_activation", str(exc), "kind") from exc
    return Status(201, _activation_out(activation))


@router.post("/policies/rollback",
             response={201: ActivationOut, **errors(400, 401, 403, 409, 413, 422)},
             summary="Re-activate the policy that was active before the current one")
def rollback_policy(request: HttpRequest, body: RollbackIn) -> Status[dict[str, Any]]:
    try:
        activation = rollback(body.kind, actor=actor_of(request), reason=body.reason)
    except ConcurrentActivation as exc:
        raise ApiError(409, "concurrent_activation", str(exc), "kind") from exc
    except ActivationError as exc:
        raise ApiError(409, "nothing_to_roll_back", str(exc), "kind") from exc
    return Status(201, _activation_out(activation))


@router.get("/policies/active", response={200: list[ActiveOut], **errors(401, 403)},
            summary="The active policy of each kind and which version every node applied")
def active(request: HttpRequest) -> list[dict[str, Any]]:
    out = []
    for kind in PolicyKind.values:
        head = current_activation(kind)
        if head is None:
            continue
        states = NodePolicyState.objects.filter(kind=kind).select_related("node")
        out.append({**_activation_out(head), "nodes": [
            {"node": s.node.name, "status": s.status, "activation_id": s.activation_id,
             "error": s.error, "updated_at": s.updated_at} for s in states]})
    return out


@router.get("/policies/activations/{activation_id}",
            response={200: RolloutOut, **errors(401, 403, 404, 422)},
            summary="One activation's rollout: each node's answer and what it runs now")
def activation_rollout(request: HttpRequest, activation_id: Path[DbId]) -> dict[str, Any]:
    activation = (PolicyActivation.objects.select_related("policy")
                  .filter(pk=activation_id).first())
    if activation is None:
        raise not_found(f"activation {activation_id}")
    in_force = PolicyActivation.objects.active(activation.kind)
    return {**_activation_out(activation), "nodes": node_answers(activation),
            "in_force_id": in_force.pk if in_force else None}


@router.get("/policies/history", response={200: list[ActivationOut], **errors(401, 403, 422)},
            summary="Activation history")
def history(request: HttpRequest, filters: Query[HistoryFilters]) -> list[dict[str, Any]]:
    rows = PolicyActivation.objects.select_related("policy").order_by("-id")
    if filters.kind:
        rows = rows.filter(kind=filters.kind)
    return [_activation_out(a) for a in rows[: filters.limit]]


class FailureOut(Schema):
    tier: str = Field(description="gateway (routing) or node")
    reporter: str = Field(description="gateway process id or node name")
    kind: str
    policy: str
    hook: str
    error: str
    replaced_by: str
    occurred_at: datetime


class FailureFilters(Schema):
    kind: Kind | None = None
    limit: int = Field(50, ge=1, le=500)


@router.get("/policies/failures", response={200: list[FailureOut], **errors(401, 403, 422)},
            summary="Policies that raised at run time and were replaced by their fallback")
def failures(request: HttpRequest, filters: Query[FailureFilters]) -> list[PolicyFailure]:
    rows = PolicyFailure.objects.all()
    if filters.kind:
        rows = rows.filter(kind=filters.kind)
    return list(rows[: filters.limit])

"""Admin endpoints for policies: the catalogue of installed plugins, activation (validated with
the plugin's schema, audited, pushed to nodes), rollback, history, and what each node runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.db import transaction
from django.http import HttpRequest
from ninja import Field, Query, Router, Schema, Status

from controlplane.api.auth import actor_of, admin_auth, user_of
from controlplane.api.errors import ApiError
from controlplane.nodes.models import NodePolicyState
from controlplane.policies.catalogue import registry
from controlplane.policies.models import Policy, PolicyActivation, PolicyKind
from controlplane.policies.services import (
    ActivationError,
    ConcurrentActivation,
    activate_policy,
    current_activation,
    rollback,
)

router = Router(tags=["admin: policies"], auth=admin_auth)

Kind = Literal["eviction", "batching", "fairness"]


class CatalogueEntry(Schema):
    kind: str
    name: str
    version: str
    summary: str
    requires_oracle: bool
    params_schema: dict[str, Any]


class ActivateIn(Schema):
    kind: Kind
    name: str = Field(min_length=1, max_length=100)
    params: dict[str, Any] = Field(default_factory=dict)
    reason: str = Field("", max_length=500)


class RollbackIn(Schema):
    kind: Kind
    reason: str = Field("", max_length=500)


class NodeStateOut(Schema):
    node: str
    status: str
    activation_id: int | None
    error: str
    updated_at: datetime


class ActivationOut(Schema):
    id: int
    kind: str
    scope: str
    name: str
    params: dict[str, Any]
    policy_version: int
    plugin_version: str
    previous_id: int | None
    is_rollback: bool
    actor: str
    reason: str
    activated_at: datetime


class ActiveOut(ActivationOut):
    nodes: list[NodeStateOut]


class HistoryFilters(Schema):
    kind: Kind | None = None
    limit: int = Field(50, ge=1, le=500)


def _activation_out(a: PolicyActivation) -> dict[str, Any]:
    return {"id": a.pk, "kind": a.kind, "scope": a.scope_key, "name": a.policy.plugin_name,
            "params": a.policy.params, "policy_version": a.policy.version,
            "plugin_version": a.policy.plugin_version, "previous_id": a.previous_id,
            "is_rollback": a.is_rollback, "actor": a.actor, "reason": a.reason,
            "activated_at": a.activated_at}


@router.get("/policies/catalogue", response=list[CatalogueEntry],
            summary="Installed policy plugins with their parameter schemas")
def catalogue(request: HttpRequest) -> list[dict[str, Any]]:
    return [info.to_dict() for info in registry().infos()]


@router.post("/policies/activate", response={201: ActivationOut},
             summary="Validate and activate a policy for the whole cluster")
def activate(request: HttpRequest, body: ActivateIn) -> Status[dict[str, Any]]:
    with transaction.atomic():
        policy = Policy(kind=body.kind, plugin_name=body.name, params=body.params)
        policy.full_clean()  # the plugin's own schema; 422 naming the field on failure
        same = (Policy.objects.filter(kind=policy.kind, plugin_name=policy.plugin_name,
                                      params=policy.params).order_by("-version").first())
        if same is None:
            policy.created_by = user_of(request)
            policy.save()
        else:
            policy = same
        try:
            activation = activate_policy(policy, actor=actor_of(request), reason=body.reason)
        except ConcurrentActivation as exc:
            raise ApiError(409, "concurrent_activation", str(exc), "kind") from exc
    return Status(201, _activation_out(activation))


@router.post("/policies/rollback", response={201: ActivationOut},
             summary="Re-activate the policy that was active before the current one")
def rollback_policy(request: HttpRequest, body: RollbackIn) -> Status[dict[str, Any]]:
    try:
        activation = rollback(body.kind, actor=actor_of(request), reason=body.reason)
    except ConcurrentActivation as exc:
        raise ApiError(409, "concurrent_activation", str(exc), "kind") from exc
    except ActivationError as exc:
        raise ApiError(409, "nothing_to_roll_back", str(exc), "kind") from exc
    return Status(201, _activation_out(activation))


@router.get("/policies/active", response=list[ActiveOut],
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


@router.get("/policies/history", response=list[ActivationOut], summary="Activation history")
def history(request: HttpRequest, filters: Query[HistoryFilters]) -> list[dict[str, Any]]:
    rows = PolicyActivation.objects.select_related("policy").order_by("-id")
    if filters.kind:
        rows = rows.filter(kind=filters.kind)
    return [_activation_out(a) for a in rows[: filters.limit]]

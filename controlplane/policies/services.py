"""Activating and rolling back policies: the only code that writes PolicyActivation rows.

Each call runs in one transaction that locks the scope's current activation, appends the new
one and an AuditEvent. Two admins activating at once are serialised by that lock; where there is
no row to lock yet (first activation of a scope) the unique chain-start constraint makes the
loser fail with ``ConcurrentActivation`` rather than fork the history.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from controlplane.audit.models import record, snapshot
from controlplane.policies.distribution import broadcast_on_commit
from controlplane.policies.models import ActivationScope, Policy, PolicyActivation
from controlplane.tenants.models import Tenant


class ActivationError(Exception):
    """An activation or rollback that cannot be done; the message says why."""


class ConcurrentActivation(ActivationError):
    """Another activation of the same kind and scope committed first; retry."""


def current_activation(
    kind: str, scope: str = ActivationScope.CLUSTER, tenant: Tenant | None = None
) -> PolicyActivation | None:
    key = PolicyActivation.key_for(scope, tenant.pk if tenant else None)
    return (
        PolicyActivation.objects.filter(kind=kind, scope_key=key)
        .select_related("policy")
        .order_by("-id")
        .first()
    )


def activate_policy(
    policy: Policy,
    *,
    actor: Any,
    scope: str = ActivationScope.CLUSTER,
    tenant: Tenant | None = None,
    reason: str = "",
    is_rollback: bool = False,
) -> PolicyActivation:
    """Make ``policy`` the active one of its kind for the scope; returns the new activation."""
    key = PolicyActivation.key_for(scope, tenant.pk if tenant else None)
    try:
        with transaction.atomic():
            head = (
                PolicyActivation.objects.select_for_update()
                .filter(kind=policy.kind, scope_key=key)
                .order_by("-id")
                .first()
            )
            activation = PolicyActivation(
                kind=policy.kind,
                scope=scope,
                tenant=tenant,
                scope_key=key,
                policy=policy,
                previous=head,
                is_rollback=is_rollback,
                activated_by=actor if getattr(actor, "is_authenticated", False) else None,
                actor=_actor_name(actor),
                reason=reason,
            )
            activation.full_clean(exclude=["previous"])
            activation.save()
            record(
                actor=actor,
                action="policy.rollback" if is_rollback else "policy.activate",
                obj=activation,
                before=_activation_summary(head),
                after=_activation_summary(activation),
            )
            broadcast_on_commit(activation)
    except IntegrityError as exc:
        raise ConcurrentActivation(
            f"another {policy.kind} activation for {key} committed first; reload and retry"
        ) from exc
    return activation


def rollback(
    kind: str,
    *,
    actor: Any,
    scope: str = ActivationScope.CLUSTER,
    tenant: Tenant | None = None,
    reason: str = "",
) -> PolicyActivation:
    """Re-activate the policy that was active before the current one (a new chain link)."""
    head = current_activation(kind, scope, tenant)
    if head is None or head.previous_id is None:
        raise ActivationError(f"no earlier {kind} activation to roll back to")
    previous = PolicyActivation.objects.select_related("policy").get(pk=head.previous_id)
    return activate_policy(
        previous.policy,
        actor=actor,
        scope=scope,
        tenant=tenant,
        reason=reason or f"rollback of activation {head.pk}",
        is_rollback=True,
    )


def _actor_name(actor: Any) -> str:
    if getattr(actor, "is_authenticated", False):
        return str(actor.get_username())
    return str(actor) if actor else "system"


def _activation_summary(activation: PolicyActivation | None) -> dict[str, Any] | None:
    if activation is None:
        return None
    summary = snapshot(activation) or {}
    summary["policy"] = str(activation.policy)
    summary["params"] = activation.policy.params
    return summary

"""Activating and rolling back policies: the only code that writes PolicyActivation rows.

Each call runs in one transaction that locks the kind's current activation, appends the new
one and an AuditEvent. Two admins activating at once are serialised by that lock; where there is
no row to lock yet (first activation of a kind) the unique chain-start constraint makes the
loser fail with ``ConcurrentActivation`` rather than fork the history.

A routing activation is the gateway's (``GATEWAY_KINDS``): no node is asked, so its rollout is
applied at once and every gateway process runs it from its next directory refresh.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from controlplane.audit.models import record, snapshot
from controlplane.policies.distribution import broadcast_on_commit
from controlplane.policies.models import (
    GATEWAY_KINDS,
    Policy,
    PolicyActivation,
    RolloutStatus,
)


class ActivationError(Exception):
    """An activation or rollback that cannot be done; the message says why."""


class ConcurrentActivation(ActivationError):
    """Another activation of the same kind committed first; retry."""


def current_activation(kind: str) -> PolicyActivation | None:
    """The activation in force: the newest that did not fail (``policies.rollout``)."""
    return PolicyActivation.objects.active(kind)


def configured_policy(kind: str, name: str, params: dict[str, Any],
                      created_by: Any = None) -> Policy:
    """The stored configuration of ``name`` with ``params`` (validated by the plugin, raising
    django's ValidationError naming the field), created when no identical one exists."""
    policy = Policy(kind=kind, plugin_name=name, params=params)
    policy.full_clean()  # the plugin's own schema; normalises the params
    same = (Policy.objects.filter(kind=policy.kind, plugin_name=policy.plugin_name,
                                  params=policy.params).order_by("-version").first())
    if same is not None:
        return same
    policy.created_by = created_by
    policy.save()
    return policy


def activate_policy(
    policy: Policy,
    *,
    actor: Any,
    reason: str = "",
    is_rollback: bool = False,
) -> PolicyActivation:
    """Make ``policy`` the active one of its kind on the cluster; returns the new activation."""
    gateway_kind = policy.kind in GATEWAY_KINDS
    try:
        with transaction.atomic():
            head = (
                PolicyActivation.objects.select_for_update()
                .filter(kind=policy.kind)
                .order_by("-id")
                .first()
            )
            activation = PolicyActivation(
                kind=policy.kind,
                policy=policy,
                previous=head,
                is_rollback=is_rollback,
                activated_by=actor if getattr(actor, "is_authenticated", False) else None,
                actor=_actor_name(actor),
                reason=reason,
            )
            if gateway_kind:
                activation.rollout = RolloutStatus.APPLIED
                activation.rollout_settled_at = timezone.now()
            in_force = head if head is None or head.rollout != RolloutStatus.FAILED else (
                PolicyActivation.objects.active(policy.kind))
            activation.full_clean(exclude=["previous"])
            activation.save()
            record(
                actor=actor,
                action="policy.rollback" if is_rollback else "policy.activate",
                obj=activation,
                before=_activation_summary(in_force),
                after=_activation_summary(activation),
            )
            if not gateway_kind:
                broadcast_on_commit(activation)
    except IntegrityError as exc:
        raise ConcurrentActivation(
            f"another {policy.kind} activation committed first; reload and retry"
        ) from exc
    return activation


def rollback(
    kind: str,
    *,
    actor: Any,
    reason: str = "",
) -> PolicyActivation:
    """Re-activate the policy that was in force before the current one (a new chain link);
    failed activations in between never ran, so they are skipped."""
    head = current_activation(kind)
    previous = head.previous if head is not None else None
    while previous is not None and previous.rollout == RolloutStatus.FAILED:
        previous = previous.previous
    if head is None or previous is None:
        raise ActivationError(f"no earlier {kind} activation to roll back to")
    return activate_policy(
        previous.policy,
        actor=actor,
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

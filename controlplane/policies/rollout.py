"""An activation's rollout: each node's answer, and what they add up to.

Every node the control plane asks to apply an activation gets a ``NodeRollout`` row (pending),
which its ``policy.ack`` turns into applied or rejected. The activation's ``rollout`` status is
settled from those rows after every answer, and whenever a node goes down (its pending answer
no longer counts):

- ``pending``: nodes still to answer, and no refusal next to an application yet;
- ``applied``: every node that answered applied it;
- ``partial``: some nodes applied it, others refused it (each keeps what it ran);
- ``failed``: every node that answered refused it. The nodes kept the policy they ran before,
  so a failed activation is not the active policy (``ActivationQuerySet.in_force``): nodes that
  register later get the one in force, rollback skips it, and the audit trail records it.
  Failed is final.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from controlplane.nodes.models import Node, NodeStatus, PolicyApplyStatus
from controlplane.policies.models import NodeRollout, PolicyActivation, RolloutStatus

LIVE_NODE_STATUSES = (NodeStatus.UP, NodeStatus.DRAINING)
"""Nodes connected to the control plane: the ones asked to apply an activation."""


def rollout_status(applied: int, rejected: int, pending: int) -> str:
    """The rollout status from the counts of answers (pending: live nodes yet to answer)."""
    if applied + rejected == 0:
        return RolloutStatus.PENDING
    if pending:
        return RolloutStatus.PARTIAL if applied and rejected else RolloutStatus.PENDING
    if not rejected:
        return RolloutStatus.APPLIED
    return RolloutStatus.FAILED if not applied else RolloutStatus.PARTIAL


def mark_pending(activation: PolicyActivation, nodes: list[Node]) -> None:
    """The activation was sent to ``nodes``: each owes an answer."""
    for node in nodes:
        NodeRollout.objects.update_or_create(
            activation=activation, node=node,
            defaults={"status": PolicyApplyStatus.PENDING, "error": ""})


def record_answer(activation: PolicyActivation, node: Node, applied: bool, error: str) -> str:
    """Store a node's answer and settle the rollout; returns the rollout status."""
    NodeRollout.objects.update_or_create(
        activation=activation, node=node,
        defaults={"status": PolicyApplyStatus.APPLIED if applied else PolicyApplyStatus.REJECTED,
                  "error": "" if applied else error[:2000]})
    return settle(activation.pk)


def settle(activation_id: int) -> str:
    """Recompute an activation's rollout status from its nodes' answers (under a row lock, so
    concurrent answers settle in turn); a failure is audited once."""
    from controlplane.audit.models import record

    with transaction.atomic():
        activation = (PolicyActivation.objects.select_for_update(of=("self",))
                      .select_related("policy").get(pk=activation_id))
        if activation.rollout == RolloutStatus.FAILED:
            return activation.rollout
        counts = {PolicyApplyStatus.APPLIED: 0, PolicyApplyStatus.REJECTED: 0,
                  PolicyApplyStatus.PENDING: 0}
        refusals = []
        for status, node_status, node, error in NodeRollout.objects.filter(
                activation=activation).values_list("status", "node__status", "node__name",
                                                   "error"):
            if status == PolicyApplyStatus.PENDING and node_status not in LIVE_NODE_STATUSES:
                continue  # a node that went down owes nothing; it re-syncs when it is back
            counts[status] = counts.get(status, 0) + 1
            if status == PolicyApplyStatus.REJECTED:
                refusals.append({"node": node, "error": error})
        status = rollout_status(counts[PolicyApplyStatus.APPLIED],
                                counts[PolicyApplyStatus.REJECTED],
                                counts[PolicyApplyStatus.PENDING])
        if status != activation.rollout:
            before = activation.rollout
            activation.rollout = status
            activation.rollout_settled_at = (None if status == RolloutStatus.PENDING
                                             else timezone.now())
            activation.save(update_fields=["rollout", "rollout_settled_at"])
            if status == RolloutStatus.FAILED:
                record(actor="control plane", action="policy.rollout_failed", obj=activation,
                       before={"rollout": before},
                       after={"rollout": status, "policy": str(activation.policy),
                              "refused_by": refusals})
        return activation.rollout


def settle_open_rollouts() -> None:
    """Settle every rollout still pending (a node went down: its answer no longer counts)."""
    for activation_id in PolicyActivation.objects.filter(
            rollout=RolloutStatus.PENDING).values_list("pk", flat=True):
        settle(activation_id)


def node_answers(activation: PolicyActivation) -> list[dict[str, Any]]:
    """Each asked node's answer, with the activation of the same kind it runs now."""
    rows = list(NodeRollout.objects.filter(activation=activation).select_related("node")
                .order_by("node__name"))
    runs = running_activations(activation.kind, [r.node_id for r in rows])
    return [{"node": r.node.name, "node_status": r.node.status, "status": r.status,
             "error": r.error, "updated_at": r.updated_at, "runs": runs.get(r.node_id)}
            for r in rows]


def running_activations(kind: str, node_ids: list[int] | None = None
                        ) -> dict[int, dict[str, Any]]:
    """node id -> the newest ``kind`` activation the node applied (what it runs now)."""
    rows = (NodeRollout.objects.filter(activation__kind=kind, status=PolicyApplyStatus.APPLIED)
            .select_related("activation__policy").order_by("node_id", "-activation_id"))
    if node_ids is not None:
        rows = rows.filter(node_id__in=node_ids)
    out: dict[int, dict[str, Any]] = {}
    for row in rows:
        if row.node_id not in out:
            policy = row.activation.policy
            out[row.node_id] = {"activation_id": row.activation_id, "name": policy.plugin_name,
                                "version": policy.version}
    return out

"""Getting activations to node agents: the messages, the broadcast, and the acknowledgements.

The control plane pushes each cluster-scope activation to every connected node (channel-layer
group ``nodes``) once the activation's transaction commits, and sends the full set when a node
(re)registers, so a node that was offline during a swap converges on reconnect. Nodes answer with
``policy.ack`` frames, recorded in ``NodePolicyState``.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from controlplane.nodes.models import Node, NodePolicyState, NodeStatus, PolicyApplyStatus
from controlplane.policies.models import ActivationScope, PolicyActivation, PolicyKind

NODES_GROUP = "nodes"


def policy_message(activation: PolicyActivation) -> dict[str, Any]:
    """What a node needs to apply an activation (and to acknowledge it by id)."""
    policy = activation.policy
    return {
        "activation_id": activation.pk,
        "kind": activation.kind,
        "name": policy.plugin_name,
        "params": policy.params,
        "version": policy.version,
    }


def current_cluster_policies() -> list[dict[str, Any]]:
    """The active cluster-scope activation of each kind, as policy messages."""
    messages = []
    for kind in PolicyKind.values:
        head = (
            PolicyActivation.objects.filter(kind=kind, scope_key="cluster")
            .select_related("policy")
            .order_by("-id")
            .first()
        )
        if head is not None:
            messages.append(policy_message(head))
    return messages


def broadcast_on_commit(activation: PolicyActivation) -> None:
    """After commit: mark live nodes pending for the kind, then push the activation to them."""
    if activation.scope != ActivationScope.CLUSTER:
        return

    def send() -> None:
        for node in Node.objects.filter(status=NodeStatus.UP):
            NodePolicyState.objects.update_or_create(
                node=node,
                kind=activation.kind,
                defaults={"activation": activation, "status": PolicyApplyStatus.PENDING,
                          "error": ""},
            )
        layer = get_channel_layer()
        if layer is not None:
            async_to_sync(layer.group_send)(
                NODES_GROUP, {"type": "policy.activate", "policy": policy_message(activation)}
            )

    transaction.on_commit(send)


def record_ack(node: Node, activation_id: int, kind: str, applied: bool, error: str) -> None:
    """Store a node's acknowledgement; an ack for an unknown activation is ignored."""
    activation = PolicyActivation.objects.filter(pk=activation_id, kind=kind).first()
    if activation is None:
        return
    NodePolicyState.objects.update_or_create(
        node=node,
        kind=kind,
        defaults={
            "activation": activation,
            "status": PolicyApplyStatus.APPLIED if applied else PolicyApplyStatus.REJECTED,
            "error": "" if applied else error[:2000],
        },
    )

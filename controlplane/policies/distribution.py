"""Getting activations to node agents: the messages, the broadcast, and the acknowledgements.

The control plane pushes each activation of a node kind (eviction, admission, fairness; routing
is the gateway's) to every connected node (channel-layer
group ``nodes``) once the activation's transaction commits, and sends the full set when a node
(re)registers, so a node that was offline during a swap converges on reconnect. Nodes answer with
``policy.ack`` frames, recorded in ``NodePolicyState``.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from controlplane.nodes.models import Node, NodePolicyState, PolicyApplyStatus
from controlplane.policies import rollout
from controlplane.policies.models import GATEWAY_KINDS, PolicyActivation, PolicyKind

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
    """The activation in force of each node kind, as policy messages (a failed activation,
    which every node refused, is never sent; routing stays with the gateway)."""
    messages = []
    for kind in PolicyKind.values:
        if kind in GATEWAY_KINDS:
            continue
        head = PolicyActivation.objects.active(kind)
        if head is not None:
            messages.append(policy_message(head))
    return messages


def broadcast_on_commit(activation: PolicyActivation) -> None:
    """After commit: mark live nodes pending for the kind, then push the activation to them."""
    if activation.kind in GATEWAY_KINDS:
        return

    def send() -> None:
        nodes = list(Node.objects.filter(status__in=rollout.LIVE_NODE_STATUSES))
        for node in nodes:
            NodePolicyState.objects.update_or_create(
                node=node,
                kind=activation.kind,
                defaults={"activation": activation, "status": PolicyApplyStatus.PENDING,
                          "error": ""},
            )
        rollout.mark_pending(activation, nodes)
        layer = get_channel_layer()
        if layer is not None:
            async_to_sync(layer.group_send)(
                NODES_GROUP, {"type": "policy.activate", "policy": policy_message(activation)}
            )
        announce_rollout(activation.pk)

    transaction.on_commit(send)


def record_ack(node: Node, activation_id: int, kind: str, applied: bool, error: str,
               run_time: bool = False, hook: str = "", replaced_by: str = "") -> None:
    """Store a node's acknowledgement; an ack for an unknown activation is ignored. A run-time
    failure (the policy raised after it was applied) is also recorded as a PolicyFailure."""
    activation = (PolicyActivation.objects.filter(pk=activation_id, kind=kind)
                  .select_related("policy").first())
    if activation is None:
        return
    if run_time:
        from controlplane.policies.failures import record_node_failure

        record_node_failure(node.name, kind, activation.policy.plugin_name, error, hook,
                            replaced_by)
    NodePolicyState.objects.update_or_create(
        node=node,
        kind=kind,
        defaults={
            "activation": activation,
            "status": PolicyApplyStatus.APPLIED if applied else PolicyApplyStatus.REJECTED,
            "error": "" if applied else error[:2000],
        },
    )
    rollout.record_answer(activation, node, applied, error)
    announce_rollout(activation.pk)


def announce_rollout(activation_id: int) -> None:
    """Tell the console's live pages (cluster, policies) that a rollout moved."""
    from controlplane.console.events import rollout_changed

    rollout_changed(activation_id)

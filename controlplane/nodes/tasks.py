"""Periodic node housekeeping, run by celery beat (schedule in settings.CELERY_BEAT_SCHEDULE)."""

from __future__ import annotations

from datetime import timedelta

from asgiref.sync import async_to_sync
from celery import shared_task
from channels.layers import get_channel_layer
from django.conf import settings

from controlplane.nodes.consumers import CLUSTER_GROUP, node_status_event
from controlplane.nodes.models import Node, NodeStatus


@shared_task(name="controlplane.nodes.tasks.sweep_stale_nodes")
def sweep_stale_nodes() -> list[str]:
    """Mark nodes down after ``NODE_HEARTBEAT_TIMEOUT_S`` of silence; returns their names.

    The routing layer only sends work to ``up`` nodes, so a crashed agent (no websocket close)
    stops receiving calls within one timeout. Each change is broadcast to the live UI.
    """
    timeout = timedelta(seconds=settings.NODE_HEARTBEAT_TIMEOUT_S)
    candidates = list(Node.stale(timeout).values_list("pk", flat=True))
    if not candidates:
        return []
    # Re-apply the staleness filter in the UPDATE: a heartbeat that lands in between wins.
    Node.stale(timeout).filter(pk__in=candidates).update(status=NodeStatus.DOWN)
    marked = list(Node.objects.filter(pk__in=candidates, status=NodeStatus.DOWN))
    if marked:
        from controlplane.policies.rollout import settle_open_rollouts

        settle_open_rollouts()  # their pending answers to activations no longer count
    layer = get_channel_layer()
    for node in marked:
        if layer is not None:
            async_to_sync(layer.group_send)(CLUSTER_GROUP, node_status_event(node))
    return [node.name for node in marked]


@shared_task(name="controlplane.nodes.tasks.rebalance_workflows")
def rebalance_workflows() -> list[str]:
    """One work-stealing round (active routing policy); returns "workflow:source->target"."""
    from controlplane.gateway.rebalance import rebalance_homes
    from controlplane.gateway.runtime import directory, routing_state

    moves = rebalance_homes(directory, routing_state())
    return [f"{m.workflow_id}:{m.source}->{m.target}" for m in moves]

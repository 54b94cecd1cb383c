"""Work stealing on the live cluster: move the homes of workflows that are between calls off a
backlogged node, as the active routing policy decides (``saga_rebalance``), on the same
node views routing sees (heartbeats corrected by the gateway tier's calls in flight).

Runs periodically (celery beat, ``rebalance_workflows``). Only homes move: the workflow's next
call is routed to its new home by ``route_call``, and its old cache stays behind as eviction
fodder. What a move throws away is priced with the private cached tokens the home node reported
for the workflow in its last heartbeat.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

from django.db.models import Max

from controlplane.gateway.calls import placed_view
from controlplane.gateway.directory import ClusterDirectory, NodeEntry
from controlplane.gateway.forecasts import ViewForecasts
from controlplane.gateway.routing_state import RoutingState
from controlplane.gateway.workflow_views import between_calls_view
from controlplane.workflows import services
from controlplane.workflows.models import ToolCall, Workflow
from controlplane.workflows.states import WorkflowState
from plugins.views import Migration, StaticContext

log = logging.getLogger("saga.gateway.rebalance")
MAX_CANDIDATES = 2000


def rebalance_homes(directory: ClusterDirectory, state: RoutingState) -> list[Migration]:
    """One work-stealing round over every model served by two or more nodes."""
    directory.refresh(force=True)
    by_model: dict[str, list[NodeEntry]] = defaultdict(list)
    for model in directory.models():
        by_model[model] = directory.nodes_for(model)
    moves: list[Migration] = []
    for nodes in by_model.values():
        if len(nodes) >= 2:
            moves += _rebalance(nodes, directory, state)
    return moves


def _rebalance(nodes: list[NodeEntry], directory: ClusterDirectory,
               state: RoutingState) -> list[Migration]:
    now = time.time()
    names = {n.name: n for n in nodes}
    waiting = list(
        Workflow.objects.filter(state=WorkflowState.WAITING_TOOL, home_node__name__in=names)
        .select_related("tenant", "template", "home_node")
        .annotate(last_seq=Max("calls__seq"))
        .order_by("state_changed_at")[:MAX_CANDIDATES]
    )
    if not waiting:
        return []
    tools = {t.workflow_id: t for t in ToolCall.objects.filter(
        workflow__in=waiting, ended_at__isnull=True).order_by("started_at")}
    views = []
    for wf in waiting:
        home = wf.home_node.name  # type: ignore[union-attr]
        last = wf.calls.filter(seq=wf.last_seq).values_list(
            "prompt_tokens", "output_tokens", "finished_at").first() \
            if wf.last_seq is not None else None
        context = last[0] + last[1] if last else 0
        ended = last[2].timestamp() if last and last[2] is not None else None
        tool = tools.get(wf.pk)
        views.append(between_calls_view(wf, names[home], (wf.last_seq or 0) + 1, context, ended,
                                        tool.name if tool else None, now))
    inflight = state.inflight([n.name for n in nodes])
    node_views = [placed_view(n, inflight[n.name].calls, inflight[n.name].prompt_tokens)
                  for n in nodes]
    workflows = {v.workflow_id: v for v in views}
    ctx = StaticContext(now_s=now, tenants=directory.tenants,
                        nodes={v.node_id: v for v in node_views}, workflows=workflows,
                        predictor=ViewForecasts(directory.manager.aeg, workflows))
    moves = directory.policies().rebalance(ctx, node_views, views)
    by_pk = {str(wf.pk): wf for wf in waiting}
    for move in moves:
        # Only a workflow still between calls on its old home moves (a call may have started
        # since the candidates were read).
        services.set_home(by_pk[move.workflow_id], names[move.target].pk, only_if_waiting=True,
                          expected_home=names[move.source].pk)
        log.info("work stealing: workflow %s %s -> %s", move.workflow_id, move.source,
                 move.target)
    return moves

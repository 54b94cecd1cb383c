"""Work stealing on the live cluster: move the homes of workflows that are between calls off a
backlogged node, as the active batching policy decides (``saga_rebalance``).

Runs periodically (celery beat, ``rebalance_workflows``). Only homes move: the workflow's next
call is routed to its new home by ``route_call``, and its old cache stays behind as eviction
fodder. The gateway does not see evictions, so a workflow's context is assumed still cached on
its home: that overstates what a move loses, which only makes stealing more conservative.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

from django.db.models import Max

from controlplane.gateway.directory import ClusterDirectory, NodeEntry
from controlplane.gateway.routing_state import RoutingState
from controlplane.workflows.models import ToolCall, Workflow
from controlplane.workflows.states import WorkflowState
from plugins.views import Migration, StaticContext, WorkflowView

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
        home = state.home(str(wf.pk)) or wf.home_node.name  # type: ignore[union-attr]
        last = wf.calls.filter(seq=wf.last_seq).values_list(
            "prompt_tokens", "output_tokens").first() if wf.last_seq is not None else None
        context = sum(last) if last else 0
        tool = tools.get(wf.pk)
        views.append(WorkflowView(
            workflow_id=str(wf.pk), tenant=wf.tenant.slug, template=wf.template.name,
            state="waiting_tool", arrival_s=wf.submitted_at.timestamp(),
            calls_done=(wf.last_seq or 0) + 1, context_tokens=context, cached_tokens=context,
            home_node=home, tool_name=tool.name if tool else None,
            tool_elapsed_s=now - tool.started_at.timestamp() if tool else 0.0, service_s=0.0,
            isolated_s=max(wf.est_isolated_s or 1.0, 1e-3),
            elapsed_s=now - wf.submitted_at.timestamp()))
    node_views = [n.view for n in nodes]
    ctx = StaticContext(now_s=now, tenants=directory.tenants,
                        nodes={v.node_id: v for v in node_views},
                        workflows={v.workflow_id: v for v in views})
    moves = directory.policies().rebalance(ctx, node_views, views)
    for move in moves:
        state.set_home(move.workflow_id, move.target)
        Workflow.objects.filter(pk=int(move.workflow_id)).update(
            home_node_id=names[move.target].pk)
        log.info("work stealing: workflow %s %s -> %s", move.workflow_id, move.source,
                 move.target)
    return moves

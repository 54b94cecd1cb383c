"""A workflow as the gateway's policies see it (``plugins.views.WorkflowView``), from one row.

Routing and work stealing read the same fields the nodes and ``saga bench`` give their policies:
``service_s`` is what its nodes reported its calls received (``usage.saga_service_s``);
``isolated_s`` is its agent's own time so far (everything outside its calls) plus its completed
calls' isolated times (``controlplane.slo.isolated``, the SLO formula's per-call term), plus,
while a call is being routed, that call's isolated time on the node's cost model at the
execution graph's expected output (no host knows a call's output before it ends). The
accumulators live on the ``Workflow`` row, kept as calls finish (``calls.record_finished``), so
no routing decision reads a workflow's calls.
"""

from __future__ import annotations

import time

from controlplane.gateway.directory import ClusterDirectory, NodeEntry
from controlplane.slo.isolated import call_isolated_s
from controlplane.workflows.models import Workflow
from plugins.views import WorkflowView, workflow_view


def isolated_done_s(workflow: Workflow, until_s: float) -> float:
    """Isolated seconds of the workflow's finished calls and of its agent's time up to
    ``until_s`` (its calls' wall time replaced by their isolated time)."""
    agent_s = until_s - workflow.submitted_at.timestamp() - workflow.calls_wall_s
    return max(agent_s, 0.0) + workflow.calls_isolated_s


def next_call_isolated_s(workflow: Workflow, entry: NodeEntry | None, prompt_tokens: int,
                         directory: ClusterDirectory) -> float:
    """The isolated seconds of the call being routed, on ``entry``'s cost model (0 when the
    node's cost model is unknown: the SLO is then unevaluable too)."""
    if entry is None or entry.cost is None:
        return 0.0
    forecast = directory.manager.aeg.forecast(workflow.template.name, "call",
                                              context_tokens=prompt_tokens)
    served = entry.cached_workflows.get(str(workflow.pk), 0)
    return call_isolated_s(entry.cost, entry.block_size, workflow.context_tokens, prompt_tokens,
                           served, forecast.expected_output_tokens)


def routing_view(workflow: Workflow, seq: int, prompt_tokens: int, home: NodeEntry | None,
                 cost_node: NodeEntry | None, directory: ClusterDirectory) -> WorkflowView:
    """The workflow whose call ``seq`` is being routed (queued: nowhere yet)."""
    now = time.time()
    return workflow_view(
        workflow_id=str(workflow.pk), tenant=workflow.tenant.slug,
        template=workflow.template.name, state="queued", now_s=now,
        arrival_s=workflow.submitted_at.timestamp(), calls_done=seq,
        context_tokens=prompt_tokens,
        cached_tokens=home.cached_workflows.get(str(workflow.pk), 0) if home else 0,
        home_node=home.name if home else None, tool_name=None, gap_since_s=None,
        service_s=workflow.service_s, isolated_done_s=isolated_done_s(workflow, now),
        isolated_current_s=next_call_isolated_s(workflow, cost_node, prompt_tokens, directory))


def between_calls_view(workflow: Workflow, home: NodeEntry, calls_done: int,
                       context_tokens: int, last_call_end_s: float | None,
                       tool_name: str | None, now_s: float) -> WorkflowView:
    """A workflow between calls on ``home`` (work stealing's candidates); ``context_tokens``:
    its last call's prompt plus output."""
    until = last_call_end_s if last_call_end_s is not None else now_s
    return workflow_view(
        workflow_id=str(workflow.pk), tenant=workflow.tenant.slug,
        template=workflow.template.name, state="waiting_tool", now_s=now_s,
        arrival_s=workflow.submitted_at.timestamp(), calls_done=calls_done,
        context_tokens=context_tokens,
        # What the node reported cached for it (its heartbeat), not a guess.
        cached_tokens=home.cached_workflows.get(str(workflow.pk), 0), home_node=home.name,
        tool_name=tool_name, gap_since_s=last_call_end_s, service_s=workflow.service_s,
        isolated_done_s=isolated_done_s(workflow, until), isolated_current_s=0.0)

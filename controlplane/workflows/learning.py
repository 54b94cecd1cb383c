"""Feeding what the control plane recorded about a workflow into its template's Agent Execution
Graph (``plugins.aeg``), stored as JSON on ``AgentTemplate.aeg_stats``.

A finished workflow's calls and tool calls are replayed as ``WorkflowEvent``s, in time order,
into the template's graph; the graph is then written back under a row lock so concurrent
learners never lose each other's updates.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from controlplane.console.events import template_learned
from controlplane.workflows.models import AgentTemplate, CallOutcome, Workflow
from plugins.aeg import AEGRegistry
from plugins.views import WorkflowEvent


def workflow_events(workflow: Workflow) -> list[WorkflowEvent]:
    """The workflow's recorded history as AEG events (times in seconds since submission)."""
    origin = workflow.submitted_at
    tenant, template = workflow.tenant.slug, workflow.template.name
    key = f"wf-{workflow.pk}"

    def at(moment: datetime) -> float:
        return (moment - origin).total_seconds()

    timed: list[tuple[float, int, WorkflowEvent]] = []
    calls = workflow.calls.filter(outcome=CallOutcome.COMPLETED, finished_at__isnull=False)
    for call in calls.order_by("seq"):
        start = at(call.started_at or call.queued_at)
        timed.append((start, 0, WorkflowEvent(
            "call_start", key, tenant, template, start,
            prompt_tokens=call.prompt_tokens, cached_tokens=call.cached_tokens)))
        timed.append((at(call.finished_at), 1, WorkflowEvent(  # type: ignore[arg-type]
            "call_end", key, tenant, template, at(call.finished_at),  # type: ignore[arg-type]
            output_tokens=call.output_tokens)))
    for tool in workflow.tool_calls.filter(ended_at__isnull=False).order_by("started_at"):
        timed.append((at(tool.started_at), 2, WorkflowEvent(
            "tool_start", key, tenant, template, at(tool.started_at), tool_name=tool.name)))
        timed.append((at(tool.ended_at), 3, WorkflowEvent(  # type: ignore[arg-type]
            "tool_end", key, tenant, template, at(tool.ended_at), tool_name=tool.name)))  # type: ignore[arg-type]
    timed.sort(key=lambda item: (item[0], item[1]))
    events = [event for _t, _order, event in timed]
    end = at(workflow.finished_at or timezone.now())
    events.append(WorkflowEvent("workflow_end", key, tenant, template, end))
    return events


def learn(workflow: Workflow) -> dict[str, object]:
    """Add one finished workflow to its template's graph; returns the stored graph."""
    events = workflow_events(workflow)
    with transaction.atomic():
        template = AgentTemplate.objects.select_for_update().get(pk=workflow.template_id)
        registry = AEGRegistry()
        if template.aeg_stats:
            registry.load(template.aeg_stats)
        registry.observe_all(events)
        template.aeg_stats = registry.to_json(template.name)
        template.aeg_updated_at = timezone.now()
        template.save(update_fields=["aeg_stats", "aeg_updated_at"])
        transaction.on_commit(lambda: _announce(template.name))
        template_learned(template.name)  # the console's template page
    return template.aeg_stats


def _announce(template: str) -> None:
    """Tell connected nodes (and through them their policies) about the updated graph."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from controlplane.policies.distribution import NODES_GROUP

    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(layer.group_send)(NODES_GROUP,
                                        {"type": "graphs.changed", "template": template})


def learned_once(workflow_id: int) -> bool:
    """Mark the workflow as learned; False when it already was (tasks may be delivered twice)."""
    return bool(
        Workflow.objects.filter(pk=workflow_id, aeg_learned=False).update(aeg_learned=True)
    )


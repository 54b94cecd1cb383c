"""Workflows with recorded calls, written straight into the database for the SLO tests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from django.utils import timezone

from controlplane.nodes.models import Node
from controlplane.tenants.models import Tenant
from controlplane.workflows import services
from controlplane.workflows.models import AgentTemplate, Call, CallOutcome, Workflow
from controlplane.workflows.states import WorkflowState


def sim_node(name: str = "sim-1", profile: str = "h100-llama3-8b", **fields: object) -> Node:
    return Node.objects.create(name=name, profile=profile, **fields)


def recorded_workflow(tenant: Tenant, node: Node | None, calls: Sequence[tuple[int, int, int]],
                      *, call_s: float = 0.5, gap_s: float = 2.0, head_s: float = 0.1,
                      tail_s: float = 0.1, end: datetime | None = None,
                      finish: str | None = WorkflowState.COMPLETED, external_id: str = "",
                      template: str = "swe-agent") -> Workflow:
    """A workflow whose calls (prompt, cached, output) each took ``call_s`` with ``gap_s``
    between them, ended ``end`` (default now) by ``finish`` (None: left running)."""
    end = end or timezone.now()
    total = head_s + len(calls) * call_s + max(len(calls) - 1, 0) * gap_s + tail_s
    start = end - timedelta(seconds=total)
    workflow = Workflow.objects.create(
        tenant=tenant, template=AgentTemplate.objects.get_or_create(name=template)[0],
        external_id=external_id, submitted_at=start, state_changed_at=start)
    workflow.transition_to(WorkflowState.RUNNING, at=start)
    at = start + timedelta(seconds=head_s)
    for seq, (prompt, cached, output) in enumerate(calls):
        Call.objects.create(workflow=workflow, seq=seq, node=node, prompt_tokens=prompt,
                            cached_tokens=cached, output_tokens=output, queued_at=at,
                            started_at=at, finished_at=at + timedelta(seconds=call_s),
                            outcome=CallOutcome.COMPLETED, finish_reason="stop")
        at += timedelta(seconds=call_s + gap_s)
    if finish is not None:
        _finish_at(workflow, finish, end)
    return workflow


def _finish_at(workflow: Workflow, state: str, end: datetime) -> None:
    """``services.finish_workflow`` as if it ran at ``end``."""
    from unittest import mock

    with mock.patch("controlplane.workflows.services.timezone.now", return_value=end):
        services.finish_workflow(workflow, state)
    workflow.refresh_from_db()

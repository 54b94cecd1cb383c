"""Workflow operations shared by the REST API and the OpenAI-compatible gateway.

Both entry points go through these functions, so quotas, the state machine and what is recorded
for the Agent Execution Graph are the same whichever way an agent talks to SAGA.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from controlplane.quotas import QuotaExceeded
from controlplane.tenants.models import Tenant
from controlplane.workflows.models import AgentTemplate, ToolCall, Workflow
from controlplane.workflows.states import TERMINAL_STATES, IllegalTransition, WorkflowState

# How long a tenant at its concurrency quota should wait before retrying: workflows last minutes.
CONCURRENCY_RETRY_AFTER_S = 30


def create_workflow(
    tenant: Tenant,
    template_name: str,
    *,
    external_id: str = "",
    metadata: dict[str, Any] | None = None,
    hints: dict[str, Any] | None = None,
) -> Workflow:
    """Admit a new workflow for ``tenant`` (quota-checked); its template is created on first use,
    starting from the AEG prior."""
    with transaction.atomic():
        # Serialise this tenant's admissions so two concurrent creates cannot both squeeze
        # under the concurrency quota.
        tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
        limit = tenant.max_concurrent_workflows
        if limit is not None:
            active = tenant.workflows.exclude(state__in=TERMINAL_STATES).count()
            if active >= limit:
                raise QuotaExceeded(
                    "max_concurrent_workflows",
                    f"tenant {tenant.slug} has {active} unfinished workflows, its quota is {limit}",
                    CONCURRENCY_RETRY_AFTER_S,
                )
        template, _ = AgentTemplate.objects.get_or_create(name=template_name)
        workflow = Workflow(
            tenant=tenant,
            template=template,
            external_id=external_id,
            metadata=metadata or {},
            hints=hints or {},
        )
        workflow.full_clean()
        workflow.save()
    return workflow


def start_tool(workflow: Workflow, name: str, expected_duration_s: float | None = None) -> ToolCall:
    """The agent started a tool: the workflow waits and its KV cache should be kept."""
    with transaction.atomic():
        workflow.transition_to(WorkflowState.WAITING_TOOL)
        return ToolCall.objects.create(
            workflow=workflow,
            after_call=workflow.calls.order_by("-seq").first(),
            name=name,
            expected_duration_s=expected_duration_s,
        )


def end_tool(workflow: Workflow) -> ToolCall | None:
    """The agent's tool returned; the workflow is running again (its next call is coming)."""
    if workflow.state != WorkflowState.WAITING_TOOL:
        raise IllegalTransition(workflow, workflow.state, WorkflowState.RUNNING)
    with transaction.atomic():
        workflow.transition_to(WorkflowState.RUNNING)
        tool = workflow.tool_calls.filter(ended_at__isnull=True).order_by("-started_at").first()
        if tool is not None:
            tool.ended_at = timezone.now()
            tool.save(update_fields=["ended_at"])
        return tool


def finish_workflow(workflow: Workflow, state: str) -> Workflow:
    """Complete, fail or cancel; open tool calls are closed at the same instant."""
    now = timezone.now()
    with transaction.atomic():
        workflow.transition_to(state, at=now)
        workflow.tool_calls.filter(ended_at__isnull=True).update(ended_at=now)
    if state == WorkflowState.COMPLETED:
        from controlplane.workflows.tasks import learn_from_workflow

        transaction.on_commit(lambda: learn_from_workflow.delay(workflow.pk))
    return workflow

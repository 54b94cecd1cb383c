"""Workflow operations: the one module that writes workflow state.

The REST API, the OpenAI-compatible gateway, reconciliation and Celery tasks all go through
these functions, so quotas, the state machine, what is recorded for the Agent Execution Graph
and what the home node is told (:mod:`.boundaries`) are the same whichever way an agent talks to
SAGA.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from controlplane.console.events import workflow_changed
from controlplane.quotas import QuotaExceeded
from controlplane.tenants.models import Tenant
from controlplane.workflows import lifecycle
from controlplane.workflows.boundaries import push_on_commit
from controlplane.workflows.models import AgentTemplate, ToolCall, Workflow
from controlplane.workflows.states import TERMINAL_STATES, IllegalTransition, WorkflowState


def create_workflow(
    tenant: Tenant,
    template_name: str,
    *,
    external_id: str = "",
    metadata: dict[str, Any] | None = None,
    hints: dict[str, Any] | None = None,
    validate: bool = True,
) -> Workflow:
    """Admit a new workflow for ``tenant`` (quota-checked); its template is created on first use,
    starting from the AEG prior.

    A tenant with a concurrency quota has its admissions serialised on its row (two concurrent
    creates cannot both squeeze under the quota); a tenant without one is not locked, so its
    agents' first calls do not queue behind each other. ``validate=False`` (the gateway) leaves
    uniqueness to the database, which raises IntegrityError on a duplicate external id.

    A refusal is counted (``controlplane.slo.rejections``) and says in ``retry_after_s`` when a
    slot can free (``lifecycle.concurrency_retry_after_s``), both once the lock is released.
    """
    try:
        return _create_workflow(tenant, template_name, external_id=external_id,
                                metadata=metadata, hints=hints, validate=validate)
    except QuotaExceeded as exc:
        from controlplane.slo.rejections import record_rejection

        record_rejection(tenant.pk, exc.quota)
        raise QuotaExceeded(exc.quota, str(exc),
                            lifecycle.concurrency_retry_after_s(tenant.pk)) from None


def _create_workflow(tenant: Tenant, template_name: str, *, external_id: str,
                     metadata: dict[str, Any] | None, hints: dict[str, Any] | None,
                     validate: bool) -> Workflow:
    with transaction.atomic():
        limit = Tenant.objects.filter(pk=tenant.pk).values_list(
            "max_concurrent_workflows", flat=True).get()
        if limit is not None:
            tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
            limit = tenant.max_concurrent_workflows
        if limit is not None:
            active = tenant.workflows.exclude(state__in=TERMINAL_STATES).count()
            if active >= limit:
                raise QuotaExceeded(
                    "max_concurrent_workflows",
                    f"tenant {tenant.slug} has {active} unfinished workflows, its quota is {limit}",
                    1,
                )
        template, _ = AgentTemplate.objects.get_or_create(name=template_name)
        workflow = Workflow(
            tenant=tenant,
            template=template,
            external_id=external_id,
            metadata=metadata or {},
            hints=hints or {},
        )
        if validate:
            workflow.full_clean()
        workflow.save()
    return workflow


def start_tool(workflow: Workflow, name: str, expected_duration_s: float | None = None) -> ToolCall:
    """The agent started a tool: the workflow waits and its KV cache should be kept."""
    with transaction.atomic():
        workflow.transition_to(WorkflowState.WAITING_TOOL)
        tool = ToolCall.objects.create(
            workflow=workflow,
            after_call=workflow.calls.order_by("-seq").first(),
            name=name,
            expected_duration_s=expected_duration_s,
        )
        push_on_commit(workflow.home_node_id, workflow.pk, "tool_start", name)
        return tool


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
        push_on_commit(workflow.home_node_id, workflow.pk, "tool_end")
        return tool


def call_arrived(workflow: Workflow) -> None:
    """The agent's next call: a tool it was running has ended (inferred), the workflow runs."""
    if workflow.state == WorkflowState.WAITING_TOOL:
        end_tool(workflow)
    elif workflow.state == WorkflowState.SUBMITTED:
        workflow.transition_to(WorkflowState.RUNNING)
    workflow_changed(workflow.pk)


def call_recorded(workflow_id: int) -> None:
    """A call of the workflow ended (its outcome is recorded): the console's pages are told once
    the transaction commits."""
    workflow_changed(workflow_id)


def set_home(workflow: Workflow, node_id: int, *, only_if_waiting: bool = False,
             expected_home: int | None = None) -> bool:
    """Record the workflow's home node (routing, work stealing); conditional on it still being
    between calls on ``expected_home`` when stealing. Returns whether it changed."""
    rows = Workflow.objects.filter(pk=workflow.pk)
    if only_if_waiting:
        rows = rows.filter(state=WorkflowState.WAITING_TOOL, home_node_id=expected_home)
    changed = bool(rows.exclude(home_node_id=node_id).update(home_node_id=node_id))
    if changed:
        workflow.home_node_id = node_id
    return changed


def finish_workflow(workflow: Workflow, state: str) -> Workflow:
    """Complete, fail, cancel or abandon (``lifecycle.reap_idle``); open tool calls are closed at
    the same instant, the home node is told (``workflow_end`` with the final state as outcome)
    and the workflow's isolated time and SLO status are recorded (``Workflow.transition_to``)."""
    now = timezone.now()
    with transaction.atomic():
        workflow.transition_to(state, at=now)
        workflow.tool_calls.filter(ended_at__isnull=True).update(ended_at=now)
        push_on_commit(workflow.home_node_id, workflow.pk, "workflow_end", outcome=state)
    if state == WorkflowState.COMPLETED:
        from controlplane.workflows.tasks import learn_from_workflow

        transaction.on_commit(lambda: learn_from_workflow.delay(workflow.pk))
    return workflow

"""Tenant-scoped workflow endpoints: create, inspect, list, cancel, complete, report tools.

Another tenant's workflow answers 404, never 403: its existence is not revealed. Inputs follow
``controlplane.validation`` (what the schema allows is exactly what is accepted); every status
an endpoint can answer is in its ``response=``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Field, Path, Query, Router, Schema, Status

from controlplane.api.auth import tenant_of, workflows_auth
from controlplane.api.errors import ApiError, errors, not_found
from controlplane.validation import (
    MAX_DB_ID,
    DbId,
    FiniteFloat,
    Input,
    JsonObject,
    StrictInt,
    TemplateName,
    Text,
    UtcBound,
    WorkflowId,
)
from controlplane.workflows import services
from controlplane.workflows.models import Workflow
from controlplane.workflows.states import WorkflowState

router = Router(tags=["workflows"], auth=workflows_auth)

MAX_EXPECTED_DURATION_S = 1e7
"""About 116 days: a bound that keeps every duration derived from a hint finite."""


class WorkflowHints(Input):
    expected_calls: StrictInt(ge=1, le=100_000) | None = None
    expected_duration_s: FiniteFloat(gt=0, le=MAX_EXPECTED_DURATION_S) | None = None


class WorkflowIn(Input):
    template: TemplateName
    external_id: WorkflowId = ""
    metadata: JsonObject = Field(default_factory=dict)
    hints: WorkflowHints = Field(default_factory=WorkflowHints)


class WorkflowOut(Schema):
    id: int
    template: str
    external_id: str
    state: str
    metadata: dict[str, Any]
    hints: dict[str, Any]
    home_node: str | None
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    tct_s: float | None
    est_isolated_s: float | None
    slowdown: float | None
    slo_met: bool | None
    slo_status: str = Field(description="'' (not finished), met, missed (abandoned too), "
                            "unevaluable (no isolated estimate: never counted as met), excluded "
                            "(failed, cancelled)")
    isolated_basis: str = Field(description="what est_isolated_s was computed from, or why "
                                "there is none")
    calls: int
    tool_calls: int

    @staticmethod
    def of(workflow: Workflow) -> WorkflowOut:
        return WorkflowOut(
            id=workflow.pk, template=workflow.template.name, external_id=workflow.external_id,
            state=workflow.state, metadata=workflow.metadata, hints=workflow.hints,
            home_node=workflow.home_node.name if workflow.home_node else None,
            submitted_at=workflow.submitted_at, started_at=workflow.started_at,
            finished_at=workflow.finished_at, tct_s=workflow.tct_s,
            est_isolated_s=workflow.est_isolated_s, slowdown=workflow.slowdown,
            slo_met=workflow.slo_met, slo_status=workflow.slo_status,
            isolated_basis=workflow.isolated_basis, calls=workflow.calls.count(),
            tool_calls=workflow.tool_calls.count(),
        )


class WorkflowPage(Schema):
    count: int
    items: list[WorkflowOut]


class ListFilters(Schema):
    state: WorkflowState | None = None
    external_id: WorkflowId | None = None
    template: TemplateName | None = None
    submitted_after: UtcBound | None = None
    submitted_before: UtcBound | None = None
    limit: int = Field(50, ge=1, le=500)
    offset: int = Field(0, ge=0, le=MAX_DB_ID)


class ToolStart(Input):
    type: Literal["tool_start"]
    tool: Text(200, min_length=1)
    expected_duration_s: FiniteFloat(gt=0, le=MAX_EXPECTED_DURATION_S) | None = None


class ToolEnd(Input):
    type: Literal["tool_end"]


class EventOut(Schema):
    workflow: WorkflowOut
    tool: str | None


class CallOut(Schema):
    seq: int
    node: str | None
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    queued_at: datetime
    started_at: datetime | None
    first_token_at: datetime | None
    finished_at: datetime | None
    ttft_s: float | None
    latency_s: float | None
    outcome: str
    finish_reason: str


class ToolCallOut(Schema):
    name: str
    after_call_seq: int | None
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None


class TimelineOut(Schema):
    calls: list[CallOut]
    tool_calls: list[ToolCallOut]


def _tenant_workflows(request: HttpRequest) -> QuerySet[Workflow]:
    return Workflow.objects.filter(tenant=tenant_of(request)).select_related(
        "tenant", "template", "home_node"
    )


def _get(request: HttpRequest, workflow_id: int) -> Workflow:
    workflow = _tenant_workflows(request).filter(pk=workflow_id).first()
    if workflow is None:
        raise not_found(f"workflow {workflow_id}")
    return workflow


WorkflowPath = Path[DbId]
READ_ERRORS = errors(401, 403, 404, 422)
CHANGE_ERRORS = errors(400, 401, 403, 404, 409, 413, 422)


@router.post("/workflows", response={201: WorkflowOut, **errors(400, 401, 403, 409, 413, 422,
                                                                 429)},
             summary="Submit a workflow")
def create_workflow(request: HttpRequest, body: WorkflowIn) -> Status[WorkflowOut]:
    """409 when the tenant already has a workflow with this ``external_id``; 429 past the
    tenant's ``max_concurrent_workflows``."""
    if body.external_id and _tenant_workflows(request).filter(
            external_id=body.external_id).exists():
        raise ApiError(409, "conflict", f"a workflow with external_id {body.external_id!r} "
                       "exists already", "external_id")
    workflow = services.create_workflow(
        tenant_of(request), body.template, external_id=body.external_id,
        metadata=body.metadata, hints=body.hints.model_dump(exclude_none=True),
    )
    return Status(201, WorkflowOut.of(workflow))


@router.get("/workflows", response={200: WorkflowPage, **errors(401, 403, 422)},
            summary="List workflows")
def list_workflows(request: HttpRequest, filters: Query[ListFilters]) -> WorkflowPage:
    rows = _tenant_workflows(request)
    if filters.state:
        rows = rows.filter(state=filters.state)
    if filters.template:
        rows = rows.filter(template__name=filters.template)
    if filters.external_id is not None:
        rows = rows.filter(external_id=filters.external_id)
    if filters.submitted_after:
        rows = rows.filter(submitted_at__gte=filters.submitted_after)
    if filters.submitted_before:
        rows = rows.filter(submitted_at__lt=filters.submitted_before)
    page = rows.order_by("-submitted_at", "-id")[filters.offset:filters.offset + filters.limit]
    return WorkflowPage(count=rows.count(), items=[WorkflowOut.of(w) for w in page])


@router.get("/workflows/{workflow_id}", response={200: WorkflowOut, **READ_ERRORS},
            summary="Get a workflow")
def get_workflow(request: HttpRequest, workflow_id: WorkflowPath) -> WorkflowOut:
    return WorkflowOut.of(_get(request, workflow_id))


@router.post("/workflows/{workflow_id}/cancel", response={200: WorkflowOut, **CHANGE_ERRORS},
             summary="Cancel")
def cancel_workflow(request: HttpRequest, workflow_id: WorkflowPath) -> WorkflowOut:
    workflow = services.finish_workflow(_get(request, workflow_id), WorkflowState.CANCELLED)
    return WorkflowOut.of(workflow)


@router.post("/workflows/{workflow_id}/complete",
             response={200: WorkflowOut, **CHANGE_ERRORS}, summary="Complete")
def complete_workflow(request: HttpRequest, workflow_id: WorkflowPath) -> WorkflowOut:
    workflow = services.finish_workflow(_get(request, workflow_id), WorkflowState.COMPLETED)
    return WorkflowOut.of(workflow)


@router.post("/workflows/{workflow_id}/events", response={200: EventOut, **CHANGE_ERRORS},
             summary="Report a tool call starting or ending")
def post_event(
    request: HttpRequest, workflow_id: WorkflowPath,
    body: Annotated[ToolStart | ToolEnd, Field(discriminator="type")],
) -> EventOut:
    workflow = _get(request, workflow_id)
    if isinstance(body, ToolStart):
        tool = services.start_tool(workflow, body.tool, body.expected_duration_s)
    else:
        tool = services.end_tool(workflow)
    return EventOut(workflow=WorkflowOut.of(workflow), tool=tool.name if tool else None)


@router.get("/workflows/{workflow_id}/calls", response={200: TimelineOut, **READ_ERRORS},
            summary="The workflow's LLM calls and tool calls with their timings")
def workflow_timeline(request: HttpRequest, workflow_id: WorkflowPath) -> TimelineOut:
    return timeline(_get(request, workflow_id))


def timeline(workflow: Workflow) -> TimelineOut:
    """A workflow's calls and tool calls as the API shows them (the console shows the same)."""
    calls = [
        CallOut(seq=c.seq, node=c.node.name if c.node else None, prompt_tokens=c.prompt_tokens,
                cached_tokens=c.cached_tokens, output_tokens=c.output_tokens,
                queued_at=c.queued_at, started_at=c.started_at, first_token_at=c.first_token_at,
                finished_at=c.finished_at, ttft_s=c.ttft_s, latency_s=c.latency_s,
                outcome=c.outcome, finish_reason=c.finish_reason)
        for c in workflow.calls.select_related("node").order_by("seq")
    ]
    tools = [
        ToolCallOut(name=t.name, after_call_seq=t.after_call.seq if t.after_call else None,
                    started_at=t.started_at, ended_at=t.ended_at, duration_s=t.duration_s)
        for t in workflow.tool_calls.select_related("after_call").order_by("started_at")
    ]
    return TimelineOut(calls=calls, tool_calls=tools)

"""Admin endpoints for what-if runs: start one (the window's recorded traffic under candidate
policy sets at load points, on the simulated cluster), read its state, progress and results,
cancel it, fetch its report. Starting and cancelling are audited."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from ninja import Field, Path, Query, Router, Schema, Status

from controlplane.api.auth import actor_of, admin_auth, user_of
from controlplane.api.errors import ApiError, errors, not_found
from controlplane.validation import (
    DbId,
    FiniteFloat,
    Input,
    Slug,
    StrictInt,
    Text,
    UtcDateTime,
)
from controlplane.whatif import jobs
from controlplane.whatif.errors import WhatIfInputError
from controlplane.whatif.models import WhatIfRun

router = Router(tags=["admin: what-if"], auth=admin_auth)


class ClusterIn(Input):
    mode: Literal["as-recorded", "fixed"] = Field(
        "as-recorded", description="as-recorded: the nodes that served the window, on their "
        "simulated profile; fixed: gpus GPUs of profile")
    gpus: StrictInt(ge=1, le=100_000) | None = None
    profile: Text(100) | None = None


class WhatIfIn(Input):
    since: UtcDateTime
    until: UtcDateTime | None = Field(None, description="default: now")
    tenants: list[Slug] = Field(default_factory=list, max_length=100,
                                description="tenant slugs (empty: every tenant)")
    policies: list[Text(500, min_length=1)] = Field(
        ..., min_length=1, max_length=16,
        description="policy sets by name (active = what ran live, baseline, saga, ...) or "
        "NAME=EVICTION:ROUTING:ADMISSION:FAIRNESS with NAME[key=value;...] parameters; the "
        "first is the reference for speedups")
    cluster: ClusterIn = Field(default_factory=ClusterIn)
    loads: list[FiniteFloat(gt=0, le=100)] = Field(
        default_factory=lambda: [1.0], min_length=1, max_length=16,
        description="load points: the recorded arrival rate times each")


class TaskOut(Schema):
    index: int
    policy: str
    load: float
    status: str
    done: int
    total: int
    worker: str
    error: str


class WhatIfOut(Schema):
    id: int
    status: str = Field(description="queued, running, succeeded, failed (a task failed: "
                        "error says why; the other tasks' results are in results), cancelled")
    actor: str
    error: str
    since: datetime
    until: datetime
    tenants: list[str]
    policies: list[str]
    loads: list[float]
    cluster: dict[str, Any]
    created_at: datetime
    finished_at: datetime | None
    estimated: list[str] = Field(description="what the replay estimates rather than replays")
    counts: dict[str, int]
    tasks: list[TaskOut]
    results: dict[str, Any] | None = Field(description="results.json (saga bench's columns) "
                                           "once every task has ended")
    has_report: bool


class ListFilters(Schema):
    limit: int = Field(20, ge=1, le=200)


@router.post("/whatif", response={202: WhatIfOut, **errors(400, 401, 403, 413, 422)},
             summary="Replay a window of recorded traffic under candidate policy sets")
def start(request: HttpRequest, body: WhatIfIn) -> Status[dict[str, Any]]:
    """422 naming the field: an empty window, one over the limit, a tenant unknown or without
    traffic in it, an unknown policy set or invalid parameters, a bad cluster shape."""
    spec = jobs.RunSpec(since=body.since, until=body.until or timezone.now(),
                        policies=list(body.policies), tenants=list(body.tenants),
                        cluster=body.cluster.model_dump(exclude_none=True),
                        loads=list(body.loads))
    try:
        run = jobs.start(spec, actor_of(request), user=user_of(request))
    except WhatIfInputError as exc:
        raise ApiError(422, "invalid", exc.message, exc.field) from exc
    return Status(202, jobs.run_payload(run))


@router.get("/whatif", response={200: list[WhatIfOut], **errors(401, 403, 422)},
            summary="Recent what-if runs")
def runs(request: HttpRequest, filters: Query[ListFilters]) -> list[dict[str, Any]]:
    return [jobs.run_payload(r) for r in WhatIfRun.objects.all()[: filters.limit]]


def _run(run_id: int) -> WhatIfRun:
    run = WhatIfRun.objects.filter(pk=run_id).first()
    if run is None:
        raise not_found(f"what-if run {run_id}")
    return run


@router.get("/whatif/{run_id}", response={200: WhatIfOut, **errors(401, 403, 404, 422)},
            summary="A what-if run: its state, each task's progress, the results")
def run_state(request: HttpRequest, run_id: Path[DbId]) -> dict[str, Any]:
    return jobs.run_payload(_run(run_id))


@router.post("/whatif/{run_id}/cancel",
             response={200: WhatIfOut, **errors(401, 403, 404, 409, 422)},
             summary="Cancel a what-if run (queued tasks never start, running ones stop)")
def cancel(request: HttpRequest, run_id: Path[DbId]) -> dict[str, Any]:
    run = _run(run_id)
    if not jobs.cancel_audited(run, actor_of(request)):
        raise ApiError(409, "finished", f"what-if run {run_id} has already {run.status}",
                       "status")
    run.refresh_from_db()
    return jobs.run_payload(run)


@router.get("/whatif/{run_id}/report", response={200: None, **errors(401, 403, 404, 409, 422)},
            summary="The run's report (self-contained HTML with its plots)")
def report(request: HttpRequest, run_id: Path[DbId]) -> HttpResponse:
    run = _run(run_id)
    if not run.report_html:
        raise ApiError(409, "no_report", f"what-if run {run_id} has no report yet", "status")
    return HttpResponse(run.report_html, content_type="text/html; charset=utf-8")

"""Workflow lifecycle: ending abandoned workflows, and when a concurrency slot can free.

An agent that stops without completing its workflow (crashed, never calls ``/complete``) would
hold its tenant's concurrency slot and its home node's pinned KV for ever. The reaper (celery
beat ``reap-idle-workflows``, or the demo's in-process runner) ends every unfinished workflow
with no call in flight and no call, tool or state event for its template's idle timeout
(``AgentTemplate.idle_timeout_s``, default ``SAGA_WORKFLOW_IDLE_TIMEOUT_S``, 30 minutes) as
``abandoned``, through ``services.finish_workflow``: the slot is free at once, the home node
gets ``workflow_end`` with outcome ``abandoned``, and the workflow counts as SLO missed.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from controlplane.workflows.models import AgentTemplate, CallOutcome, Workflow
from controlplane.workflows.states import TERMINAL_STATES, IllegalTransition, WorkflowState

log = logging.getLogger("saga.workflows")

RECENT_COMPLETIONS = 100
"""How many of a tenant's latest completed workflows the expected remaining time is taken from."""


def default_idle_timeout_s() -> int:
    return int(settings.SAGA_WORKFLOW_IDLE_TIMEOUT_S)


@dataclass(frozen=True, slots=True)
class Activity:
    """When an unfinished workflow last did something, and whether a call is in flight."""

    workflow_id: int
    submitted_at: datetime
    last_at: datetime
    in_flight: bool
    idle_timeout_s: int

    @property
    def reap_at(self) -> datetime:
        return self.last_at + timedelta(seconds=self.idle_timeout_s)


def activity(rows: object) -> list[Activity]:
    """Activity of the unfinished workflows in ``rows`` (a Workflow queryset)."""
    default = default_idle_timeout_s()
    annotated = rows.exclude(state__in=TERMINAL_STATES).annotate(  # type: ignore[attr-defined]
        last_queued=Max("calls__queued_at"), last_finished=Max("calls__finished_at"),
        pending=Count("calls", filter=Q(calls__outcome=CallOutcome.PENDING)),
    ).values_list("pk", "submitted_at", "state_changed_at", "template__idle_timeout_s",
                  "last_queued", "last_finished", "pending")
    out = []
    for pk, submitted, changed, timeout, queued, finished, pending in annotated:
        last = max(t for t in (submitted, changed, queued, finished) if t is not None)
        out.append(Activity(pk, submitted, last, bool(pending), timeout or default))
    return out


def idle_workflows(now: datetime | None = None) -> list[Activity]:
    """Unfinished workflows past their idle timeout with no call in flight."""
    now = now or timezone.now()
    timeouts = [t for t in AgentTemplate.objects.exclude(idle_timeout_s=None)
                .values_list("idle_timeout_s", flat=True)]
    shortest = min([default_idle_timeout_s(), *timeouts])
    quiet = Workflow.objects.filter(state_changed_at__lte=now - timedelta(seconds=shortest))
    return [a for a in activity(quiet) if not a.in_flight and a.reap_at <= now]


def reap_idle(now: datetime | None = None) -> list[int]:
    """End idle workflows as ``abandoned``; returns their ids. Each one is re-checked under its
    row lock, so a call that arrives meanwhile (the gateway locks the same row) keeps it alive."""
    from controlplane.workflows import services

    now = now or timezone.now()
    reaped = []
    for candidate in idle_workflows(now):
        with transaction.atomic():
            workflow = (Workflow.objects.select_for_update(of=("self",))
                        .select_related("tenant", "template")
                        .filter(pk=candidate.workflow_id).first())
            if workflow is None or workflow.state in TERMINAL_STATES:
                continue
            fresh = activity(Workflow.objects.filter(pk=workflow.pk))
            if not fresh or fresh[0].in_flight or fresh[0].reap_at > timezone.now():
                continue
            try:
                services.finish_workflow(workflow, WorkflowState.ABANDONED)
            except IllegalTransition:
                continue
        reaped.append(workflow.pk)
        log.info("workflow %s of %s abandoned after %ss idle", workflow.pk,
                 workflow.tenant.slug, candidate.idle_timeout_s)
    return reaped


def concurrency_retry_after_s(tenant_id: int, now: datetime | None = None) -> int:
    """Seconds until a tenant at its concurrency quota can expect a slot to free.

    The soonest of: the moment the reaper would end one of its idle workflows, and the moment
    one of its unfinished workflows is expected to complete: the median remaining time of the
    tenant's latest completed workflows that lasted longer than this one has so far (its
    median completion time conditioned on its age). At least 1 second; at most the idle
    timeout, by when an idle slot is surely free.
    """
    now = now or timezone.now()
    active = activity(Workflow.objects.filter(tenant_id=tenant_id))
    ceiling = max([default_idle_timeout_s(), *(a.idle_timeout_s for a in active)])
    if not active:
        return 1
    soonest = min(((a.reap_at - now).total_seconds() if not a.in_flight else a.idle_timeout_s)
                  for a in active)
    tcts = list(Workflow.objects.filter(tenant_id=tenant_id, state=WorkflowState.COMPLETED,
                                        tct_s__isnull=False)
                .order_by("-finished_at").values_list("tct_s", flat=True)[:RECENT_COMPLETIONS])
    for a in active:
        age = (now - a.submitted_at).total_seconds()
        longer = [t for t in tcts if t > age]
        if longer:
            soonest = min(soonest, statistics.median(longer) - age)
    return math.ceil(min(max(soonest, 1.0), ceiling))

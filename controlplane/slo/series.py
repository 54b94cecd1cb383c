"""Building the per-tenant SLO series (``SloPoint``) from recorded workflows and calls.

Every run (celery beat ``aggregate-slo-series``, every ``SAGA_SLO_INTERVAL_S``; the demo's
in-process runner) writes, for every active tenant and every tier of ``SAGA_SLO_TIERS``
(``resolution:retention`` seconds), one point per window that closed since the tier's last
point. Windows are aligned to multiples of the resolution; after a long outage the first
catch-up point covers the whole gap (``MAX_CATCH_UP``), so cumulative figures never skip data.
Each point is computed from the rows themselves:

* workflows that **ended** in the window, by state and SLO status (``Workflow.slo_status``):
  ``attainment`` = met / (met + missed), abandoned workflows counted as missed, unevaluable
  ones (no isolated estimate) counted apart and never as met, failed and cancelled ones apart;
  slowdown p50/p95/p99 of the evaluated completions, TCT p50/p95 of the completions (numpy's
  linear percentiles, as ``saga bench``), and their recompute tokens;
* calls that **finished** in the window: count, failures, prompt / cached / output tokens and
  the cached share;
* quota rejections (429s) counted in the window.

Cumulative figures (``cum_*`` and ``totals``, the counters and histograms behind ``/metrics``)
are the tier's previous point plus the window; a tenant's first point starts the workflow counts
(and the slowdown histogram) from everything recorded before it, the call, token, routing,
latency and quota-rejection counts from zero. Points older than a tier's
retention are deleted, except the newest one per tenant (the cumulative figures live on in it).
Each new point is pushed to the Channels groups ``slo`` and ``slo.tenant.<id>``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max, OuterRef, Subquery, Sum
from django.utils import timezone

from controlplane.slo.models import QuotaRejection, SloPoint
from controlplane.tenants.models import Tenant
from controlplane.workflows.models import Call, CallOutcome, SloStatus, Workflow
from controlplane.workflows.states import WorkflowState

MAX_CATCH_UP = 60
"""Windows of one tier written per run at most; an older gap becomes one wider point."""
QUOTA_COUNT_RETENTION = timedelta(days=2)
SERIES_GROUP = "slo"

SLOWDOWN_BUCKETS = (1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
OVERHEAD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
HISTOGRAMS = {"slowdown": SLOWDOWN_BUCKETS, "call_latency": LATENCY_BUCKETS,
              "overhead": OVERHEAD_BUCKETS}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def tenant_group(tenant_id: int) -> str:
    return f"{SERIES_GROUP}.tenant.{tenant_id}"


def tiers() -> list[tuple[int, int]]:
    """(resolution, retention) seconds per tier, finest first (``SAGA_SLO_TIERS``)."""
    out = []
    for item in settings.SAGA_SLO_TIERS:
        resolution, _, retention = str(item).partition(":")
        res, keep = int(resolution), int(retention or 0)
        if res < 1 or keep < res:
            raise ValueError(f"SAGA_SLO_TIERS entry {item!r}: need resolution >= 1 s and "
                             "retention >= resolution")
        out.append((res, keep))
    return sorted(set(out))


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else None


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def empty_histogram(buckets: tuple[float, ...]) -> dict[str, Any]:
    return {"counts": [0] * (len(buckets) + 1), "sum": 0.0}


def observe(histogram: dict[str, Any], buckets: tuple[float, ...], value: float) -> None:
    """Add ``value`` to the bucket it falls in (``counts`` are per bucket, the last one
    +Inf; ``/metrics`` makes them cumulative)."""
    index = next((i for i, bound in enumerate(buckets) if value <= bound), len(buckets))
    histogram["counts"][index] += 1
    histogram["sum"] += value


def merge(total: Mapping[str, Any], more: Mapping[str, Any]) -> dict[str, Any]:
    """Add two ``totals`` documents (nested dicts of counts, histograms with lists)."""
    out: dict[str, Any] = {key: value for key, value in total.items()}
    for key, value in more.items():
        mine = out.get(key)
        if isinstance(value, Mapping):
            out[key] = merge(mine if isinstance(mine, Mapping) else {}, value)
        elif isinstance(value, list):
            base = list(mine) if isinstance(mine, list) else []
            base += [0] * (len(value) - len(base))
            out[key] = [a + b for a, b in zip(base, value, strict=False)]
        else:
            out[key] = (mine or 0) + value
    return out


def workflow_totals(rows: Iterable[tuple[str, str, float | None, float | None]]
                    ) -> dict[str, Any]:
    """Counters of ended workflows: ``finished["state:slo_status"]`` and the slowdown histogram
    of the evaluated completions."""
    finished: dict[str, int] = {}
    slowdown = empty_histogram(SLOWDOWN_BUCKETS)
    for state, status, tct, isolated in rows:
        key = f"{state}:{status or 'none'}"
        finished[key] = finished.get(key, 0) + 1
        if status in (SloStatus.MET, SloStatus.MISSED) and tct is not None and isolated:
            observe(slowdown, SLOWDOWN_BUCKETS, tct / isolated)
    return {"finished": finished, "slowdown": slowdown}


def routing_policy() -> str:
    """The cluster's active routing policy (routing decisions are attributed to it)."""
    from controlplane.policies.services import current_activation

    activation = current_activation("routing")
    return activation.policy.plugin_name if activation is not None else "none"


def window(tenant_id: int, start: datetime, end: datetime, policy: str
           ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the point's own figures, the increment of its ``totals``) of one tenant's window."""
    ended = list(Workflow.objects.filter(tenant_id=tenant_id, finished_at__gte=start,
                                         finished_at__lt=end)
                 .values_list("state", "slo_status", "tct_s", "est_isolated_s",
                              "recompute_tokens"))
    totals = workflow_totals(row[:4] for row in ended)
    status = {key: sum(n for k, n in totals["finished"].items() if k.endswith(f":{key}"))
              for key in (SloStatus.MET.value, SloStatus.MISSED.value,
                          SloStatus.UNEVALUABLE.value)}
    by_state = {state: sum(1 for row in ended if row[0] == state) for state in (
        WorkflowState.COMPLETED, WorkflowState.ABANDONED, WorkflowState.FAILED,
        WorkflowState.CANCELLED)}
    slowdowns = [tct / iso for state, st, tct, iso, _r in ended
                 if st in (SloStatus.MET, SloStatus.MISSED) and tct is not None and iso]
    tcts = [tct for state, _st, tct, _iso, _r in ended
            if state == WorkflowState.COMPLETED and tct is not None]

    calls = Call.objects.filter(workflow__tenant_id=tenant_id, finished_at__gte=start,
                                finished_at__lt=end)
    latency = empty_histogram(LATENCY_BUCKETS)
    overhead = empty_histogram(OVERHEAD_BUCKETS)
    n_calls = failed = prompt = cached = output = 0
    for outcome, p, c, o, queued, started, finished in calls.values_list(
            "outcome", "prompt_tokens", "cached_tokens", "output_tokens", "queued_at",
            "started_at", "finished_at"):
        n_calls += 1
        prompt, cached, output = prompt + p, cached + c, output + o
        if outcome != CallOutcome.COMPLETED:
            failed += 1
            continue
        observe(latency, LATENCY_BUCKETS, max((finished - queued).total_seconds(), 0.0))
        if started is not None:
            observe(overhead, OVERHEAD_BUCKETS, max((started - queued).total_seconds(), 0.0))

    previous_node = Call.objects.filter(workflow=OuterRef("workflow"),
                                        seq=OuterRef("seq") - 1).values("node_id")[:1]
    routing: dict[str, int] = {}
    for seq, node, before in (Call.objects.filter(workflow__tenant_id=tenant_id,
                                                  queued_at__gte=start, queued_at__lt=end)
                              .annotate(before=Subquery(previous_node))
                              .values_list("seq", "node_id", "before")):
        outcome = "new" if seq == 0 else ("home" if node == before else "moved")
        key = f"{policy}:{outcome}"
        routing[key] = routing.get(key, 0) + 1

    quota = {row["quota"]: row["n"] for row in QuotaRejection.objects.filter(
        tenant_id=tenant_id, second__gte=start, second__lt=end).values("quota").annotate(
            n=Sum("count"))}
    figures = {
        "completed": by_state[WorkflowState.COMPLETED],
        "abandoned": by_state[WorkflowState.ABANDONED],
        "failed": by_state[WorkflowState.FAILED],
        "cancelled": by_state[WorkflowState.CANCELLED],
        "slo_met": status[SloStatus.MET], "slo_missed": status[SloStatus.MISSED],
        "slo_unevaluable": status[SloStatus.UNEVALUABLE],
        "attainment": _share(status[SloStatus.MET],
                             status[SloStatus.MET] + status[SloStatus.MISSED]),
        "slowdown_p50": percentile(slowdowns, 50), "slowdown_p95": percentile(slowdowns, 95),
        "slowdown_p99": percentile(slowdowns, 99),
        "tct_p50_s": percentile(tcts, 50), "tct_p95_s": percentile(tcts, 95),
        "recompute_tokens": sum(r or 0 for *_rest, r in ended),
        "calls": n_calls, "calls_failed": failed, "prompt_tokens": prompt,
        "cached_tokens": cached, "output_tokens": output, "cached_share": _share(cached, prompt),
        "quota_rejections": sum(quota.values()),
    }
    totals.update(call_latency=latency, overhead=overhead, routing=routing, quota=quota,
                  calls={"all": n_calls, "failed": failed},
                  tokens={"prompt": prompt, "cached": cached, "output": output})
    return figures, totals


def baseline(tenant_id: int, before: datetime) -> dict[str, Any]:
    """A tenant's first point starts from every workflow that ended before it."""
    rows = Workflow.objects.filter(tenant_id=tenant_id, finished_at__lt=before).values_list(
        "state", "slo_status", "tct_s", "est_isolated_s")
    return workflow_totals(rows.iterator())


def cumulative(totals: Mapping[str, Any], slo_percentile: float) -> dict[str, Any]:
    """The ``cum_*`` fields of a point from its ``totals``."""
    finished = totals.get("finished", {})

    def count(status: str) -> int:
        return sum(n for key, n in finished.items() if key.endswith(f":{status}"))

    met, missed = count(SloStatus.MET.value), count(SloStatus.MISSED.value)
    attainment = _share(met, met + missed)
    return {"cum_slo_met": met, "cum_slo_missed": missed,
            "cum_slo_unevaluable": count(SloStatus.UNEVALUABLE.value),
            "cum_attainment": attainment,
            "objective_met": None if attainment is None else attainment * 100 >= slo_percentile}


def _aligned(moment: datetime, resolution: int) -> datetime:
    seconds = math.floor((moment - EPOCH).total_seconds() / resolution) * resolution
    return EPOCH + timedelta(seconds=seconds)


def _windows(last_end: datetime | None, end: datetime, resolution: int
             ) -> list[tuple[datetime, datetime]]:
    step = timedelta(seconds=resolution)
    if last_end is None:
        return [(end - step, end)]
    if last_end >= end:
        return []
    n = math.ceil((end - last_end) / step)
    if n <= MAX_CATCH_UP:
        edges = [max(last_end, end - step * (n - i)) for i in range(n)] + [end]
    else:
        edges = [last_end] + [end - step * (MAX_CATCH_UP - 1 - i) for i in range(MAX_CATCH_UP)]
    return list(zip(edges, edges[1:], strict=False))


def advance(tenant: Tenant, resolution: int, end: datetime, policy: str) -> list[SloPoint]:
    """Write the tenant's points of one tier for the windows closed by ``end``."""
    last = (SloPoint.objects.filter(tenant=tenant, resolution_s=resolution)
            .order_by("-window_end").first())
    spans = _windows(last.window_end if last else None, end, resolution)
    if not spans:
        return []
    totals = last.totals if last is not None else baseline(tenant.pk, spans[0][0])
    written = []
    for start, stop in spans:
        figures, increment = window(tenant.pk, start, stop, policy)
        totals = merge(totals, increment)
        point = SloPoint(tenant=tenant, resolution_s=resolution, window_start=start,
                         window_end=stop, totals=totals, **figures,
                         **cumulative(totals, tenant.slo_percentile))
        try:
            with transaction.atomic():
                point.save()
        except IntegrityError:
            break  # another aggregator wrote this window first; it carries on from there
        written.append(point)
    return written


def prune(now: datetime) -> int:
    """Delete points past their tier's retention (not a tenant's newest one per tier) and
    quota counts older than ``QUOTA_COUNT_RETENTION``."""
    deleted = 0
    for resolution, retention in tiers():
        tier = SloPoint.objects.filter(resolution_s=resolution)
        newest = tier.values("tenant").annotate(newest=Max("id")).values_list("newest", flat=True)
        old = tier.filter(window_end__lt=now - timedelta(seconds=retention)).exclude(
            pk__in=list(newest))
        deleted += old.delete()[0]
    QuotaRejection.objects.filter(second__lt=now - QUOTA_COUNT_RETENTION).delete()
    return deleted


def point_data(point: SloPoint, tenant: str) -> dict[str, Any]:
    """A point as the API and the Channels groups carry it."""
    data = {field.name: getattr(point, field.name) for field in SloPoint._meta.concrete_fields
            if field.name not in ("id", "tenant", "totals")}
    data["tenant"] = tenant
    for key in ("window_start", "window_end"):
        data[key] = data[key].isoformat()
    return data


def aggregate(now: datetime | None = None) -> list[SloPoint]:
    """One aggregation run (module docstring); returns the points written."""
    now = now or timezone.now()
    policy = routing_policy()
    written: list[SloPoint] = []
    tenants = list(Tenant.objects.filter(is_active=True))
    for resolution, _retention in tiers():
        end = _aligned(now, resolution)
        for tenant in tenants:
            written += advance(tenant, resolution, end, policy)
    prune(now)
    if written:
        slugs = {t.pk: t.slug for t in tenants}
        _push([(p.tenant_id, point_data(p, slugs[p.tenant_id])) for p in written])
    return written


def _push(points: list[tuple[int, dict[str, Any]]]) -> None:
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        return
    send = async_to_sync(layer.group_send)
    for tenant_id, data in points:
        message = {"type": "slo.point", "point": data}
        send(SERIES_GROUP, message)
        send(tenant_group(tenant_id), message)

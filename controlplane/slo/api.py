"""SLO endpoints: a tenant's own attainment and series (tenant key), any tenant's (admin).

``GET /api/slo`` and ``GET /api/slo/series`` (``workflows`` scope) answer for the key's tenant;
``GET /api/admin/slo`` and ``GET /api/admin/tenants/{slug}/slo/series`` for any. A series is
read from the finest tier (``SAGA_SLO_TIERS``) that still holds ``since``, or the finest one at
least as coarse as ``resolution``; points are oldest first (at most ``limit``, the newest).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Path, Query, Router, Schema

from controlplane.api.auth import admin_auth, tenant_of, workflows_auth
from controlplane.api.errors import errors, not_found
from controlplane.slo import series
from controlplane.slo.models import SloPoint
from controlplane.tenants.models import Tenant
from controlplane.validation import Slug, UtcBound

router = Router(tags=["slo"], auth=workflows_auth)
admin_router = Router(tags=["admin: slo"], auth=admin_auth)

MAX_POINTS = 5000


class PointOut(Schema):
    tenant: str
    resolution_s: int
    window_start: datetime
    window_end: datetime
    completed: int
    abandoned: int
    failed: int
    cancelled: int
    slo_met: int
    slo_missed: int = Field(description="abandoned workflows included")
    slo_unevaluable: int = Field(description="completed without an isolated estimate; never met")
    attainment: float | None = Field(description="met / (met + missed) in the window")
    slowdown_p50: float | None
    slowdown_p95: float | None
    slowdown_p99: float | None
    tct_p50_s: float | None
    tct_p95_s: float | None
    recompute_tokens: int
    calls: int
    calls_failed: int
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    cached_share: float | None
    quota_rejections: int
    cum_slo_met: int
    cum_slo_missed: int
    cum_slo_unevaluable: int
    cum_attainment: float | None
    objective_met: bool | None


class SeriesOut(Schema):
    tenant: str
    resolution_s: int
    points: list[PointOut]


class SloSummary(Schema):
    tenant: str
    slo_slowdown: float
    slo_percentile: float
    slo: str = Field(description="e.g. 'p95 <= 2x'")
    latest: PointOut | None = Field(description="the newest point of the finest tier")


class SeriesFilters(Schema):
    since: UtcBound | None = Field(None, description="default: one hour ago")
    until: UtcBound | None = None
    resolution: int | None = Field(None, ge=1, le=10**7,
                                   description="seconds: the finest tier at least this coarse "
                                   "(default: the finest that still holds `since`)")
    limit: int = Field(1000, ge=1, le=MAX_POINTS)


def _point(point: SloPoint, slug: str) -> PointOut:
    return PointOut(**series.point_data(point, slug))


def summary(tenant: Tenant) -> SloSummary:
    finest = series.tiers()[0][0]
    latest = (SloPoint.objects.filter(tenant=tenant, resolution_s=finest)
              .order_by("-window_end").first())
    return SloSummary(tenant=tenant.slug, slo_slowdown=tenant.slo_slowdown,
                      slo_percentile=tenant.slo_percentile, slo=tenant.slo_label,
                      latest=_point(latest, tenant.slug) if latest else None)


def read_series(tenant: Tenant, filters: SeriesFilters) -> SeriesOut:
    now = timezone.now()
    since = filters.since or now - timedelta(hours=1)
    available = series.tiers()
    if filters.resolution is not None:
        coarser = [res for res, _keep in available if res >= filters.resolution]
        resolution = coarser[0] if coarser else available[-1][0]
    else:
        covering = [res for res, keep in available if now - timedelta(seconds=keep) <= since]
        resolution = covering[0] if covering else available[-1][0]
    rows = SloPoint.objects.filter(tenant=tenant, resolution_s=resolution,
                                   window_end__gt=since)
    if filters.until is not None:
        rows = rows.filter(window_start__lt=filters.until)
    newest = list(rows.order_by("-window_start")[:filters.limit])
    return SeriesOut(tenant=tenant.slug, resolution_s=resolution,
                     points=[_point(p, tenant.slug) for p in reversed(newest)])


@router.get("/slo", response={200: SloSummary, **errors(401, 403)},
            summary="The tenant's SLO and its latest attainment")
def own_summary(request: HttpRequest) -> SloSummary:
    return summary(tenant_of(request))


@router.get("/slo/series", response={200: SeriesOut, **errors(401, 403, 422)},
            summary="The tenant's SLO time series")
def own_series(request: HttpRequest, filters: Query[SeriesFilters]) -> SeriesOut:
    return read_series(tenant_of(request), filters)


@admin_router.get("/slo", response={200: list[SloSummary], **errors(401, 403)},
                  summary="Every tenant's SLO and latest attainment")
def all_summaries(request: HttpRequest) -> list[SloSummary]:
    return [summary(t) for t in Tenant.objects.order_by("slug")]


@admin_router.get("/tenants/{slug}/slo/series",
                  response={200: SeriesOut, **errors(401, 403, 404, 422)},
                  summary="A tenant's SLO time series")
def tenant_series(request: HttpRequest, slug: Path[Slug],
                  filters: Query[SeriesFilters]) -> SeriesOut:
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is None:
        raise not_found(f"tenant {slug!r}")
    return read_series(tenant, filters)

"""What the tenant pages show: the SLO series (as ``GET /api/admin/tenants/{slug}/slo/series``
returns it), the slowdown distribution of recent workflows, and quota use."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from django.utils import timezone

from controlplane.tenants.models import Tenant
from controlplane.workflows.models import SloStatus, Workflow
from controlplane.workflows.states import TERMINAL_STATES

SERIES_WINDOW = timedelta(hours=1)
"""How far back the charts start (the API's default ``since``)."""
DISTRIBUTION_WORKFLOWS = 500
"""The newest evaluated workflows the slowdown histogram is drawn from."""


def tenant_fields(tenant: Tenant) -> dict[str, Any]:
    return {"slug": tenant.slug, "name": tenant.name, "weight": tenant.weight,
            "slo_slowdown": tenant.slo_slowdown, "slo_percentile": tenant.slo_percentile,
            "slo": tenant.slo_label, "max_concurrent_workflows": tenant.max_concurrent_workflows,
            "tokens_per_minute": tenant.tokens_per_minute, "is_active": tenant.is_active}


def series(tenant: Tenant) -> dict[str, Any]:
    from controlplane.slo.api import SeriesFilters, read_series

    since = timezone.now() - SERIES_WINDOW
    return read_series(tenant, SeriesFilters(since=since)).model_dump(mode="json")


def slowdowns(tenant: Tenant) -> list[float]:
    """Slowdowns of the tenant's newest evaluated workflows (met or missed, completed)."""
    rows = (Workflow.objects.filter(tenant=tenant, slo_status__in=[SloStatus.MET,
                                                                   SloStatus.MISSED],
                                    tct_s__isnull=False, est_isolated_s__gt=0)
            .order_by("-finished_at").values_list("tct_s", "est_isolated_s")
            [:DISTRIBUTION_WORKFLOWS])
    return [tct / isolated for tct, isolated in rows]


def quota_use(tenant: Tenant) -> dict[str, Any]:
    from controlplane.quotas import token_counter
    from controlplane.stores import StoreUnavailable

    active = tenant.workflows.exclude(state__in=TERMINAL_STATES).count()
    try:
        tokens: int | None = token_counter().used(tenant.pk, int(time.time() // 60))
    except StoreUnavailable:
        tokens = None
    return {"active_workflows": active, "max_concurrent_workflows":
            tenant.max_concurrent_workflows, "tokens_this_minute": tokens,
            "tokens_per_minute": tenant.tokens_per_minute}


def overview(tenant: Tenant) -> dict[str, Any]:
    return {"tenant": tenant_fields(tenant), "series": series(tenant),
            "slowdowns": slowdowns(tenant), "quota": quota_use(tenant)}


def all_overviews() -> list[dict[str, Any]]:
    """Every tenant's figures for the tenants page (series included, no distribution)."""
    return [{"tenant": tenant_fields(t), "series": series(t), "quota": quota_use(t)}
            for t in Tenant.objects.order_by("slug")]

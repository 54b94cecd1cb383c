"""SLO series points, read-only (written by the aggregation task)."""

from django.contrib import admin

from controlplane.admin_audit import ReadOnlyAdminMixin
from controlplane.slo.models import SloPoint


@admin.register(SloPoint)
class SloPointAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("tenant", "resolution_s", "window_start", "completed", "abandoned",
                    "slo_met", "slo_missed", "slo_unevaluable", "attainment", "cum_attainment",
                    "slowdown_p50", "slowdown_p95", "calls", "quota_rejections")
    list_filter = ("resolution_s", "tenant")
    list_select_related = ("tenant",)
    date_hierarchy = "window_start"
    exclude = ("totals",)

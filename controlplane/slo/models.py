"""Per-tenant SLO time series and the quota-rejection counts they include.

``SloPoint``: one tenant, one window, at one resolution (tier). The aggregation task
(``controlplane.slo.series``) writes a point per tenant for every closed window of every tier,
each computed from the recorded workflows and calls themselves (so a 5-minute point's
percentiles are exact, not merged from 10-second ones); older points are pruned tier by tier, so
the series gets coarser with age.
"""

from __future__ import annotations

from django.db import models

from controlplane.tenants.models import Tenant


class SloPoint(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="slo_points")
    resolution_s = models.PositiveIntegerField(help_text="The tier: nominal window length.")
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()

    # workflows that ended in the window, by how they ended
    completed = models.PositiveIntegerField(default=0)
    abandoned = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    cancelled = models.PositiveIntegerField(default=0)
    slo_met = models.PositiveIntegerField(default=0)
    slo_missed = models.PositiveIntegerField(default=0, help_text="Abandoned workflows included.")
    slo_unevaluable = models.PositiveIntegerField(
        default=0, help_text="Completed workflows without an isolated estimate (never met).")
    attainment = models.FloatField(
        null=True, blank=True,
        help_text="met / (met + missed) in the window; null: none evaluated.")
    slowdown_p50 = models.FloatField(null=True, blank=True)
    slowdown_p95 = models.FloatField(null=True, blank=True)
    slowdown_p99 = models.FloatField(null=True, blank=True)
    tct_p50_s = models.FloatField(null=True, blank=True)
    tct_p95_s = models.FloatField(null=True, blank=True)
    recompute_tokens = models.PositiveBigIntegerField(
        default=0, help_text="Of the workflows that ended in the window.")

    # calls that finished in the window
    calls = models.PositiveIntegerField(default=0)
    calls_failed = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    cached_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cached_share = models.FloatField(null=True, blank=True, help_text="cached / prompt tokens.")
    quota_rejections = models.PositiveIntegerField(default=0)

    # since the tenant's series began
    cum_slo_met = models.PositiveBigIntegerField(default=0)
    cum_slo_missed = models.PositiveBigIntegerField(default=0)
    cum_slo_unevaluable = models.PositiveBigIntegerField(default=0)
    cum_attainment = models.FloatField(null=True, blank=True)
    objective_met = models.BooleanField(
        null=True, blank=True,
        help_text="cum_attainment reaches the tenant's slo_percentile; null: none evaluated.")
    totals = models.JSONField(
        default=dict, blank=True,
        help_text="Cumulative counters and histogram buckets behind /metrics.")

    class Meta:
        ordering = ["tenant", "resolution_s", "window_start"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "resolution_s", "window_start"],
                                    name="slo_point_unique_window"),
        ]
        indexes = [models.Index(fields=["resolution_s", "window_end"],
                                name="slo_point_tier_end")]

    def __str__(self) -> str:
        return f"{self.tenant_id}@{self.resolution_s}s {self.window_start:%Y-%m-%d %H:%M:%S}"


class QuotaRejection(models.Model):
    """Requests a quota refused, per tenant, quota and second (one row per busy second)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    quota = models.CharField(max_length=32)
    second = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "quota", "second"],
                                    name="quota_rejection_unique_second"),
        ]
        indexes = [models.Index(fields=["second"], name="quota_rejection_second")]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.quota} {self.second}: {self.count}"

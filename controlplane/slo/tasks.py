"""Periodic SLO work, run by celery beat (schedule in settings.CELERY_BEAT_SCHEDULE) or by the
demo's in-process runner (``controlplane.periodic``)."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="controlplane.slo.tasks.aggregate_slo_series")
def aggregate_slo_series() -> int:
    """Write the per-tenant SLO points of every window that closed; returns how many."""
    from controlplane.slo.series import aggregate

    return len(aggregate())

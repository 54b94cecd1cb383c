"""Celery tasks of what-if runs: one per (policy set x load point) of a run
(``controlplane.whatif.jobs``)."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="controlplane.whatif.tasks.run_whatif_task", acks_late=True)
def run_whatif_task(task_id: int) -> None:
    from controlplane.whatif.jobs import execute

    execute(task_id)

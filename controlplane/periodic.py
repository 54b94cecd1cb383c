"""The periodic work of ``CELERY_BEAT_SCHEDULE`` run inside one process, for ``saga demo``.

A deployment runs celery beat (and workers); the demo has neither, so it runs this asyncio task
instead: each scheduled task is called at its interval, in the store threads (never on the
event loop), one run of a task at a time. A task that raises is logged and runs again at its
next interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from django.conf import settings

from controlplane.stores import in_db_thread

log = logging.getLogger("saga.periodic")


def scheduled(schedule: Mapping[str, Mapping[str, Any]] | None = None
              ) -> list[tuple[str, str, float]]:
    """(entry name, task name, interval seconds) of every entry with a plain interval."""
    entries = settings.CELERY_BEAT_SCHEDULE if schedule is None else schedule
    out = []
    for name, entry in entries.items():
        interval = entry.get("schedule")
        if isinstance(interval, int | float) and interval > 0:
            out.append((name, str(entry["task"]), float(interval)))
    return out


def run_task(task_name: str) -> Any:
    from controlplane.celery import app

    return app.tasks[task_name].run()


async def run_periodic(stop: asyncio.Event, schedule: Mapping[str, Mapping[str, Any]] | None
                       = None) -> None:
    """Run the scheduled tasks until ``stop`` is set."""
    from controlplane.celery import app

    app.loader.import_default_modules()  # autodiscover the tasks as a worker would
    entries = scheduled(schedule)
    if not entries:
        await stop.wait()
        return
    due = {name: time.monotonic() + interval for name, _task, interval in entries}
    while not stop.is_set():
        name, task, interval = min(entries, key=lambda e: due[e[0]])
        delay = due[name] - time.monotonic()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
                return
            except TimeoutError:
                pass
        try:
            await in_db_thread(run_task)(task)
        except Exception:
            log.exception("periodic task %s (%s) failed", name, task)
        due[name] = max(due[name] + interval, time.monotonic())

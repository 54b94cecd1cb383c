"""What-if runs as jobs: created (validated, the window's workload built once and stored),
fanned out as one Celery task per (policy set x load point), each task's progress stored and
announced to the console, cancellable, and merged into ``results.json`` and the report once
the last task ends. A task that fails marks the run failed with its reason; the other tasks'
results stay readable (merged without the failed column)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlplane.whatif import candidates as candidate_sets
from controlplane.whatif import replay
from controlplane.whatif.errors import WhatIfInputError
from controlplane.whatif.models import FINISHED, RunStatus, WhatIfRun, WhatIfTask

log = logging.getLogger("saga.whatif")

WHATIF_GROUP = "ui.whatif"
PROGRESS_EVERY_S = 0.5
MAX_TASKS = 64


def run_group(run_id: int) -> str:
    return f"ui.whatif.{run_id}"


class Cancelled(Exception):
    """The run was cancelled while this task ran."""


@dataclass
class RunSpec:
    since: datetime
    until: datetime
    policies: list[str]
    tenants: list[str] = field(default_factory=list)
    cluster: dict[str, Any] = field(default_factory=lambda: {"mode": "as-recorded"})
    loads: list[float] = field(default_factory=lambda: [1.0])


def create_run(spec: RunSpec, actor: str, user: Any = None) -> WhatIfRun:
    """Validate everything and store the run and its tasks (not started: ``dispatch``)."""
    from controlplane.whatif.workload import build
    from nodeagent.workloads.compact import workload_to_dict

    if not spec.loads:
        raise WhatIfInputError("loads", "at least one load point is needed")
    for x in spec.loads:
        if not 0 < x <= 100:
            raise WhatIfInputError("loads", f"load points must be in (0, 100], got {x:g}")
    if len(set(spec.loads)) != len(spec.loads):
        raise WhatIfInputError("loads", "a load point is listed twice")
    recorded = build(spec.since, spec.until, spec.tenants)
    sets = candidate_sets.resolve(spec.policies, spec.since, spec.until, recorded.start)
    if len(sets) * len(spec.loads) > MAX_TASKS:
        raise WhatIfInputError("policies", f"{len(sets)} sets x {len(spec.loads)} loads is more "
                               f"than {MAX_TASKS} tasks")
    mode = spec.cluster.get("mode", "as-recorded")
    if mode == "as-recorded":
        shape = replay.recorded_cluster(recorded.nodes)
    elif mode == "fixed":
        gpus, profile = spec.cluster.get("gpus"), spec.cluster.get("profile")
        if not isinstance(gpus, int) or isinstance(gpus, bool):
            raise WhatIfInputError("cluster.gpus", "gpus must be an integer")
        if not isinstance(profile, str) or not profile:
            raise WhatIfInputError("cluster.profile", "profile is required with gpus")
        shape = replay.fixed_cluster(gpus, profile)
    else:
        raise WhatIfInputError("cluster.mode", "cluster mode must be as-recorded or fixed")
    recording = {"estimated": recorded.estimated, "counts": recorded.counts,
                 "live": recorded.live, "shape": shape.as_json(),
                 "candidates": [c.as_json() for c in sets]}
    with transaction.atomic():
        run = WhatIfRun.objects.create(
            created_by=user, actor=str(actor)[:200], since=spec.since, until=spec.until,
            tenants=list(spec.tenants), policies=[c.name for c in sets],
            cluster={**spec.cluster, **shape.as_json()}, loads=list(spec.loads),
            workload=workload_to_dict(recorded.workload), recording=recording)
        WhatIfTask.objects.bulk_create([
            WhatIfTask(run=run, index=i, policy=c.name, load=x,
                       total=len(recorded.workload.workflows))
            for i, (x, c) in enumerate((x, c) for x in spec.loads for c in sets)])
    announce(run.pk)
    return run


def start(spec: RunSpec, actor: Any, user: Any = None) -> WhatIfRun:
    """What the REST API and the console do to start a run: create it (``WhatIfInputError``
    naming the field), audit it (``actor``: a user or an API key), then dispatch it."""
    from controlplane.audit.models import record

    run = create_run(spec, actor=str(actor), user=user)
    record(actor=actor, action="whatif.start", obj=run,
           after={"policies": run.policies, "loads": run.loads, "tenants": run.tenants})
    dispatch(run)
    return run


def cancel_audited(run: WhatIfRun, actor: Any) -> bool:
    """``cancel``, audited when it stopped the run (False: it had already finished)."""
    from controlplane.audit.models import record

    if not cancel(run):
        return False
    record(actor=actor, action="whatif.cancel", obj=run)
    return True


def in_process() -> bool:
    """Run tasks in this process (the demo, eager Celery) rather than on workers."""
    return bool(getattr(settings, "SAGA_WHATIF_IN_PROCESS", False)
                or settings.CELERY_TASK_ALWAYS_EAGER)


def dispatch(run: WhatIfRun) -> None:
    """Queue the run's tasks on Celery workers, or run them in a background thread of this
    process (one at a time) when there are no workers to send them to."""
    from controlplane.whatif.tasks import run_whatif_task

    ids = list(run.tasks.order_by("index").values_list("pk", flat=True))
    if in_process():
        def work() -> None:
            from django.db import close_old_connections

            try:
                for task_id in ids:
                    run_whatif_task.apply(args=(task_id,))
            finally:
                close_old_connections()

        threading.Thread(target=work, name=f"whatif-{run.pk}", daemon=True).start()
        return
    queue = getattr(settings, "SAGA_WHATIF_QUEUE", "") or None  # None: Celery's default

    def send() -> None:
        for task_id in ids:
            run_whatif_task.apply_async((task_id,), queue=queue)

    transaction.on_commit(send)


def execute(task_id: int) -> None:
    """The body of one Celery task."""
    task = WhatIfTask.objects.select_related("run").get(pk=task_id)
    run = task.run
    with transaction.atomic():
        claimed = WhatIfTask.objects.filter(pk=task_id, status=RunStatus.QUEUED).update(
            status=RunStatus.RUNNING, started_at=timezone.now(),
            worker=f"{socket.gethostname()}:{os.getpid()}")
        if claimed:
            WhatIfRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
                status=RunStatus.RUNNING)
    if not claimed:  # cancelled before it started, or a redelivery of a task that ran
        return
    announce(run.pk)
    candidate = next(candidate_sets.Candidate.from_json(c)
                     for c in run.recording["candidates"] if c["name"] == task.policy)
    shape = replay.ClusterShape(**run.recording["shape"])
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_EVERY_S:
            return
        last[0] = now
        WhatIfTask.objects.filter(pk=task_id).update(done=done, total=total)
        if WhatIfRun.objects.filter(pk=run.pk, status=RunStatus.CANCELLED).exists():
            raise Cancelled
        announce(run.pk)

    try:
        stored = replay.run_task(run.workload, shape, candidate, task.load, progress)
    except Cancelled:
        WhatIfTask.objects.filter(pk=task_id).update(status=RunStatus.CANCELLED,
                                                     finished_at=timezone.now())
    except Exception as exc:
        log.exception("what-if task %s failed", task_id)
        WhatIfTask.objects.filter(pk=task_id).update(
            status=RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000],
            finished_at=timezone.now())
    else:
        WhatIfTask.objects.filter(pk=task_id).update(
            status=RunStatus.SUCCEEDED, result=stored, done=len(stored["tasks"]),
            finished_at=timezone.now())
    finish_if_done(run.pk)
    announce(run.pk)


def finish_if_done(run_id: int) -> None:
    """Once every task has ended: merge, write the report, settle the run's status."""
    with transaction.atomic():
        run = WhatIfRun.objects.select_for_update().get(pk=run_id)
        tasks = list(run.tasks.order_by("index"))
        if any(t.status not in FINISHED for t in tasks) or run.results_json:
            return
        failed = [t for t in tasks if t.status == RunStatus.FAILED]
        if run.status != RunStatus.CANCELLED:
            run.status = RunStatus.FAILED if failed else RunStatus.SUCCEEDED
        if failed:
            run.error = "; ".join(f"{t.policy} @ load {t.load:g}: {t.error}" for t in failed)
        done = [t for t in tasks if t.status == RunStatus.SUCCEEDED]
        if done:
            run.results, run.report_html = merged(run, done)
        else:
            run.results = {}
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "error", "results_json", "report_html", "finished_at"])


def merged(run: WhatIfRun, done: list[WhatIfTask]) -> tuple[dict[str, Any], str]:
    from controlplane.whatif.agreement import agreement
    from controlplane.whatif.report import render

    shape = replay.ClusterShape(**run.recording["shape"])
    command = {"since": run.since.isoformat(), "until": run.until.isoformat(),
               "tenants": run.tenants, "policies": run.policies, "loads": run.loads,
               "load": run.loads[0], "cluster": run.cluster}
    rows = [(t.policy, t.load, t.result) for t in done]
    results = replay.merge(command, run.workload, shape, run.recording, rows)
    results["run_id"] = run.pk
    live_run = next((t for t in done if t.policy == candidate_sets.ACTIVE and t.load == 1.0),
                    None)
    if live_run is not None:
        results["agreement"] = agreement(run.recording["live"], live_run.result)
    main = [r for r in rows if r[1] == run.loads[0]]
    return results, render(results, main)


def cancel(run: WhatIfRun) -> bool:
    """Stop a run: queued tasks never start, running ones stop at their next progress report.
    False when it had already finished."""
    with transaction.atomic():
        changed = WhatIfRun.objects.filter(pk=run.pk).exclude(
            status__in=list(FINISHED)).update(status=RunStatus.CANCELLED)
        if changed:
            WhatIfTask.objects.filter(run=run, status=RunStatus.QUEUED).update(
                status=RunStatus.CANCELLED, finished_at=timezone.now())
    if changed:
        finish_if_done(run.pk)
        announce(run.pk)
    return bool(changed)


def announce(run_id: int) -> None:
    """Tell the what-if pages (this run's and the list) that the run moved."""
    from controlplane.console.events import send_now

    message = {"type": "whatif.changed", "run": run_id}
    try:
        send_now([(run_group(run_id), message), (WHATIF_GROUP, message)])
    except Exception as exc:  # the page misses one update; the job must not fail for it
        log.warning("what-if update for run %s not sent: %s", run_id, exc)


def run_payload(run: WhatIfRun) -> dict[str, Any]:
    """A run as the API and the console show it."""
    tasks = list(run.tasks.order_by("index"))
    return {
        "id": run.pk, "status": run.status, "actor": run.actor, "error": run.error,
        "since": run.since, "until": run.until, "tenants": run.tenants,
        "policies": run.policies, "loads": run.loads, "cluster": run.cluster,
        "created_at": run.created_at, "finished_at": run.finished_at,
        "estimated": run.recording.get("estimated", []),
        "counts": run.recording.get("counts", {}),
        "tasks": [{"index": t.index, "policy": t.policy, "load": t.load, "status": t.status,
                   "done": t.done, "total": t.total, "worker": t.worker, "error": t.error}
                  for t in tasks],
        "results": run.results,
        "has_report": bool(run.report_html),
    }

"""A what-if sweep on two real Celery workers (separate processes sharing PostgreSQL and Redis,
as workers on several machines do): its tasks spread over both, and the merged result equals
the same run's tasks executed one after the other in this process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from controlplane.celery import app as celery_app
from controlplane.whatif import jobs
from controlplane.whatif.models import WhatIfRun
from tests.whatif.traffic import record_traffic

ROOT = Path(__file__).resolve().parents[2]
WALL_FIELDS = {"sim_wall_s", "wall_seconds", "run_id"}


@pytest.fixture
def workers(redis_url: str, settings: Any) -> Iterator[tuple[str, list[str]]]:
    queue = f"whatif-test-{uuid.uuid4().hex[:8]}"
    settings.SAGA_WHATIF_QUEUE = queue
    db = connection.settings_dict
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "controlplane.settings.test",
           "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "REDIS_URL": redis_url}
    names = [f"w{i}-{queue}@test" for i in (1, 2)]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "celery", "--quiet", "-A", "controlplane.celery", "worker", "--pool",
         "solo", "-n", name, "-Q", queue, "--prefetch-multiplier", "1", "--without-gossip",
         "--without-mingle", "-l", "warning"], cwd=ROOT, env=env)
        for name in names]
    try:
        deadline = time.monotonic() + 60
        while True:
            answered = {n for r in (celery_app.control.ping(destination=names, timeout=1.0)
                                    or []) for n in r}
            if answered == set(names):
                break
            assert all(p.poll() is None for p in procs), "a worker exited"
            assert time.monotonic() < deadline, f"workers not ready (answered: {answered})"
        yield queue, names
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


def without_wall(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_wall(v) for k, v in value.items() if k not in WALL_FIELDS}
    if isinstance(value, list):
        return [without_wall(v) for v in value]
    return value


@pytest.mark.django_db(transaction=True)
def test_a_sweep_spreads_over_two_workers_and_merges_as_one(
        workers: tuple[str, list[str]]) -> None:
    start = timezone.now() - timedelta(minutes=20)
    record_traffic(start, {"acme": 6, "noisy": 10}, calls=4, spacing_s=2.0)
    spec = jobs.RunSpec(start - timedelta(seconds=1), start + timedelta(minutes=5),
                        ["active", "saga", "baseline"], loads=[1.0, 2.0, 4.0])
    parallel = jobs.create_run(spec, actor="test")
    t0 = time.perf_counter()
    jobs.dispatch(parallel)
    deadline = time.monotonic() + 120
    while not WhatIfRun.objects.get(pk=parallel.pk).results_json:
        assert time.monotonic() < deadline, list(parallel.tasks.values("status", "worker"))
        time.sleep(0.1)
    two_workers_s = time.perf_counter() - t0
    parallel.refresh_from_db()
    assert parallel.status == "succeeded", parallel.error
    hosts = {w.rsplit(":", 1)[0] for w in parallel.tasks.values_list("worker", flat=True)}
    pids = {w for w in parallel.tasks.values_list("worker", flat=True)}
    assert len(pids) == 2, pids  # both worker processes ran some of the 9 tasks
    assert len(hosts) == 1

    serial = jobs.create_run(spec, actor="test")
    t0 = time.perf_counter()
    for task_id in serial.tasks.order_by("index").values_list("pk", flat=True):
        jobs.execute(task_id)
    one_process_s = time.perf_counter() - t0
    serial.refresh_from_db()
    assert without_wall(parallel.results) == without_wall(serial.results)
    print(f"\n9 tasks: two workers {two_workers_s:.2f} s, one process {one_process_s:.2f} s")

"""``saga replay``: the cluster's recorded traffic replayed under candidate policy sets.

    saga replay --since 2h [--until T] [--tenant SLUG ...] --policies active,saga,baseline
                [--gpus N --profile P | --cluster as-recorded] [--loads 1,1.5] --out DIR

Builds the window's workload from the database, runs one task per (policy set x load point) in
this process (``--queue`` sends them to the Celery workers instead and waits), and writes
``results.json`` and ``report.html`` with ``saga bench``'s columns. Bad input exits 2 with one
line on stderr.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_when(text: str, now: datetime, what: str) -> datetime:
    """``2h``/``30m``/``90s``/``1d`` ago, or an ISO 8601 time (UTC when it has no offset)."""
    from datetime import UTC

    from controlplane.whatif.errors import WhatIfInputError

    match = _DURATION.match(text.strip())
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise WhatIfInputError(what, f"--{what} {text!r}: expected a duration (2h, 30m, 90s, "
                               "1d) or an ISO 8601 time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") \
            from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", required=True, help="window start: 2h (ago) or an ISO time")
    p.add_argument("--until", default=None, help="window end (default now)")
    p.add_argument("--tenant", action="append", default=[], metavar="SLUG",
                   help="replay only this tenant's traffic (repeatable; default all)")
    p.add_argument("--policies", type=_names, required=True,
                   help="comma-separated policy sets: active (what ran live, swaps included), "
                        "named sets (saga, baseline, ...) or NAME=EV:RO:AD:FA; the first is the "
                        "reference for speedups")
    p.add_argument("--cluster", choices=("as-recorded",), default=None,
                   help="the nodes that served the window (default without --gpus)")
    p.add_argument("--gpus", type=int, default=None, help="a cluster of N GPUs of --profile")
    p.add_argument("--profile", default=None, help="instance profile with --gpus")
    p.add_argument("--loads", type=_floats, default=[1.0],
                   help="load points: the recorded arrival rate times each (default 1)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--queue", action="store_true",
                   help="run the tasks on the Celery workers (REDIS_URL) and wait for them")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("replay", help="replay recorded traffic under candidate policy "
                              "sets on the simulated cluster (what-if)", description=__doc__)
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def spec_from_args(args: argparse.Namespace) -> Any:
    from django.utils import timezone

    from controlplane.whatif.errors import WhatIfInputError
    from controlplane.whatif.jobs import RunSpec

    now = timezone.now()
    since = parse_when(args.since, now, "since")
    until = parse_when(args.until, now, "until") if args.until else now
    if args.gpus is not None or args.profile is not None:
        if args.cluster:
            raise WhatIfInputError("cluster", "--cluster as-recorded and --gpus/--profile "
                                   "exclude each other")
        if args.gpus is None or args.profile is None:
            raise WhatIfInputError("cluster", "--gpus and --profile go together")
        cluster: dict[str, Any] = {"mode": "fixed", "gpus": args.gpus, "profile": args.profile}
    else:
        cluster = {"mode": "as-recorded"}
    return RunSpec(since=since, until=until, policies=list(args.policies),
                   tenants=list(args.tenant), cluster=cluster, loads=list(args.loads))


def run(args: argparse.Namespace) -> int:
    """Execute ``saga replay``; return the exit status."""
    from controlplane.cli import _setup_django

    _setup_django()
    from controlplane.whatif import jobs
    from controlplane.whatif.errors import WhatIfInputError

    out: Path = args.out
    try:
        if out.exists() and not out.is_dir():
            raise WhatIfInputError("out", f"--out {out} exists and is not a directory")
        run_ = jobs.create_run(spec_from_args(args), actor="saga replay")
    except WhatIfInputError as exc:
        print(f"saga replay: {exc.message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    wall0 = time.perf_counter()
    if args.queue:
        jobs.dispatch(run_)
        _wait(run_, args.quiet)
    else:
        for task in run_.tasks.order_by("index"):
            if not args.quiet:
                print(f"replaying {task.policy} @ load {task.load:g} "
                      f"({task.total} workflows)", flush=True)
            jobs.execute(task.pk)
    run_.refresh_from_db()
    results = run_.results or {}
    results["wall_seconds"] = time.perf_counter() - wall0
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False),
                                      encoding="utf-8")
    (out / "report.html").write_text(run_.report_html, encoding="utf-8")
    if results.get("policies"):
        from nodeagent.bench.cli import print_table

        print_table(results)
    agree = results.get("agreement")
    if agree and agree.get("max_relative_error") is not None:
        print("live vs replay (the active set at load 1): worst per-tenant relative error "
              f"{agree['max_relative_error']:.1%} (TCT and slowdown means)")
    print(f"what-if run {run_.pk}: {run_.status}; wrote {out / 'results.json'} and "
          f"{out / 'report.html'}")
    if run_.status != "succeeded":
        print(f"saga replay: {run_.error or run_.status}", file=sys.stderr)
        return 1
    return 0


def _wait(run_: Any, quiet: bool) -> None:
    from controlplane.whatif.models import WhatIfRun

    while True:
        state = WhatIfRun.objects.get(pk=run_.pk)
        tasks = list(state.tasks.order_by("index"))
        if not quiet:
            print("  ".join(f"{t.policy}@{t.load:g} {t.status} {t.done}/{t.total}"
                            for t in tasks), flush=True)
        if state.is_finished and state.results_json:
            return
        time.sleep(1.0)

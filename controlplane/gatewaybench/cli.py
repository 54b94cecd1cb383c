"""``saga bench-gateway``: the gateway's added latency and sustained calls per second.

``register(subparsers)`` adds the subcommand to the ``saga`` console script; ``run(args)``
executes it and returns the exit status: 0 when every call succeeded, 1 when some failed (the
numbers are then suspect), 2 with one line on stderr for bad input, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from controlplane.gatewaybench import profile
from controlplane.gatewaybench.cluster import Backends, Cluster, ClusterError
from controlplane.gatewaybench.load import (
    Agent,
    PathRecord,
    Target,
    new_client,
    request_body,
    run_batch,
)
from controlplane.gatewaybench.stats import (
    CONTROL_PLANE,
    NODE,
    Comparison,
    batch_plan,
    cpu_per_call,
    plateau_reached,
    summarize,
    sweep_levels,
)

EXIT_BAD_INPUT = 2
EXIT_CALLS_FAILED = 1
EXIT_INTERRUPTED = 130
TARGET_ADDED_P99_MS = 5.0
TARGET_CALLS_PER_S = 500.0
MAX_CONCURRENCY = 1024
READY_TIMEOUT_S = 30.0
TEMPLATE = "gateway-bench"


class BenchInputError(ValueError):
    """Bad benchmark options; the message names the option."""


@dataclass(frozen=True, slots=True)
class Options:
    calls: int
    concurrency: int
    max_concurrency: int  # 0: no sweep for the maximum throughput
    speed: float
    max_tokens: int
    calls_per_workflow: int
    batch: int
    warmup: int
    gateway_workers: int
    backends: Backends
    out: Path | None
    profile: Path | None = None

    def levels(self) -> list[int]:
        """Concurrency levels in the order they run; the sweep doubles from 1 and always
        includes ``concurrency``."""
        if not self.max_concurrency:
            return [self.concurrency]
        return sorted(set(sweep_levels(1, self.max_concurrency)) | {self.concurrency})

    def batch_for(self, level: int) -> int:
        """Batches hold at least four calls per client, so ramp-up and drain stay small."""
        return max(self.batch, 4 * level)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench-gateway", help="measure the gateway's added latency and calls/s on this machine",
        description="Start the control plane (saga serve) and one simulated node (saga node) as "
        "separate processes on loopback, then send the same calls straight to the node and "
        "through the gateway in alternating batches, at increasing concurrency.")
    p.add_argument("--calls", type=int, default=2000,
                   help="calls per path at each concurrency (default 2000)")
    p.add_argument("--concurrency", type=int, default=16,
                   help="clients in flight for the headline numbers (default 16)")
    p.add_argument("--max-concurrency", type=int, default=128,
                   help="sweep concurrency 1, 2, 4, ... up to this until gateway throughput "
                        "stops growing; 0 = no sweep (default 128)")
    p.add_argument("--speed", type=float, default=1e6,
                   help="simulated seconds per wall second on the node; high = the node answers "
                        "at once and overhead dominates (default 1e6)")
    p.add_argument("--max-tokens", type=int, default=4, help="tokens per answer (default 4)")
    p.add_argument("--calls-per-workflow", type=int, default=20,
                   help="calls an agent makes in one workflow before starting another "
                        "(default 20)")
    p.add_argument("--batch", type=int, default=250,
                   help="calls per alternating batch (default 250, at least 4 x concurrency)")
    p.add_argument("--warmup", type=int, default=200,
                   help="unrecorded calls per path before measuring (default 200)")
    p.add_argument("--gateway-workers", type=int, default=1,
                   help="saga serve --workers: gateway processes (default 1; >1 needs "
                        "PostgreSQL and Redis)")
    p.add_argument("--database-url", default=None,
                   help="PostgreSQL URL (default $DATABASE_URL; unset or empty = SQLite)")
    p.add_argument("--redis-url", default=None,
                   help="Redis URL (default $REDIS_URL; unset or empty = in-memory state)")
    p.add_argument("--out", type=Path, default=None, help="also write the results to this JSON")
    p.add_argument("--profile", type=Path, default=None, metavar="PATH",
                   help="sample the control plane with py-spy while the levels are measured "
                        "(CPU only: samples holding the GIL), write the collapsed stacks to "
                        "PATH and print where its CPU goes")


def validate(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Options:
    """Check the options and resolve the backends; raises BenchInputError naming the option."""
    environ = dict(os.environ) if environ is None else environ
    if args.calls < 1:
        raise BenchInputError(f"--calls must be >= 1, got {args.calls}")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        raise BenchInputError(f"--concurrency must be in 1..{MAX_CONCURRENCY}, "
                              f"got {args.concurrency}")
    if args.max_concurrency and not 1 <= args.max_concurrency <= MAX_CONCURRENCY:
        raise BenchInputError(f"--max-concurrency must be 0 or in 1..{MAX_CONCURRENCY}, "
                              f"got {args.max_concurrency}")
    if not args.speed > 0 or args.speed == float("inf"):
        raise BenchInputError(f"--speed must be a finite number > 0, got {args.speed}")
    if args.max_tokens < 1:
        raise BenchInputError(f"--max-tokens must be >= 1, got {args.max_tokens}")
    if args.calls_per_workflow < 1:
        raise BenchInputError(f"--calls-per-workflow must be >= 1, got {args.calls_per_workflow}")
    if args.batch < 1:
        raise BenchInputError(f"--batch must be >= 1, got {args.batch}")
    if args.warmup < 0:
        raise BenchInputError(f"--warmup must be >= 0, got {args.warmup}")
    if not 1 <= args.gateway_workers <= 64:
        raise BenchInputError(f"--gateway-workers must be in 1..64, got {args.gateway_workers}")
    database = args.database_url if args.database_url is not None else environ.get(
        "DATABASE_URL", "")
    if database and not database.startswith(("postgres://", "postgresql://")):
        raise BenchInputError(f"--database-url must be a postgres:// URL, got {database!r}")
    redis = args.redis_url if args.redis_url is not None else environ.get("REDIS_URL", "")
    if redis and not redis.startswith(("redis://", "rediss://")):
        raise BenchInputError(f"--redis-url must be a redis:// URL, got {redis!r}")
    if args.out is not None and not args.out.parent.is_dir():
        raise BenchInputError(f"--out: directory {str(args.out.parent)!r} does not exist")
    if args.profile is not None:
        if not args.profile.parent.is_dir():
            raise BenchInputError(f"--profile: directory {str(args.profile.parent)!r} does not "
                                  "exist")
        try:
            profile.py_spy()
        except profile.ProfileError as exc:
            raise BenchInputError(str(exc)) from None
    if args.gateway_workers > 1 and not (database and redis):
        raise BenchInputError("--gateway-workers above 1 needs a PostgreSQL --database-url and "
                              "a --redis-url")
    return Options(args.calls, args.concurrency, args.max_concurrency, args.speed,
                   args.max_tokens, args.calls_per_workflow, args.batch, args.warmup,
                   args.gateway_workers, Backends(database or None, redis or None), args.out,
                   args.profile)


def run(args: argparse.Namespace) -> int:
    try:
        options = validate(args)
    except BenchInputError as exc:
        print(f"saga bench-gateway: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    console = Console(stderr=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    cluster = Cluster(options.backends)
    try:
        console.print(f"[bold]saga bench-gateway[/]: {options.backends.describe()}; "
                      f"{os.cpu_count()} CPUs")
        cluster.start(options.speed, lambda text: console.print(f"  {text}"),
                      options.gateway_workers)
        comparisons, failures, shares = asyncio.run(_measure(cluster, options, console))
    except (ClusterError, profile.ProfileError) as exc:
        print(f"saga bench-gateway: error: {exc}", file=sys.stderr)
        return EXIT_CALLS_FAILED
    except KeyboardInterrupt:
        print("saga bench-gateway: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
        cluster.stop()
    report = build_report(options, comparisons)
    if shares is not None:
        report["profile"] = {"collapsed_stacks": str(options.profile), "gil_sample_shares": shares}
    _print_report(report, comparisons)
    if options.out is not None:
        options.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"results written to {options.out}")
    for failure in failures:
        print(f"saga bench-gateway: {failure}", file=sys.stderr)
    return EXIT_CALLS_FAILED if failures else 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


# ---------------------------------------------------------------------- measuring
def _targets(cluster: Cluster) -> tuple[Target, Target]:
    path = "/v1/chat/completions"
    json_type = {"Content-Type": "application/json"}
    # Straight to the node, with the headers the gateway itself would add.
    direct = Target("direct", f"{cluster.node_url}{path}",
                    {**json_type, "Authorization": f"Bearer {cluster.node_api_key}",
                     "X-Saga-Tenant": "gateway-bench", "X-Saga-Template": TEMPLATE}, "direct")
    gateway = Target("gateway", f"{cluster.gateway_url}{path}",
                     {**json_type, "Authorization": f"Bearer {cluster.tenant_key}",
                      "X-Saga-Template": TEMPLATE}, "gateway")
    return direct, gateway


async def _wait_routable(target: Target, body: bytes) -> None:
    """The gateway sees a new node within its directory refresh; retry until it routes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT_S
    async with new_client(1) as client:
        while True:
            response = await client.post(target.url, content=body,
                                         headers={**target.headers, "X-Saga-Workflow": "ready"})
            if response.status_code == 200:
                return
            if loop.time() > deadline:
                raise ClusterError(f"the gateway still answers {response.status_code} after "
                                   f"{READY_TIMEOUT_S:g} s: {response.text[:200]}")
            await asyncio.sleep(0.2)


async def _measure(cluster: Cluster, options: Options, console: Console
                   ) -> tuple[list[Comparison], list[str], dict[str, float] | None]:
    direct, gateway = _targets(cluster)
    body = request_body(cluster.model, options.max_tokens)
    await _wait_routable(gateway, body)
    comparisons: list[Comparison] = []
    failures: list[str] = []
    levels = options.levels()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        if options.warmup:
            task = progress.add_task("warm-up", total=2 * options.warmup)
            await _compare(direct, gateway, body, options, options.concurrency,
                           options.warmup, "warmup", lambda n: progress.advance(task, n))
        recorder = None
        if options.profile is not None:
            recorder = profile.Recorder(cluster.process_of(CONTROL_PLANE), options.profile)
            recorder.start()
        try:
            await _measure_levels(cluster, options, direct, gateway, body, levels, progress,
                                  comparisons, failures)
        finally:
            if recorder is not None:
                recorder.stop()
    shares = (profile.breakdown(options.profile.read_text())
              if options.profile is not None else None)
    return comparisons, failures, shares


async def _measure_levels(cluster: Cluster, options: Options, direct: Target, gateway: Target,
                          body: bytes, levels: list[int], progress: Progress,
                          comparisons: list[Comparison], failures: list[str]) -> None:
    for level in levels:
        task = progress.add_task(f"concurrency {level:>4}", total=2 * options.calls)
        cpu_before = cluster.cpu_seconds()
        records = await _compare(direct, gateway, body, options, level, options.calls,
                                 f"c{level}", lambda n, t=task: progress.advance(t, n))
        cpu = cpu_per_call(cpu_before, cluster.cpu_seconds(), options.calls)
        for name, record in zip(("direct", "gateway"), records, strict=True):
            if record.errors:
                failures.append(f"{record.errors} of {options.calls} {name} calls failed at "
                                f"concurrency {level}; first: {record.first_error}")
        if any(not r.latencies_s for r in records):
            break
        comparisons.append(Comparison(
            level, *(summarize(r.latencies_s, r.errors, r.busy_s) for r in records),
            cpu_ms_per_call=cpu))
        sweep = [c.gateway.calls_per_s for c in comparisons]
        if level >= options.concurrency and plateau_reached(sweep):
            break


async def _compare(direct: Target, gateway: Target, body: bytes, options: Options, level: int,
                   calls: int, tag: str, advance: Any) -> tuple[PathRecord, PathRecord]:
    """Alternate batches between the two paths (ABBA order), same concurrency and calls."""
    records = (PathRecord(), PathRecord())
    agents = tuple([Agent(f"{t.workflow_prefix}-{tag}-a{i}", options.calls_per_workflow)
                    for i in range(level)] for t in (direct, gateway))
    async with new_client(level) as to_node, new_client(level) as to_gateway:
        plan = (to_node, direct, agents[0], records[0]), (to_gateway, gateway, agents[1],
                                                           records[1])
        for index, size in enumerate(batch_plan(calls, options.batch_for(level))):
            order = plan if index % 2 == 0 else plan[::-1]
            for client, target, clients_agents, record in order:
                await run_batch(client, target, clients_agents, body, size, record, advance)
    return records


# ---------------------------------------------------------------------- reporting
def build_report(options: Options, comparisons: list[Comparison]) -> dict[str, Any]:
    """The results as JSON-ready data, with the headline level, the unloaded one (concurrency
    1: the added-latency target is about a gateway that is not queueing) and the best
    throughput."""
    headline = next((c for c in comparisons if c.concurrency == options.concurrency), None)
    unloaded = next((c for c in comparisons if c.concurrency == 1), None)
    best = max(comparisons, key=lambda c: c.gateway.calls_per_s, default=None)
    summary: dict[str, Any] = {}
    if headline is not None and best is not None:
        summary = {
            "concurrency": headline.concurrency,
            "added_p50_ms": headline.added_p50_ms, "added_p99_ms": headline.added_p99_ms,
            "gateway_calls_per_s": headline.gateway.calls_per_s,
            "unloaded_added_p50_ms": unloaded.added_p50_ms if unloaded else None,
            "unloaded_added_p99_ms": unloaded.added_p99_ms if unloaded else None,
            "max_gateway_calls_per_s": best.gateway.calls_per_s,
            "max_at_concurrency": best.concurrency,
            # None: concurrency 1 was not measured, so the target was not checked
            "added_p99_target_met": (unloaded.added_p99_ms <= TARGET_ADDED_P99_MS
                                     if unloaded else None),
            "calls_per_s_target_met": best.gateway.calls_per_s >= TARGET_CALLS_PER_S,
        }
    return {
        "settings": {
            "calls": options.calls, "concurrency": options.concurrency,
            "max_concurrency": options.max_concurrency, "speed": options.speed,
            "max_tokens": options.max_tokens, "calls_per_workflow": options.calls_per_workflow,
            "batch": options.batch, "warmup": options.warmup,
            "gateway_workers": options.gateway_workers,
        },
        "backends": options.backends.describe(),
        "cpu_count": os.cpu_count(),
        # Other work on the machine competes with all four processes: say how much there was.
        "load_average_1m_at_end": os.getloadavg()[0],
        "targets": {"added_p99_ms": TARGET_ADDED_P99_MS, "calls_per_s": TARGET_CALLS_PER_S},
        "note": "added latency = gateway percentile minus direct percentile (calls are not "
                "paired, so no per-call difference exists)",
        "levels": [c.as_dict() for c in comparisons],
        "summary": summary,
    }


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _print_profile(console: Console, report: dict[str, Any],
                   comparisons: list[Comparison]) -> None:
    """The control plane's CPU per call, split by the profile's shares."""
    costs = [c.cpu_ms_per_call.get(CONTROL_PLANE) for c in comparisons]
    known = [cost for cost in costs if cost is not None]
    per_call = sum(known) / len(known) if known else None
    table = Table(title="where the control plane's CPU goes (py-spy, samples holding the GIL, "
                        "all measured levels)")
    table.add_column("part of a call")
    table.add_column("share", justify="right")
    table.add_column("ms per call", justify="right")
    for name, share in report["profile"]["gil_sample_shares"].items():
        table.add_row(name, f"{100 * share:.1f}%",
                      "n/a" if per_call is None else f"{share * per_call:.2f}")
    console.print(table)
    console.print(f"collapsed stacks: {report['profile']['collapsed_stacks']}")


def _print_report(report: dict[str, Any], comparisons: list[Comparison]) -> None:
    console = Console(width=max(Console().width, 150))
    table = Table(title="direct to the node vs through the gateway (latency in ms)")
    for column in ("conc.", "direct p50", "p95", "p99", "gateway p50", "p95", "p99",
                   "added p50", "added p99", "direct calls/s", "gateway calls/s",
                   "CPU ms/call: control plane", "node"):
        table.add_column(column, justify="right")
    for c in comparisons:
        d, g = c.direct, c.gateway
        table.add_row(str(c.concurrency), f"{d.p50_ms:.2f}", f"{d.p95_ms:.2f}",
                      f"{d.p99_ms:.2f}", f"{g.p50_ms:.2f}", f"{g.p95_ms:.2f}", f"{g.p99_ms:.2f}",
                      f"{c.added_p50_ms:+.2f}", f"{c.added_p99_ms:+.2f}",
                      f"{d.calls_per_s:.0f}", f"{g.calls_per_s:.0f}",
                      *(_ms(c.cpu_ms_per_call.get(name)) for name in (CONTROL_PLANE, NODE)))
    console.print(table)
    if "profile" in report:
        _print_profile(console, report, comparisons)
    console.print(f"backends: {report['backends']}; {report['cpu_count']} CPUs, load average "
                  f"{report['load_average_1m_at_end']:.2f} at the end. {report['note']}.")
    s = report["summary"]
    if not s:
        console.print("no level completed: no summary")
        return
    verdict = {True: "[green]met[/]", False: "[red]missed[/]"}
    console.print(
        f"at concurrency {s['concurrency']}: added p50 {s['added_p50_ms']:.2f} ms, added p99 "
        f"{s['added_p99_ms']:.2f} ms; gateway {s['gateway_calls_per_s']:.0f} calls/s")
    if s["unloaded_added_p99_ms"] is None:
        console.print("unloaded (concurrency 1) not measured: the added-latency target "
                      f"(p99 <= {TARGET_ADDED_P99_MS:g} ms) was not checked")
    else:
        console.print(
            f"unloaded (concurrency 1): added p50 {s['unloaded_added_p50_ms']:.2f} ms, added "
            f"p99 {s['unloaded_added_p99_ms']:.2f} ms (target <= {TARGET_ADDED_P99_MS:g} ms: "
            f"{verdict[s['added_p99_target_met']]})")
    console.print(
        f"max gateway throughput {s['max_gateway_calls_per_s']:.0f} calls/s at concurrency "
        f"{s['max_at_concurrency']} (target >= {TARGET_CALLS_PER_S:g}: "
        f"{verdict[s['calls_per_s_target_met']]})")

"""``saga soak-gateway``: many concurrent agent loops through the gateway, then an audit of what
the control plane recorded against what the clients saw.

Each agent runs workflows of a few calls with tool pauses in between (the node scripts tool
calls with ``saga_sim``), as a real agent loop does, until the run's time is up. Clients give up
on a call after ``--client-timeout`` seconds, as impatient SDKs do. Afterwards every call of the
run must have exactly one terminal outcome, none may be recorded ``completed`` that its client
did not receive, and none may be recorded that no client sent.

Exit status: 0 when the audit is clean, 1 when it is not (or calls failed to start), 2 for bad
options, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from controlplane.gatewaybench.cluster import Backends, Cluster, ClusterError
from controlplane.gatewaybench.stats import percentile

EXIT_AUDIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
SETTLE_S = 20.0
TOOLS = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]


@dataclass(slots=True)
class Tally:
    """What the clients saw, per workflow and overall."""

    sent: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    timeouts: int = 0
    latencies_s: list[float] = field(default_factory=list)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "soak-gateway", help="many concurrent agent loops through the gateway, then an audit "
        "of every recorded call against what the clients received",
        description="Start the control plane and a simulated node as separate processes, run "
        "N concurrent agent loops (calls with tool pauses) through the gateway for a while, "
        "then check that every call was recorded exactly once with the outcome its client saw.")
    p.add_argument("--agents", type=int, default=1000, help="concurrent agent loops (1000)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load (60)")
    p.add_argument("--calls-per-workflow", type=int, default=5,
                   help="calls per workflow, tool pauses between them (5)")
    p.add_argument("--tool-s", type=float, default=0.5,
                   help="mean tool pause between calls, seconds (0.5)")
    p.add_argument("--output-tokens", type=int, default=16, help="tokens per answer (16)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="simulated seconds per wall second on the node (1: real time, as a "
                        "GPU would answer)")
    p.add_argument("--client-timeout", type=float, default=30.0,
                   help="a client gives up on a call after this many seconds (30)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--database-url", default=None, help="PostgreSQL URL (default $DATABASE_URL)")
    p.add_argument("--redis-url", default=None, help="Redis URL (default $REDIS_URL)")
    p.add_argument("--out", type=Path, default=None, help="also write the results to this JSON")
    p.set_defaults(handler=run)


def _validate(args: argparse.Namespace) -> Backends:
    if not 1 <= args.agents <= 20000:
        raise ValueError(f"--agents must be in 1..20000, got {args.agents}")
    if not 0 < args.duration <= 3600:
        raise ValueError(f"--duration must be in (0, 3600] seconds, got {args.duration}")
    if args.calls_per_workflow < 1:
        raise ValueError(f"--calls-per-workflow must be >= 1, got {args.calls_per_workflow}")
    if args.tool_s < 0 or args.output_tokens < 1 or not args.speed > 0:
        raise ValueError("--tool-s must be >= 0, --output-tokens >= 1 and --speed > 0")
    if not args.client_timeout > 0:
        raise ValueError(f"--client-timeout must be > 0, got {args.client_timeout}")
    database = args.database_url if args.database_url is not None else os.environ.get(
        "DATABASE_URL", "")
    redis = args.redis_url if args.redis_url is not None else os.environ.get("REDIS_URL", "")
    if not database.startswith(("postgres://", "postgresql://")):
        raise ValueError("a PostgreSQL --database-url (or DATABASE_URL) is required: the audit "
                         "is of what the production store recorded")
    if not redis.startswith(("redis://", "rediss://")):
        raise ValueError("a --redis-url (or REDIS_URL) is required")
    if args.out is not None and not args.out.parent.is_dir():
        raise ValueError(f"--out: directory {str(args.out.parent)!r} does not exist")
    return Backends(database, redis)


def run(args: argparse.Namespace) -> int:
    try:
        backends = _validate(args)
    except ValueError as exc:
        print(f"saga soak-gateway: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    console = Console(stderr=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    cluster = Cluster(backends)
    try:
        cluster.start(args.speed, lambda text: console.print(f"  {text}"))
        tally, wall_s = asyncio.run(_load(cluster, args, console))
        console.print(f"  load done; letting the control plane settle (up to {SETTLE_S:g} s)")
        report = _audit(cluster, tally, wall_s, args)
    except ClusterError as exc:
        print(f"saga soak-gateway: error: {exc}", file=sys.stderr)
        return EXIT_AUDIT_FAILED
    except KeyboardInterrupt:
        print("saga soak-gateway: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
        cluster.stop()
    _print(report)
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"results written to {args.out}")
    return 0 if report["audit_clean"] else EXIT_AUDIT_FAILED


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


async def _load(cluster: Cluster, args: argparse.Namespace,
                console: Console) -> tuple[Tally, float]:
    tally = Tally()
    rng = random.Random(args.seed)
    url = f"{cluster.gateway_url}/v1/chat/completions"
    limits = httpx.Limits(max_connections=args.agents, max_keepalive_connections=args.agents)
    started = time.monotonic()
    deadline = started + args.duration

    async def agent(index: int, client: httpx.AsyncClient) -> None:
        await asyncio.sleep(rng.uniform(0, min(args.duration / 4, 5.0)))  # staggered start
        workflow_no = 0
        while time.monotonic() < deadline:
            workflow = f"soak-{index}-{workflow_no}"
            workflow_no += 1
            messages: list[dict[str, Any]] = [
                {"role": "user", "content": f"task {workflow}: fix the failing test " * 8}]
            for step in range(args.calls_per_workflow):
                if time.monotonic() >= deadline:
                    return
                last = step == args.calls_per_workflow - 1
                body = {"model": cluster.model, "messages": messages, "tools": TOOLS,
                        "saga_sim": {"output_tokens": args.output_tokens,
                                     "finish_reason": "stop" if last else "tool_calls"}}
                reply = await _call(client, url, cluster.tenant_key, workflow, body, tally,
                                    args.client_timeout)
                if reply is None:
                    break  # the agent gives this task up, as a real one would on an error
                messages.append(reply["choices"][0]["message"])
                if not last:
                    call_id = (reply["choices"][0]["message"].get("tool_calls") or
                               [{"id": "call"}])[0]["id"]
                    await asyncio.sleep(rng.expovariate(1 / args.tool_s) if args.tool_s else 0)
                    messages.append({"role": "tool", "tool_call_id": call_id,
                                     "content": "tool output " * 10})

    async with httpx.AsyncClient(limits=limits, timeout=args.client_timeout) as client:
        progress = asyncio.create_task(_progress(tally, started, args.duration, console))
        try:
            await asyncio.gather(*(agent(i, client) for i in range(args.agents)))
        finally:
            progress.cancel()
    return tally, time.monotonic() - started


async def _call(client: httpx.AsyncClient, url: str, key: str, workflow: str,
                body: dict[str, Any], tally: Tally, timeout: float) -> dict[str, Any] | None:
    headers = {"Authorization": f"Bearer {key}", "X-Saga-Workflow": workflow,
               "X-Saga-Template": "soak"}
    tally.sent[workflow] += 1
    start = time.perf_counter()
    try:
        response = await client.post(url, json=body, headers=headers, timeout=timeout)
        content = response.json()
    except httpx.TimeoutException:
        tally.timeouts += 1
        tally.statuses["timeout"] += 1
        return None
    except (httpx.HTTPError, ValueError) as exc:
        tally.statuses[type(exc).__name__] += 1
        return None
    tally.statuses[str(response.status_code)] += 1
    if response.status_code != 200:
        return None
    tally.received[workflow] += 1
    tally.latencies_s.append(time.perf_counter() - start)
    return content  # type: ignore[no-any-return]


async def _progress(tally: Tally, started: float, duration: float, console: Console) -> None:
    while True:
        await asyncio.sleep(10)
        elapsed = time.monotonic() - started
        console.print(f"  {elapsed:5.0f} s of {duration:g}: {sum(tally.received.values())} "
                      f"calls answered, {tally.timeouts} client timeouts")


def _audit(cluster: Cluster, tally: Tally, wall_s: float,
           args: argparse.Namespace) -> dict[str, Any]:
    from django.db import connection

    from controlplane.workflows.models import Call, CallOutcome

    calls = Call.objects.filter(workflow__tenant__slug=cluster.tenant_slug)
    settle_until = time.monotonic() + SETTLE_S
    while calls.filter(outcome=CallOutcome.PENDING).exists() and time.monotonic() < settle_until:
        time.sleep(0.5)
    rows = list(calls.values_list("workflow__external_id", "seq", "outcome"))
    connection.close()
    outcomes = Counter(outcome for _wf, _seq, outcome in rows)
    completed: Counter[str] = Counter(wf for wf, _seq, o in rows if o == CallOutcome.COMPLETED)
    recorded: Counter[str] = Counter(wf for wf, _seq, _o in rows)
    unseen_completed = sum(max(0, completed[wf] - tally.received[wf]) for wf in completed)
    never_sent = sum(max(0, recorded[wf] - tally.sent[wf]) for wf in recorded)
    received_not_recorded = sum(max(0, tally.received[wf] - completed[wf])
                                for wf in tally.received)
    duplicates = len(rows) - len({(wf, seq) for wf, seq, _o in rows})
    answered = sum(tally.received.values())
    latencies = [s * 1000 for s in tally.latencies_s] or [0.0]
    report = {
        "settings": {k: v for k, v in vars(args).items()
                     if k in {"agents", "duration", "calls_per_workflow", "tool_s",
                              "output_tokens", "speed", "client_timeout", "seed"}},
        "cpu_count": os.cpu_count(),
        "wall_s": wall_s,
        "calls_sent": sum(tally.sent.values()),
        "calls_answered": answered,
        "answered_per_s": answered / wall_s if wall_s else 0.0,
        "latency_ms": {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
                       "p99": percentile(latencies, 99), "max": max(latencies)},
        "client_statuses": dict(tally.statuses),
        "client_timeouts": tally.timeouts,
        "recorded_outcomes": dict(outcomes),
        "audit": {
            "pending": outcomes.get(CallOutcome.PENDING, 0),
            "recorded_completed_not_received": unseen_completed,
            "received_not_recorded_completed": received_not_recorded,
            "recorded_never_sent": never_sent,
            "duplicates": duplicates,
        },
    }
    report["audit_clean"] = not any(report["audit"].values())
    return report


def _print(report: dict[str, Any]) -> None:
    console = Console(width=max(Console().width, 120))
    s = report["settings"]
    table = Table(title=f"{s['agents']} agent loops for {s['duration']:g} s through the gateway")
    table.add_column("measure")
    table.add_column("value", justify="right")
    lat = report["latency_ms"]
    for name, value in (
            ("calls sent / answered", f"{report['calls_sent']} / {report['calls_answered']}"),
            ("answered calls/s", f"{report['answered_per_s']:.1f}"),
            ("latency p50 / p95 / p99 ms", f"{lat['p50']:.0f} / {lat['p95']:.0f} / "
                                           f"{lat['p99']:.0f}"),
            ("client timeouts", str(report["client_timeouts"])),
            ("client statuses", ", ".join(f"{k}: {v}" for k, v in
                                          sorted(report["client_statuses"].items()))),
            ("recorded outcomes", ", ".join(f"{k}: {v}" for k, v in
                                            sorted(report["recorded_outcomes"].items()))),
            *((f"audit: {k.replace('_', ' ')}", str(v)) for k, v in report["audit"].items())):
        table.add_row(name, value)
    console.print(table)
    verdict = "[green]clean[/]" if report["audit_clean"] else "[red]FAILED[/]"
    console.print(f"audit: {verdict} ({report['cpu_count']} CPUs)")

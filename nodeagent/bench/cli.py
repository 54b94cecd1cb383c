"""The ``bench`` subcommand: argument parsing, progress bar, table, results.json, HTML report.

``register(subparsers)`` adds the subcommand to the ``saga`` console script; ``run(args)``
executes it and returns the exit status (2 with a one-line message on stderr for bad input).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nodeagent.bench.runner import ARRIVAL_MODES, BenchInputError, BenchSpec, run_bench

EXIT_BAD_INPUT = 2


class _ArgumentError(Exception):
    """Raised by the parser instead of exiting, so ``run`` controls the message and status."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's contract: must not return
        raise _ArgumentError(message)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") \
            from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workload", required=True,
                   help="weka:PATH | mooncake:PATH | azure:PATH | synthetic:swe|webarena|mix")
    p.add_argument("--sessions", type=int, default=None,
                   help="use N workflows: Weka, a random draw of N sessions (seeded by "
                        "--draw-seed); other sources, the first N (synthetic: N generated)")
    p.add_argument("--draw-seed", type=int, default=None,
                   help="seed of the Weka session draw (default: --seed)")
    p.add_argument("--half", choices=("tune", "holdout"), default=None,
                   help="Weka: draw only from this half of the sessions (a fixed hash split "
                        "of the file names): tune on one, report on the other")
    p.add_argument("--tenants", default=None,
                   help="tenant mix, e.g. 'prod:1:slo=2@95,noisy:1:noisy'")
    p.add_argument("--gpus", type=int, default=64, help="GPUs in the cluster (default 64)")
    p.add_argument("--profile", default="a100-llama3-70b-tp4", help="instance profile")
    p.add_argument("--load", type=float, default=0.8,
                   help="offered load relative to cluster capacity (default 0.8)")
    p.add_argument("--policies", type=_names, default=("baseline", "saga"),
                   help="comma-separated policy sets (named or "
                        "NAME=EVICTION:ROUTING:ADMISSION:FAIRNESS); the first is the reference "
                        "for speedups")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--sweep", type=_floats, default=(),
                   help="also run every policy at these loads, e.g. 0.5,0.8,1.0,1.2")
    p.add_argument("--arrivals", choices=ARRIVAL_MODES, default="poisson",
                   help="Poisson at --load (default) or the trace's own timing")
    p.add_argument("--rebalance-interval", type=float, default=1.0,
                   help="seconds of simulated time between work-stealing rounds")
    p.add_argument("--max-macro-steps", type=int, default=128,
                   help="engine steps aggregated into one event at most")
    p.add_argument("--horizon", type=float, default=None,
                   help="safety bound on simulated seconds (unfinished calls count as lost)")
    p.add_argument("--no-belady", action="store_true",
                   help="skip the offline recompute lower bound and Belady replay "
                        "(recompute_vs_belady = null)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``bench`` to a ``saga`` subparsers object; the parser's ``func`` is :func:`run`."""
    p = subparsers.add_parser("bench", help="compare policy sets on a simulated GPU cluster",
                              description=__doc__)
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def spec_from_args(args: argparse.Namespace) -> BenchSpec:
    if args.max_macro_steps < 1:
        raise BenchInputError("--max-macro-steps must be >= 1")
    if not args.rebalance_interval > 0:
        raise BenchInputError("--rebalance-interval must be > 0")
    return BenchSpec(
        workload=args.workload, gpus=args.gpus, profile=args.profile, load=args.load,
        policies=tuple(args.policies), seed=args.seed, sessions=args.sessions,
        draw_seed=args.draw_seed, half=args.half,
        tenants=args.tenants, sweep=tuple(args.sweep), arrivals=args.arrivals,
        rebalance_interval_s=args.rebalance_interval, max_macro_steps=args.max_macro_steps,
        horizon_s=args.horizon, belady_replay=not args.no_belady)


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e5 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def print_table(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"saga bench - load {results['command']['load']:g}, "
                        f"reference {results['reference_policy']}")
    cols = [("policy", None), ("tasks", "tasks"), ("lost", "calls_lost"),
            ("TCT p50 s", "tct_p50_s"), ("p95 s", "tct_p95_s"), ("p99 s", "tct_p99_s"),
            ("speedup", "tct_geomean_speedup"), ("p", "p_value"), ("SLO", "slo_attainment"),
            ("recompute", "recompute_tokens"), ("vs bound", "recompute_vs_belady"),
            ("KV useful", "kv_useful_utilisation"), ("tasks/h", "throughput_tasks_per_hour"),
            ("sustained tasks/h", "sustained_tasks_per_hour")]
    sweep = bool(results.get("sweep"))
    if sweep:
        cols.append(("peak tasks/h", "peak_throughput_tasks_per_hour"))
    for title, _ in cols:
        table.add_column(title, justify="right")
    for name, figs in results["policies"].items():
        table.add_row(name, *[_fmt(figs.get(k)) for _, k in cols[1:]])
    # A log file or pipe gets the whole table, not one squeezed to 80 columns.
    console = Console(stderr=False, width=None if sys.stdout.isatty() else 200)
    console.print(table)
    if sweep:
        st = Table(title="sweep: every policy set at every offered load")
        scols = [("load", None), ("policy", None), ("TCT p50 s", "tct_p50_s"),
                 ("speedup", "tct_geomean_speedup"), ("SLO", "slo_attainment"),
                 ("recompute", "recompute_tokens"), ("tasks/h", "throughput_tasks_per_hour"),
                 ("sustained tasks/h", "sustained_tasks_per_hour")]
        for title, _ in scols:
            st.add_column(title, justify="right")
        for load, by_policy in results["sweep"].items():
            for name, figs in by_policy.items():
                st.add_row(load, name, *[_fmt(figs.get(k)) for _, k in scols[2:]])
        console.print(st)
    print(f"wall {results['wall_seconds']:.1f} s")


def run(args: argparse.Namespace) -> int:
    """Execute ``saga bench``; return the exit status."""
    try:
        spec = spec_from_args(args)
        out: Path = args.out
        if out.exists() and not out.is_dir():
            raise BenchInputError(f"--out {out} exists and is not a directory")
        outcome = run_bench(spec) if args.quiet else _run_with_progress(spec)
    except BenchInputError as exc:
        print(f"saga bench: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(outcome.results, indent=2, allow_nan=False),
                                      encoding="utf-8")
    from nodeagent.bench.report import write_report

    write_report(out / "report.html", outcome.results, outcome.runs)
    print_table(outcome.results)
    print(f"wrote {out / 'results.json'} and {out / 'report.html'}")
    return 0


def _run_with_progress(spec: BenchSpec) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), transient=False) as progress:
        tasks: dict[str, Any] = {}

        def cb(label: str, done: int, total: int) -> None:
            tid = tasks.get(label)
            if tid is None:
                tid = tasks[label] = progress.add_task(label, total=total)
            progress.update(tid, completed=done)

        return run_bench(spec, cb)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="saga bench", description=__doc__)
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except _ArgumentError as exc:
        print(f"saga bench: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return run(args)

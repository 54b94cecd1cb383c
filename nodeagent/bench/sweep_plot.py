"""A load-sweep plot from ``saga bench --sweep`` results, as a static SVG for the README.

``python -m nodeagent.bench.sweep_plot results.json [more.json ...] --out sweep.svg`` draws, per
results file (one workload each, side by side), every policy set's paired TCT speedup over the
run's reference set against offered load with its 95% interval; the dashed line at 1.0 is the
reference, so a set below it loses. report.html has the interactive version; this one is for
pages that cannot run JavaScript. Needs matplotlib (the ``dev`` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2


def by_load(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every measured load's figures per policy set: the sweep's loads and the run's own."""
    main = {f"{results['command']['load']:g}": results["policies"]} if "command" in results \
        else {}
    return {**main, **results.get("sweep", {})}


def _panel(ax: Any, results: dict[str, Any]) -> None:
    sweep = by_load(results)
    loads = sorted(sweep, key=float)
    xs = [float(x) for x in loads]
    reference = results.get("reference_policy", next(iter(results["policies"])))
    for name in results["policies"]:
        if name == reference:
            continue
        ys, lo, hi = [], [], []
        for x in loads:
            figs = sweep[x][name]
            y = figs.get("tct_geomean_speedup")
            ci = figs.get("tct_speedup_ci95") or [y, y]
            ys.append(y)
            lo.append(y - ci[0] if y is not None else 0.0)
            hi.append(ci[1] - y if y is not None else 0.0)
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=name)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
    ax.annotate(f"{reference} = 1", (xs[0], 1.0), textcoords="offset points", xytext=(2, 4),
                fontsize=8)
    cmd = results.get("command", {})
    ax.set_title(f"{results['workload']['name']}, {cmd.get('gpus', '?')} GPUs", fontsize=10)
    ax.set_xlabel("offered load")
    ax.set_ylabel(f"TCT geomean speedup over {reference} (x)")
    ax.set_xticks(xs)
    ax.grid(True, alpha=0.3)


def plot(paths: Sequence[Path], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [json.loads(p.read_text()) for p in paths]
    for p, r in zip(paths, runs, strict=True):
        if not r.get("sweep"):
            raise ValueError(f"{p}: no sweep in these results (run saga bench with --sweep)")
    cols = min(2, len(runs))
    rows = -(-len(runs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, 4.2 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax, r in zip(flat, runs, strict=False):
        _panel(ax, r)
    for ax in flat[len(runs):]:
        ax.set_visible(False)
    flat[0].legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(out, format=out.suffix.lstrip(".") or "svg")
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nodeagent.bench.sweep_plot",
                                     description=__doc__)
    parser.add_argument("results", type=Path, nargs="+", help="results.json of saga bench")
    parser.add_argument("--out", type=Path, required=True, help="output file (.svg or .png)")
    args = parser.parse_args(argv)
    try:
        plot(args.results, args.out)
    except ImportError:
        print("sweep_plot: matplotlib is not installed (pip install -e '.[dev]')",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    except (OSError, ValueError, KeyError) as exc:
        print(f"sweep_plot: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

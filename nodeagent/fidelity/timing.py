"""``saga fidelity --timing``: the real engine's step times against the cost model's.

On a GPU host whose model and GPU match the cost profile (``--profile``), every step the real
engine ran is timed on the wall clock and set beside the time the simulator's cost model gives
the same batch (prefill tokens and context, decode sequences and context). A CPU step says
nothing about a GPU's, so the comparison is refused on a CPU host.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def summarize(pairs: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Measured vs modelled step seconds: ratio percentiles, total ratio, correlation."""
    pairs = [(m, c) for m, c in pairs if m > 0 and c > 0]
    if not pairs:
        return {"steps": 0}
    ratios = sorted(m / c for m, c in pairs)

    def pct(q: float) -> float:
        return ratios[min(len(ratios) - 1, int(q * (len(ratios) - 1) + 0.5))]

    measured = [m for m, _ in pairs]
    modelled = [c for _, c in pairs]
    corr = None
    if len(pairs) > 2 and statistics.pstdev(measured) > 0 and statistics.pstdev(modelled) > 0:
        corr = statistics.correlation(measured, modelled)
    return {"steps": len(pairs), "measured_s": sum(measured), "model_s": sum(modelled),
            "total_ratio": sum(measured) / sum(modelled), "ratio_p10": pct(0.1),
            "ratio_p50": pct(0.5), "ratio_p90": pct(0.9),
            "log_ratio_sd": statistics.pstdev([math.log(r) for r in ratios]),
            "correlation": corr}


def line(summary: dict[str, Any]) -> str:
    if not summary.get("steps"):
        return "timing: no steps measured"
    corr = summary["correlation"]
    return (f"timing: {summary['steps']} steps, measured/model total {summary['total_ratio']:.2f}"
            f", per step p10 {summary['ratio_p10']:.2f} p50 {summary['ratio_p50']:.2f} "
            f"p90 {summary['ratio_p90']:.2f}, correlation "
            f"{'n/a' if corr is None else f'{corr:.3f}'}")

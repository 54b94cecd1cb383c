"""The bench's self-contained HTML report (Plotly, with plotly.js embedded inline).

One file, viewable offline: plotly.js is written into the page once (``include_plotlyjs=True``
on the first figure), later figures reuse it, and nothing is fetched at view time (no CDN, no
MathJax). Figures: TCT CDF per policy, per-tenant slowdown, cache hit rate over time, KV use
over time, and with ``--sweep`` the speedup (95% interval), SLO attainment and sustained
completion rate against offered load.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from nodeagent.bench.runner import PolicyRun
from nodeagent.bench.sweep_plot import by_load


def _cdf_figure(runs: Sequence[PolicyRun]) -> go.Figure:
    fig = go.Figure()
    for r in runs:
        tcts = np.sort([t.tct_s for t in r.result.tasks if t.tct_s is not None])
        if len(tcts) == 0:
            continue
        y = np.arange(1, len(tcts) + 1) / len(tcts)
        fig.add_trace(go.Scatter(x=tcts.tolist(), y=y.tolist(), mode="lines", name=r.name))
    fig.update_layout(title="Task completion time, CDF", xaxis_title="TCT (s)",
                      yaxis_title="share of tasks", xaxis_type="log")
    return fig


def _slowdown_figure(runs: Sequence[PolicyRun]) -> go.Figure:
    fig = go.Figure()
    for r in runs:
        xs: list[str] = []
        ys: list[float] = []
        for t in r.result.tasks:
            if t.tct_s is not None and t.isolated_s > 0:
                xs.append(t.tenant)
                ys.append(t.tct_s / t.isolated_s)
        fig.add_trace(go.Box(x=xs, y=ys, name=r.name, boxpoints=False))
    fig.update_layout(title="Per-tenant slowdown (TCT / isolated TCT)", boxmode="group",
                      yaxis_title="slowdown", yaxis_type="log")
    return fig


def _timeline_figure(runs: Sequence[PolicyRun], key: str, title: str, ytitle: str) -> go.Figure:
    fig = go.Figure()
    for r in runs:
        tl = r.result.timeline
        t0 = r.result.start_s
        fig.add_trace(go.Scatter(x=[(s["t"] - t0) / 60.0 for s in tl], y=[s[key] for s in tl],
                                 mode="lines", name=r.name))
    fig.update_layout(title=title, xaxis_title="simulated time (min)", yaxis_title=ytitle)
    return fig


def _sweep_figures(results: dict[str, Any]) -> list[go.Figure]:
    """Per policy set against offered load: the paired TCT speedup over the reference with its
    95% interval (the line at 1 is the reference: below it a set loses), SLO attainment, and
    the sustained completion rate."""
    if not results.get("sweep"):
        return []
    sweep = by_load(results)
    loads = sorted(sweep, key=float)
    xs = [float(x) for x in loads]
    names = list(results["policies"])
    reference = results.get("reference_policy", names[0])
    speed = go.Figure()
    for name in names:
        ys = [sweep[x][name].get("tct_geomean_speedup") for x in loads]
        cis = [sweep[x][name].get("tct_speedup_ci95") or [y, y] for x, y in zip(loads, ys,
                                                                                 strict=True)]
        speed.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines+markers", name=name,
            error_y={"type": "data", "symmetric": False,
                     "array": [(c[1] - y) if y is not None else None for c, y in zip(cis, ys,
                                                                                   strict=True)],
                     "arrayminus": [(y - c[0]) if y is not None else None
                                    for c, y in zip(cis, ys, strict=True)]}))
    speed.add_hline(y=1.0, line_dash="dash", annotation_text=f"{reference} (reference)")
    speed.update_layout(title=f"TCT geomean speedup over {reference} vs offered load "
                              "(95% interval)", xaxis_title="offered load",
                        yaxis_title="speedup (x)")
    slo = go.Figure()
    for name in names:
        slo.add_trace(go.Scatter(
            x=xs, y=[(sweep[x][name].get("slo_attainment") or 0.0) * 100 for x in loads],
            mode="lines+markers", name=name))
    slo.update_layout(title="SLO attainment vs offered load", xaxis_title="offered load",
                      yaxis_title="tasks within their SLO (%)", yaxis_range=[0, 100])
    rate = go.Figure()
    for name in names:
        rate.add_trace(go.Scatter(
            x=xs, y=[sweep[x][name].get("sustained_tasks_per_hour") for x in loads],
            mode="lines+markers", name=name))
    rate.update_layout(title="Sustained completion rate vs offered load (90% of tasks)",
                       xaxis_title="offered load", yaxis_title="tasks / hour")
    return [speed, slo, rate]


def _table(results: dict[str, Any]) -> str:
    cols = ["tasks", "calls_lost", "tct_p50_s", "tct_p95_s", "tct_p99_s", "tct_geomean_speedup",
            "p_value", "slo_attainment", "recompute_tokens", "recompute_vs_belady",
            "kv_useful_utilisation", "throughput_tasks_per_hour", "sustained_tasks_per_hour"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["policy", *cols])
    rows = []
    for name, figs in results["policies"].items():
        cells = [f"<td>{html.escape(name)}</td>"]
        for c in cols:
            v = figs.get(c)
            txt = "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
            cells.append(f"<td>{html.escape(txt)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def write_report(path: Path, results: dict[str, Any], runs: Sequence[PolicyRun]) -> None:
    """Write the self-contained report for the main-load runs (and the sweep, if any)."""
    main_load = results["command"]["load"]
    main = [r for r in runs if r.load == main_load]
    figs = [
        _cdf_figure(main),
        _slowdown_figure(main),
        _timeline_figure(main, "hit_rate", "Prefix-cache hit rate over time",
                         "hit tokens / prompt tokens"),
        _timeline_figure(main, "kv_used", "KV cache use over time", "share of KV capacity"),
    ]
    figs.extend(_sweep_figures(results))
    parts = []
    for i, fig in enumerate(figs):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0),
                                 include_mathjax=False))
    cmd = html.escape(json.dumps(results["command"]))
    body = "\n".join(parts)
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>saga bench report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style></head>
<body><h1>saga bench</h1><p>{cmd}</p>
<p>workload: {html.escape(str(results["workload"]["name"]))} -
{html.escape(str(results["workload"]["source"]))}</p>
{_table(results)}
{body}
</body></html>
"""
    path.write_text(page, encoding="utf-8")

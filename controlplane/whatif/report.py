"""A what-if run's report: ``saga bench``'s Plotly report of the merged results (the same
figures and table), plus the per-tenant SLO attainment with each tenant's SLO as a line and, when
the run replayed what ran live, the live-vs-replay agreement."""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from nodeagent.bench.report import write_report


def _runs(results: dict[str, Any], stored: list[tuple[str, float, dict[str, Any]]]) -> list[Any]:
    from controlplane.whatif.replay import task_results

    return [SimpleNamespace(name=policy, load=load, result=SimpleNamespace(
        tasks=task_results(s), timeline=s["timeline"], start_s=s["start_s"]))
        for policy, load, s in stored]


def _slowdown_vs_slo(results: dict[str, Any]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    tenants: list[str] = []
    for name, figs in results["policies"].items():
        tenants = list(figs["tenants"])
        fig.add_trace(go.Bar(x=tenants, y=[figs["tenants"][t]["slowdown_p95"] for t in tenants],
                             name=name))
    for i, t in enumerate(tenants):
        slo = results["workload"]["tenants"][t]["slo_slowdown"]
        fig.add_shape(type="line", x0=i - 0.45, x1=i + 0.45, y0=slo, y1=slo,
                      line={"color": "red", "dash": "dash"})
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name="SLO (slowdown)",
                             line={"color": "red", "dash": "dash"}))
    fig.update_layout(title="Per-tenant p95 slowdown against the tenant's SLO", barmode="group",
                      xaxis_title="tenant", yaxis_title="p95 slowdown (TCT / isolated)")
    return fig


def render(results: dict[str, Any], stored: list[tuple[str, float, dict[str, Any]]]) -> str:
    """The report as one self-contained HTML page."""
    from controlplane.whatif.agreement import agreement_figures

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.html"
        write_report(path, results, _runs(results, stored))
        page = path.read_text(encoding="utf-8")
    extra = [_slowdown_vs_slo(results)] if results["policies"] else []
    agree = results.get("agreement")
    if agree and agree.get("tenants"):
        slo = {t: v["slo_slowdown"] for t, v in results["workload"]["tenants"].items()}
        extra += agreement_figures(agree, slo)
    parts = [f.to_html(full_html=False, include_plotlyjs=False, include_mathjax=False)
             for f in extra]
    estimated = "".join(f"<li>{e}</li>" for e in results["recording"]["estimated"])
    notes = f"<h2>Estimated, not recorded</h2><ul>{estimated}</ul>"
    page = page.replace("<h1>saga bench</h1>", "<h1>saga replay (what-if)</h1>", 1)
    return page.replace("</body>", notes + "\n".join(parts) + "\n</body>", 1)

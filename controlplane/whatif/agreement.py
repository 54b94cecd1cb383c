"""Live versus replay: per tenant, the mean TCT and slowdown the live cluster recorded and the
ones the replay of the same window under the set that ran live gives, on the same workflows
(those that completed live and in the replay). The replayed TCT is the simulated one plus the
workflow's recorded agent time before its first call and after its last, which no policy
changes; the replayed isolated time likewise (``controlplane.slo.isolated`` counts both)."""

from __future__ import annotations

from typing import Any

import numpy as np

from controlplane.whatif.replay import task_results


def agreement(live: dict[str, dict[str, Any]], stored: dict[str, Any]) -> dict[str, Any]:
    per: dict[str, dict[str, list[float]]] = {}
    for task in task_results(stored):
        rec = live.get(task.workflow_id)
        if (rec is None or task.tct_s is None or rec["tct_s"] is None or rec["tail_s"] is None
                or not rec["isolated_s"] or rec["state"] != "completed"):
            continue
        outside = rec["head_s"] + rec["tail_s"]
        row = per.setdefault(rec["tenant"], {"live_tct": [], "replay_tct": [],
                                             "live_slowdown": [], "replay_slowdown": []})
        row["live_tct"].append(rec["tct_s"])
        row["replay_tct"].append(task.tct_s + outside)
        row["live_slowdown"].append(rec["tct_s"] / rec["isolated_s"])
        row["replay_slowdown"].append((task.tct_s + outside) / (task.isolated_s + outside))
    tenants: dict[str, Any] = {}
    worst = 0.0
    for tenant, row in sorted(per.items()):
        figs: dict[str, Any] = {"workflows": len(row["live_tct"])}
        for what in ("tct", "slowdown"):
            lv, rp = float(np.mean(row[f"live_{what}"])), float(np.mean(row[f"replay_{what}"]))
            err = abs(rp - lv) / lv if lv else None
            figs.update({f"live_{what}_mean": lv, f"replay_{what}_mean": rp,
                         f"{what}_relative_error": err})
            if err is not None:
                worst = max(worst, err)
        tenants[tenant] = figs
    return {"tenants": tenants, "max_relative_error": worst if tenants else None,
            "within_10_percent": bool(tenants) and worst <= 0.10}


def agreement_figures(agree: dict[str, Any], slo: dict[str, float]) -> list[Any]:
    """Two grouped bar charts, live beside replay per tenant: TCT, and slowdown with each
    tenant's SLO as a line."""
    import plotly.graph_objects as go

    names = list(agree["tenants"])
    out = []
    for what, title, axis in (("tct", "Live vs replay: mean TCT per tenant", "mean TCT (s)"),
                              ("slowdown", "Live vs replay: mean slowdown per tenant",
                               "mean slowdown (TCT / isolated)")):
        fig = go.Figure()
        for side in ("live", "replay"):
            fig.add_trace(go.Bar(x=names, y=[agree["tenants"][n][f"{side}_{what}_mean"]
                                             for n in names], name=side))
        if what == "slowdown":
            for i, n in enumerate(names):
                if n in slo:
                    fig.add_shape(type="line", x0=i - 0.45, x1=i + 0.45, y0=slo[n], y1=slo[n],
                                  line={"color": "red", "dash": "dash"})
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name="SLO",
                                     line={"color": "red", "dash": "dash"}))
        fig.update_layout(title=title, barmode="group", xaxis_title="tenant", yaxis_title=axis)
        out.append(fig)
    return out

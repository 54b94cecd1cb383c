"""One what-if task (a policy set at a load point on the simulated cluster) and the merge of a
run's tasks into ``results.json``, with the engine and metrics of ``saga bench``
(``nodeagent.sim.cluster``, ``nodeagent.bench.metrics``): the same columns, the same report.

A load point scales the recorded arrival rate (1 = as recorded: the workflows arrive when they
did; 2 = twice as fast); the gaps inside workflows stay as recorded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from controlplane.whatif.candidates import Candidate
from controlplane.whatif.errors import WhatIfInputError
from nodeagent.bench.metrics import belady_total, paired_speedup, policy_figures
from nodeagent.sim.cluster import Cluster, ClusterConfig, TaskResult
from nodeagent.sim.costmodel import CostModel
from nodeagent.sim.prepared import prepare
from nodeagent.sim.profiles import get_profile
from nodeagent.workloads.compact import workload_from_dict
from nodeagent.workloads.model import Workload
from plugins.manager import PolicyManager

TIMELINE_POINTS = 400
"""A task keeps at most this many timeline samples (the report's time series)."""


@dataclass(frozen=True)
class ClusterShape:
    instances: int
    profile: str
    basis: str

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def fixed_cluster(gpus: int, profile_name: str) -> ClusterShape:
    try:
        profile = get_profile(profile_name)
    except ValueError as exc:
        raise WhatIfInputError("cluster.profile", f"profile: {exc}") from None
    per = profile.gpus_per_instance
    if gpus < per or gpus % per:
        raise WhatIfInputError("cluster.gpus", f"gpus {gpus} is not a positive multiple of the "
                               f"{per} GPUs of one {profile.name} instance")
    return ClusterShape(gpus // per, profile.name, f"{gpus} GPUs of {profile.name}")


def recorded_cluster(node_ids: Sequence[int]) -> ClusterShape:
    """The nodes that served the window, on their simulated profile (one profile: the most
    common when they differ)."""
    from collections import Counter

    from controlplane.nodes.models import Node

    nodes = list(Node.objects.filter(pk__in=list(node_ids)).values_list("name", "profile"))
    if not nodes:
        raise WhatIfInputError("cluster", "no node served the window's calls")
    profiles = Counter(p for _n, p in nodes if p)
    if not profiles:
        raise WhatIfInputError("cluster", "the nodes that served the window report no "
                               "simulated profile; give gpus and profile")
    profile, _count = profiles.most_common(1)[0]
    try:
        get_profile(profile)
    except ValueError as exc:
        raise WhatIfInputError("cluster", f"as-recorded: {exc}") from None
    basis = f"as recorded: {len(nodes)} nodes ({', '.join(sorted(n for n, _p in nodes))})"
    if len(profiles) > 1:
        basis += f", all as {profile} (they ran {', '.join(sorted(profiles))})"
    return ClusterShape(len(nodes), profile, basis)


class ScheduledPolicyManager(PolicyManager):
    """A fresh ``PolicyManager`` on the candidate's set that applies its recorded swaps as
    simulated time reaches them (checked at every workflow event and forecast, which is when
    the cluster reads the policies)."""

    def __init__(self, candidate: Candidate) -> None:
        super().__init__()
        self.activate_set(**candidate.choices)
        self._swaps = list(candidate.swaps)

    def _advance(self, now: float | None) -> None:
        while self._swaps and now is not None and self._swaps[0].at_s <= now:
            swap = self._swaps.pop(0)
            self.activate(swap.kind, swap.name, swap.params)

    def observe(self, event: Any, ctx: Any = None) -> None:
        self._advance(getattr(event, "time_s", None))
        super().observe(event, ctx)

    def predict(self, workflow_id: str, now_s: float | None = None,
                context_tokens: int | None = None) -> Any:
        self._advance(now_s)
        return super().predict(workflow_id, now_s, context_tokens)


def at_load(workload: Workload, load: float) -> Workload:
    """Arrivals ``load`` times as fast as recorded."""
    return workload.with_arrivals([w.arrival_s / load for w in workload.workflows])


def rebalance_interval_s() -> float:
    from django.conf import settings

    entry = settings.CELERY_BEAT_SCHEDULE.get("rebalance-workflows", {})
    return float(entry.get("schedule", 1.0))


def run_task(workload_data: dict[str, Any], shape: ClusterShape, candidate: Candidate,
             load: float, progress: Callable[[int, int], None] | None = None
             ) -> dict[str, Any]:
    """Replay one policy set at one load point; the task's stored result (JSON)."""
    workload = workload_from_dict(workload_data, "what-if workload")
    cost = CostModel(get_profile(shape.profile))
    wl = at_load(workload, load)
    prepared = dataclasses.replace(prepare(workload, cost), workload=wl)
    manager = ScheduledPolicyManager(candidate)
    cfg = ClusterConfig(n_instances=shape.instances, rebalance_interval_s=rebalance_interval_s(),
                        record_access=True)
    result = Cluster(prepared, cost, manager, cfg, progress=progress).run()
    belady = belady_total(result, prepared.index)
    belady_conc = belady_total(result, prepared.index, concurrent=True)
    figures = policy_figures(result, wl.tenants, belady, belady_conc)
    figures["policy_set"] = dict(candidate.names)
    if candidate.swaps:
        figures["policy_set"]["swaps"] = [s.__dict__ for s in candidate.swaps]
    step = max(1, len(result.timeline) // TIMELINE_POINTS)
    return {
        "figures": figures,
        "tasks": [[t.workflow_id, t.tenant, t.arrival_s, t.done_s, t.tct_s, t.isolated_s,
                   t.calls, t.calls_done, t.migrations] for t in result.tasks],
        "timeline": result.timeline[::step],
        "start_s": result.start_s,
    }


def task_results(stored: dict[str, Any]) -> list[TaskResult]:
    return [TaskResult(*row) for row in stored["tasks"]]


def merge(command: dict[str, Any], workload: dict[str, Any], shape: ClusterShape,
          recording: dict[str, Any], tasks: Sequence[tuple[str, float, dict[str, Any] | None]]
          ) -> dict[str, Any]:
    """``results.json`` from every task's result ((policy, load, stored) in run order; a failed
    task's stored result is None and its column is missing, the others stay readable)."""
    policies = list(dict.fromkeys(p for p, _l, _s in tasks))
    loads = list(dict.fromkeys(x for _p, x, _s in tasks))
    by_load: dict[float, dict[str, dict[str, Any]]] = {x: {} for x in loads}
    for load in loads:
        reference: dict[str, float] | None = None
        for policy, x, stored in tasks:
            if x != load or stored is None:
                continue
            figs = dict(stored["figures"])
            tcts = {t.workflow_id: t.tct_s for t in task_results(stored) if t.tct_s is not None}
            first = reference is None
            if first:
                reference = tcts
            geo, ci, p = paired_speedup(reference or {}, tcts)
            figs.update(tct_geomean_speedup=geo, tct_speedup_ci95=ci,
                        p_value=None if first else p)
            by_load[load][policy] = figs
    main_load = loads[0]
    results: dict[str, Any] = {
        "command": command,
        "workload": {"name": workload["name"], "source": workload["source"],
                     "workflows": len(workload["workflows"]),
                     "calls": sum(len(w["calls"]) for w in workload["workflows"]),
                     "tenants": {t["name"]: t for t in workload["tenants"]}},
        "cluster": {"instances": shape.instances,
                    "profile": get_profile(shape.profile).describe(), "basis": shape.basis},
        "reference_policy": policies[0],
        "policies": by_load[main_load],
        "recording": {"estimated": recording.get("estimated", []),
                      "counts": recording.get("counts", {})},
    }
    if len(loads) > 1:
        results["sweep"] = {f"{x:g}": by_load[x] for x in loads}
        peaks = {name: max(by_load[x][name]["throughput_tasks_per_hour"] for x in loads
                           if name in by_load[x]) for name in by_load[main_load]}
        best = max(peaks.values()) if peaks else 0.0
        for name, figs in by_load[main_load].items():
            figs["peak_throughput_tasks_per_hour"] = peaks[name]
            figs["peak_throughput_vs_best"] = peaks[name] / best if best > 0 else None
    return results

"""Turn a cluster run into the figures of ``results.json`` (definitions in one place).

Definitions:

* TCT (task completion time) = last call's finish - workflow arrival. Percentiles over the
  tasks that completed.
* Isolated TCT = the cost model's latency of each call alone on an idle instance, with the
  prefix its own previous call left cached, plus every tool / think gap. slowdown = TCT /
  isolated TCT.
* tct_geomean_speedup: paired per task against the FIRST policy set of the run:
  exp(mean(log(TCT_first / TCT_this))); > 1 means this set is faster. tct_speedup_ci95 is the
  Student-t 95% interval of that mean, exponentiated; p_value is the two-sided Wilcoxon
  signed-rank test of the paired log ratios (None for the first set itself or < 2 pairs).
* slo_attainment = share of tasks whose slowdown <= their tenant's ``slo_slowdown``.
  ``tenants.<name>.slo_met`` additionally says whether the tenant's own objective (that share
  at least ``slo_percentile``%) holds.
* recompute_tokens = prefill tokens re-done for prefixes that had been cached on that node
  before and were evicted (per-node high-water mark); recompute_vs_belady = that divided by
  belady_recompute_tokens, a true lower bound: the least recompute any eviction order could
  have had on the same per-node access sequences at the same capacity (Belady's MIN on a
  block-level relaxation where it is provably optimal, :mod:`nodeagent.sim.belady_bound`), so
  the ratio is >= 1.0 at every pressure; null when the bound is 0 and ours is not (nothing had
  to be evicted, so no ratio measures anything); 1.0 when both are 0.
  recompute_vs_belady_concurrent: the same against farthest-next-use replayed on the node's
  whole timeline (concurrently running calls keep their blocks, preempted calls are
  re-admitted: :mod:`nodeagent.sim.belady`), a like-for-like heuristic rather than a bound;
  recompute_after_preemption_tokens says how much of the recompute preemption caused.
* kv_useful_utilisation = time average, over the run and all nodes, of the share of KV capacity
  holding blocks that are read again (counted from insertion or previous read until the last
  read) or belong to running calls.
* throughput_tasks_per_hour = completed tasks / (last completion - first arrival) x 3600.
  With agent traces whose sessions last hours of think time this is dominated by the longest
  session, so capacity_tasks_per_hour is reported too: completed tasks per hour of GPU-busy
  time per instance (tasks/hour the cluster would sustain with every instance busy; it falls
  when a policy wastes GPU time on recompute or small batches).
  sustained_tasks_per_hour = the completion rate before the drain: 90% of the tasks / (time
  the 90th-percentile task finished - first arrival) x 3600. At loads of 1.5 and more the
  arrival window ends long before that point, so this is the rate the saturated cluster
  sustains, without the last tenth (the longest sessions) that dominates the makespan.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from nodeagent.sim.belady import belady_recompute_concurrent
from nodeagent.sim.belady_bound import recompute_lower_bound
from nodeagent.sim.cluster import ClusterResult
from nodeagent.sim.kvcache import TreeIndex
from nodeagent.workloads.model import TenantSpec


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else None


def paired_speedup(reference: Mapping[str, float], this: Mapping[str, float]
                   ) -> tuple[float | None, list[float] | None, float | None]:
    """(geomean speedup, [ci lo, ci hi], Wilcoxon p) of ``this`` vs ``reference`` per task."""
    keys = [k for k in reference if k in this and reference[k] > 0 and this[k] > 0]
    if not keys:
        return None, None, None
    logs = np.array([math.log(reference[k] / this[k]) for k in keys])
    mean = float(logs.mean())
    geo = math.exp(mean)
    if len(logs) < 2:
        return geo, [geo, geo], None
    sem = float(logs.std(ddof=1)) / math.sqrt(len(logs))
    half = float(stats.t.ppf(0.975, len(logs) - 1)) * sem
    ci = [math.exp(mean - half), math.exp(mean + half)]
    p = 1.0 if np.allclose(logs, 0.0) else float(stats.wilcoxon(logs, zero_method="wilcox").pvalue)
    return geo, ci, p


def belady_total(result: ClusterResult, index: TreeIndex,
                 concurrent: bool = False) -> int | None:
    """The recompute lower bound over every node's logged access sequence (None if not
    logged); ``concurrent``: farthest-next-use replayed on the whole timeline instead (running
    calls keep their blocks pinned), the like-for-like heuristic."""
    replay = belady_recompute_concurrent if concurrent else recompute_lower_bound
    total = 0
    for node in result.nodes:
        if node.access_log is None:
            return None
        total += replay(index, node.capacity_blocks, node.access_log)
    return total


def _ratio(ours: int, yardstick: int | None) -> float | None:
    if yardstick is None:
        return None
    if yardstick == 0:
        return 1.0 if ours == 0 else None
    return ours / yardstick


def policy_figures(result: ClusterResult, tenants: Mapping[str, TenantSpec],
                   belady: int | None, belady_concurrent: int | None = None) -> dict[str, Any]:
    """The per-policy block of results.json (without the paired fields)."""
    done = [t for t in result.tasks if t.tct_s is not None]
    tcts = [t.tct_s for t in done if t.tct_s is not None]
    span = max(result.end_s - result.start_s, 1e-9)
    slow_ok = 0
    per_tenant: dict[str, dict[str, Any]] = {}
    for name, spec in tenants.items():
        mine = [t for t in done if t.tenant == name]
        sds = [t.tct_s / t.isolated_s for t in mine if t.tct_s is not None and t.isolated_s > 0]
        ok = sum(1 for s in sds if s <= spec.slo_slowdown)
        slow_ok += ok
        share = ok / len(sds) if sds else None
        per_tenant[name] = {
            "tasks": len(mine), "slowdown_p50": percentile(sds, 50),
            "slowdown_p95": percentile(sds, 95), "slowdown_p99": percentile(sds, 99),
            "slo_slowdown": spec.slo_slowdown, "slo_percentile": spec.slo_percentile,
            "slo_attainment": share,
            "slo_met": None if share is None else share * 100.0 >= spec.slo_percentile,
            "noisy": spec.noisy}
    recompute = sum(n.recompute_tokens for n in result.nodes)
    busy = sum(n.busy_s for n in result.nodes)
    cap = sum(n.capacity_blocks for n in result.nodes)
    useful = sum(n.useful_block_seconds for n in result.nodes)
    hits = sum(n.hit_tokens for n in result.nodes)
    prompts = sum(n.prompt_tokens for n in result.nodes)
    return {
        "tasks": len(result.tasks),
        "tasks_completed": len(done),
        "calls_total": result.calls_total,
        "calls_completed": result.calls_completed,
        "calls_lost": result.calls_lost,
        "tct_p50_s": percentile(tcts, 50),
        "tct_p95_s": percentile(tcts, 95),
        "tct_p99_s": percentile(tcts, 99),
        "tct_mean_s": float(np.mean(tcts)) if tcts else None,
        "slo_attainment": slow_ok / len(done) if done else None,
        "recompute_tokens": recompute,
        "recompute_after_preemption_tokens": sum(n.recompute_after_preemption
                                                 for n in result.nodes),
        "belady_recompute_tokens": belady,
        "recompute_vs_belady": _ratio(recompute, belady),
        "belady_concurrent_recompute_tokens": belady_concurrent,
        "recompute_vs_belady_concurrent": _ratio(recompute, belady_concurrent),
        "kv_useful_utilisation": useful / (cap * span),
        "cache_hit_rate": hits / prompts if prompts else None,
        "throughput_tasks_per_hour": len(done) / span * 3600.0,
        "capacity_tasks_per_hour": (len(done) * 3600.0 * len(result.nodes) / busy
                                    if busy > 0 else None),
        "sustained_tasks_per_hour": sustained_rate(result),
        "makespan_s": span,
        "preemptions": sum(n.preemptions for n in result.nodes),
        "migrations": result.migrations,
        "prefill_tokens": sum(n.prefill_tokens for n in result.nodes),
        "decode_tokens": sum(n.decode_tokens for n in result.nodes),
        "gpu_busy_share": sum(n.busy_s for n in result.nodes) / (len(result.nodes) * span),
        "engine_steps": sum(n.steps for n in result.nodes),
        "macro_steps": sum(n.macro_steps for n in result.nodes),
        "policy_failures": result.policy_failures,
        "sim_wall_s": result.wall_s,
        "tenants": per_tenant,
    }


def sustained_rate(result: ClusterResult, share: float = 0.9) -> float | None:
    """Tasks per hour until ``share`` of all tasks had finished (module docstring)."""
    finished = sorted(t.done_s for t in result.tasks if t.done_s is not None)
    need = math.ceil(share * len(result.tasks))
    if need < 1 or len(finished) < need:
        return None
    start = min(t.arrival_s for t in result.tasks)
    elapsed = finished[need - 1] - start
    return need / elapsed * 3600.0 if elapsed > 0 else None


def task_tcts(result: ClusterResult) -> dict[str, float]:
    return {t.workflow_id: t.tct_s for t in result.tasks if t.tct_s is not None}

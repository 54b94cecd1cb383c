"""``saga bench``'s engine room: load inputs, run every policy set on identical arrivals, collect.

Every policy set replays the *same* workload with the *same* arrival times (drawn once per
offered load from the seed), on a fresh cluster and a fresh policy manager, so differences are
the policies' alone. Validation happens before anything runs, so bad input fails in
milliseconds with one message (:class:`BenchInputError`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nodeagent.bench.metrics import belady_total, paired_speedup, policy_figures, task_tcts
from nodeagent.sim.cluster import Cluster, ClusterConfig, ClusterResult
from nodeagent.sim.costmodel import CostModel
from nodeagent.sim.prepared import PreparedWorkload, prepare
from nodeagent.sim.profiles import get_profile
from nodeagent.workloads.model import Workload, WorkloadError

ARRIVAL_MODES = ("poisson", "trace")


class BenchInputError(ValueError):
    """Bad bench input; the message is one line naming what is wrong."""


@dataclass(frozen=True)
class BenchSpec:
    """Everything a bench run depends on (the CLI's arguments, validated)."""

    workload: str
    gpus: int = 64
    profile: str = "a100-llama3-70b-tp4"
    load: float = 0.8
    policies: tuple[str, ...] = ("baseline", "saga")
    seed: int = 1
    sessions: int | None = None
    draw_seed: int | None = None
    """Seed of the Weka session draw with ``sessions``; None = ``seed`` (as before)."""
    half: str | None = None
    """Weka only: ``tune`` or ``holdout``, the half of the sessions to draw from."""
    tenants: str | None = None
    sweep: tuple[float, ...] = ()
    arrivals: str = "poisson"
    rebalance_interval_s: float = 1.0
    max_macro_steps: int = 128
    horizon_s: float | None = None
    belady_replay: bool = True


@dataclass
class PolicyRun:
    """One policy set at one load: the raw cluster result plus its figures."""

    name: str
    triple: tuple[str, str, str]
    load: float
    result: ClusterResult
    figures: dict[str, Any]


@dataclass
class BenchOutcome:
    results: dict[str, Any]
    runs: list[PolicyRun] = field(default_factory=list)


ProgressFn = Callable[[str, int, int], None]
"""(label, workflows done, workflows total)."""


def _policy_specs(names: tuple[str, ...]) -> list[Any]:
    from plugins.base import PolicyConfigError
    from plugins.manager import PolicyManager
    from plugins.named_sets import parse_policy_set

    if not names:
        raise BenchInputError("--policies: at least one policy set is needed")
    specs = []
    seen: set[str] = set()
    probe = PolicyManager()
    for text in names:
        try:
            spec = parse_policy_set(text)
            probe.activate_set(**spec.as_kwargs())
        except PolicyConfigError as exc:
            raise BenchInputError(f"--policies: {exc}") from None
        if spec.name in seen:
            raise BenchInputError(f"--policies: policy set {spec.name!r} listed twice")
        seen.add(spec.name)
        specs.append(spec)
    return specs


def load_inputs(spec: BenchSpec) -> tuple[Workload, CostModel, int, list[Any]]:
    """Validate the spec and load the workload; BenchInputError on any bad input."""
    from nodeagent.workloads.loaders import load_workload
    from nodeagent.workloads.tenants import assign_tenants, parse_tenants

    if not spec.load > 0:
        raise BenchInputError(f"--load must be > 0, got {spec.load}")
    for x in spec.sweep:
        if not x > 0:
            raise BenchInputError(f"--sweep loads must be > 0, got {x}")
    if spec.arrivals not in ARRIVAL_MODES:
        raise BenchInputError(f"--arrivals must be one of {', '.join(ARRIVAL_MODES)}")
    if spec.sessions is not None and spec.sessions < 1:
        raise BenchInputError(f"--sessions must be >= 1, got {spec.sessions}")
    try:
        profile = get_profile(spec.profile)
    except ValueError as exc:
        raise BenchInputError(f"--profile: {exc}") from None
    if spec.gpus < profile.gpus_per_instance or spec.gpus % profile.gpus_per_instance:
        raise BenchInputError(f"--gpus {spec.gpus} is not a positive multiple of the "
                              f"{profile.gpus_per_instance} GPUs of one {profile.name} instance")
    n_instances = spec.gpus // profile.gpus_per_instance
    policy_specs = _policy_specs(spec.policies)
    try:
        draw = spec.seed if spec.draw_seed is None else spec.draw_seed
        workload = load_workload(spec.workload, spec.sessions, draw, spec.half)
    except (WorkloadError, OSError) as exc:
        raise BenchInputError(f"--workload: {exc}") from None
    if spec.tenants:
        try:
            tenants = parse_tenants(spec.tenants)
        except ValueError as exc:
            raise BenchInputError(f"--tenants: {exc}") from None
        workload = assign_tenants(workload, tenants, spec.seed)
    if not workload.workflows:
        raise BenchInputError(f"--workload: {spec.workload} has no workflows")
    workload, excluded = exclude_oversized(workload, profile.kv_capacity_tokens)
    if not workload.workflows:
        raise BenchInputError(f"--workload: no workflow fits the {profile.name} KV capacity "
                              f"({profile.kv_capacity_tokens} tokens)")
    workload.source = (f"{workload.source}; {len(excluded)} workflows excluded: a call needs more "
                       f"KV than one {profile.name} instance holds" if excluded
                       else workload.source)
    return workload, CostModel(profile), n_instances, policy_specs


def exclude_oversized(workload: Workload, kv_capacity_tokens: int
                      ) -> tuple[Workload, list[str]]:
    """Drop workflows with a call whose prompt + output exceeds one instance's KV pool.

    No vLLM instance of the profile could serve such a call (it would be rejected for
    exceeding the KV capacity), so no policy can; keeping it would only show up as lost calls
    in every column. The excluded ids are reported in results.json.
    """
    keep = []
    excluded = []
    for wf in workload.workflows:
        if any(c.input_tokens + c.output_tokens > kv_capacity_tokens for c in wf.calls):
            excluded.append(wf.workflow_id)
        else:
            keep.append(wf)
    if not excluded:
        return workload, []
    return Workload(workload.name, workload.source, workload.tree, keep,
                    dict(workload.tenants)), excluded


def arrivals_at(workload: Workload, cost: CostModel, n_instances: int, load: float,
                spec: BenchSpec) -> Workload:
    """The workload with arrivals for ``load`` (Poisson) or the trace's own timing."""
    from nodeagent.bench.load import arrivals_for_load
    from nodeagent.workloads.tenants import apply_noisy_bursts

    if spec.arrivals == "trace":
        return apply_noisy_bursts(workload, spec.seed)
    return arrivals_for_load(workload, cost, n_instances, load, spec.seed)


def run_policy(prepared: PreparedWorkload, cost: CostModel, n_instances: int, policy: Any,
               spec: BenchSpec, progress: Callable[[int, int], None] | None = None
               ) -> ClusterResult:
    """One policy set on one prepared workload (fresh manager and cluster)."""
    from plugins.manager import PolicyManager

    manager = PolicyManager()
    manager.activate_set(**policy.as_kwargs())
    cfg = ClusterConfig(n_instances=n_instances, rebalance_interval_s=spec.rebalance_interval_s,
                        max_macro_steps=spec.max_macro_steps, horizon_s=spec.horizon_s,
                        record_access=spec.belady_replay)
    return Cluster(prepared, cost, manager, cfg, progress=progress).run()


def run_bench(spec: BenchSpec, progress: ProgressFn | None = None) -> BenchOutcome:
    """Run every policy set at the main load (and every sweep load); return results.json."""
    wall0 = time.perf_counter()
    workload, cost, n_instances, policies = load_inputs(spec)
    base = prepare(workload, cost)
    loads = list(dict.fromkeys([spec.load, *spec.sweep]))
    runs: list[PolicyRun] = []
    by_load: dict[float, dict[str, dict[str, Any]]] = {}
    for load in loads:
        wl = arrivals_at(workload, cost, n_instances, load, spec)
        prepared = dataclasses.replace(base, workload=wl)
        reference: dict[str, float] | None = None
        by_load[load] = {}
        for policy in policies:
            label = f"{policy.name} @ load {load:g}"

            def cb(done: int, total: int, label: str = label) -> None:
                if progress is not None:
                    progress(label, done, total)

            result = run_policy(prepared, cost, n_instances, policy, spec, cb)
            belady = belady_conc = None
            if spec.belady_replay:
                belady = belady_total(result, prepared.index)
                belady_conc = belady_total(result, prepared.index, concurrent=True)
            figures = policy_figures(result, wl.tenants, belady, belady_conc)
            tcts = task_tcts(result)
            if reference is None:
                reference = tcts
            geo, ci, p = paired_speedup(reference, tcts)
            figures["tct_geomean_speedup"] = geo
            figures["tct_speedup_ci95"] = ci
            figures["p_value"] = None if policy is policies[0] else p
            figures["policy_set"] = {"eviction": policy.eviction, "routing": policy.routing,
                                     "admission": policy.admission, "fairness": policy.fairness}
            if getattr(policy, "params", None):
                figures["policy_set"]["params"] = policy.params
            # The access logs are large; drop them once Belady has been replayed.
            for node in result.nodes:
                node.access_log = None
            by_load[load][policy.name] = figures
            runs.append(PolicyRun(policy.name, policy.names, load, result, figures))
    main = by_load[spec.load]
    if spec.sweep:
        peaks = {name: max(by_load[x][name]["throughput_tasks_per_hour"] for x in spec.sweep)
                 for name in main}
        best = max(peaks.values()) if peaks else 0.0
        for name, figs in main.items():
            figs["peak_throughput_tasks_per_hour"] = peaks[name]
            figs["peak_throughput_vs_best"] = peaks[name] / best if best > 0 else None
    results: dict[str, Any] = {
        "wall_seconds": time.perf_counter() - wall0,
        "command": {
            "workload": spec.workload, "sessions": spec.sessions,
            "draw_seed": spec.draw_seed, "half": spec.half, "tenants": spec.tenants,
            "gpus": spec.gpus, "profile": spec.profile, "load": spec.load,
            "policies": list(spec.policies), "seed": spec.seed, "sweep": list(spec.sweep),
            "arrivals": spec.arrivals},
        "workload": {"name": workload.name, "source": workload.source,
                     "workflows": len(workload.workflows), "calls": workload.n_calls,
                     "tenants": {n: dataclasses.asdict(t) for n, t in workload.tenants.items()}},
        "cluster": {"instances": n_instances, "profile": cost.profile.describe()},
        "reference_policy": policies[0].name,
        "policies": main,
    }
    if spec.sweep:
        results["sweep"] = {f"{x:g}": by_load[x] for x in spec.sweep}
    return BenchOutcome(results, runs)

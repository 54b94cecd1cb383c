"""Small hand-made workloads and runners for the engine / cluster tests."""

from __future__ import annotations

from collections.abc import Sequence

from nodeagent.sim.cluster import Cluster, ClusterConfig, ClusterResult
from nodeagent.sim.costmodel import CostModel
from nodeagent.sim.prepared import prepare
from nodeagent.workloads.model import (
    DEFAULT_TENANT,
    ROOT,
    CallSpec,
    ContextTree,
    TenantSpec,
    WorkflowSpec,
    Workload,
)
from plugins.manager import PolicyManager
from plugins.named_sets import parse_policy_set

PROFILE = "a100-llama3-70b-tp4"


def chain_workload(n_workflows: int = 4, calls: int = 3, system_tokens: int = 1000,
                   task_tokens: int = 500, step_tokens: int = 300, output_tokens: int = 40,
                   gap_s: float = 5.0, arrivals: Sequence[float] | None = None,
                   tenants: dict[str, TenantSpec] | None = None) -> Workload:
    """Agent-like chains: shared system prompt -> task -> (output, tool result) per step.

    Call i's prompt ends at the tool result of step i-1, so it re-sends everything before; its
    output segment is re-sent by call i+1 (the layout the Weka loader produces).
    """
    tree = ContextTree()
    system = tree.add(ROOT, system_tokens, None)
    tenants = tenants or {DEFAULT_TENANT: TenantSpec(DEFAULT_TENANT)}
    names = list(tenants)
    wfs = []
    for w in range(n_workflows):
        wid = f"wf{w:03d}"
        seg = tree.add(system, task_tokens + 7 * w, wid)
        specs = []
        for i in range(calls):
            out = tree.add(seg, output_tokens, wid)
            last = i == calls - 1
            specs.append(CallSpec(prompt_segment=seg, input_tokens=tree.end_tokens(seg),
                                  output_tokens=output_tokens, tool=None if last else "bash",
                                  gap_after_s=0.0 if last else gap_s, output_segment=out))
            if not last:
                seg = tree.add(out, step_tokens, wid)
        arrival = arrivals[w] if arrivals is not None else 2.0 * w
        wfs.append(WorkflowSpec(wid, names[w % len(names)], "chain", arrival, tuple(specs)))
    wl = Workload("chain", "hand-made test workload", tree, wfs, dict(tenants))
    wl.validate()
    return wl


def manager_for(policy_set: str, registry: object | None = None) -> PolicyManager:
    spec = parse_policy_set(policy_set)
    m = PolicyManager(registry) if registry is not None else PolicyManager()
    m.activate_set(**spec.as_kwargs())
    return m


def run_cluster(workload: Workload, policy_set: str = "baseline", n_instances: int = 2,
                kv_tokens: int | None = None, manager: PolicyManager | None = None,
                **cfg: object) -> tuple[Cluster, ClusterResult]:
    cost = CostModel(PROFILE)
    prepared = prepare(workload, cost)
    config = ClusterConfig(n_instances=n_instances, kv_capacity_tokens=kv_tokens, **cfg)
    cluster = Cluster(prepared, cost, manager or manager_for(policy_set), config)
    return cluster, cluster.run()

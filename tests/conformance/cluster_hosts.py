"""The bench cluster as a cluster-tier host: ``nodeagent.sim.cluster.Cluster`` replaying a
scenario's workflows through its own event loop (``run()``: arrivals, ``route_call`` per call,
engines' steps, work-stealing rounds every ``rebalance_interval_s``), with the policies of a
recording registry. No Django here; the gateway host is in ``gateway_host.py``.

What the cluster decided on is what the gateway is then given: the node views a routing or
rebalancing decision saw become the heartbeats of the gateway's nodes (same node states), so
the two are compared decision for decision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from nodeagent.sim.cluster import Cluster, ClusterConfig
from nodeagent.sim.costmodel import CostModel
from nodeagent.sim.prepared import prepare
from nodeagent.sim.profiles import PROFILES, Profile, get_profile
from nodeagent.workloads.model import (
    ROOT,
    CallSpec,
    ContextTree,
    TenantSpec,
    WorkflowSpec,
    Workload,
)
from plugins.manager import PolicyManager
from plugins.views import CallView, WorkflowView
from tests.conformance.recording import Recorder, recording_registry
from tests.conformance.scenarios import ClusterScenario, Observation


def scenario_profile(scenario: ClusterScenario) -> Profile:
    """The profile of the scenario's nodes (its limits on the base profile), registered by name
    so that a gateway node naming it gets the same cost model (``node_cost``)."""
    base = get_profile(scenario.base_profile)
    profile = dataclasses.replace(
        base, name=f"conformance-{scenario.name}", max_num_seqs=scenario.max_num_seqs,
        max_num_batched_tokens=scenario.max_num_batched_tokens,
        kv_capacity_tokens=scenario.kv_tokens)
    PROFILES[profile.name] = profile
    return profile


class SimClusterHost:
    name = "cluster"

    def __init__(self, scenario: ClusterScenario,
                 policies: Mapping[str, tuple[str, Mapping[str, Any]]],
                 ids: Mapping[str, str] | None = None) -> None:
        """``ids``: scenario workflow -> the id the host gives it (the gateway's primary key, so
        that hash-based policies see the same id on both hosts); default: the scenario's."""
        self.scenario = scenario
        self.ids = dict(ids or {})
        self.recorder = Recorder()
        self.recorder.id_map = {v: k for k, v in self.ids.items()}
        cost = CostModel(scenario_profile(scenario))
        manager = PolicyManager(recording_registry(self.recorder))
        manager.activate_set(**{k: (n, dict(p)) for k, (n, p) in policies.items()})
        config = ClusterConfig(n_instances=len(scenario.nodes), rebalance_interval_s=1.0,
                               kv_capacity_tokens=scenario.kv_tokens, record_access=False)
        self.cluster = Cluster(prepare(self._workload(), cost), cost, manager, config)
        self.recorder.placement = self._place

    def host_id(self, workflow: str) -> str:
        return self.ids.get(workflow, workflow)

    def _workload(self) -> Workload:
        sc = self.scenario
        tree = ContextTree()
        specs = []
        for wf in sc.workflows:
            wid = self.host_id(wf.workflow)
            segments: dict[tuple[str, ...], int] = {}
            calls = []
            for call, gap in zip(wf.calls, wf.gaps_s, strict=True):
                parent = ROOT
                for i in range(len(call.prompt)):
                    prefix = call.prompt[: i + 1]
                    if prefix not in segments:
                        segments[prefix] = tree.add(parent, sc.sizes[call.prompt[i]], wid)
                    parent = segments[prefix]
                calls.append(CallSpec(prompt_segment=parent,
                                      input_tokens=sc.prompt_tokens(call.prompt),
                                      output_tokens=call.output_tokens, tool=call.tool,
                                      gap_after_s=gap))
            specs.append(WorkflowSpec(wid, wf.calls[0].tenant, wf.calls[0].template,
                                      wf.arrival_s, tuple(calls)))
        tenants = {c.tenant for wf in sc.workflows for c in wf.calls}
        workload = Workload(sc.name, "conformance scenario", tree, specs,
                            {t: TenantSpec(t) for t in tenants})
        workload.validate()
        return workload

    def _place(self, call: CallView, workflow: WorkflowView) -> str | None:
        """Scripted setup calls: onto the probed workflow's home, or the other node."""
        name = self.recorder.wid(call.workflow_id)
        place = self.scenario.workflow(name or "").place
        if place is None:
            return None
        home = self.cluster.runs[self.host_id(self.scenario.probe)].home
        assert home is not None, "a setup call placed before the probed workflow has a home"
        nodes = self.scenario.nodes
        return nodes[home] if place == "home" else nodes[1 - home]

    # ------------------------------------------------------------------ running
    def play(self) -> Observation:
        result = self.cluster.run()
        probe = self.scenario.probe
        total = sum(len(w.calls) for w in self.scenario.workflows)
        assert result.calls_completed == total, (result.calls_completed, total)
        routes = self.recorder.of("route_call")
        mine = [r for r in routes if r.args["call"]["workflow_id"] == probe]
        first, second = mine[0], mine[1]
        home = first.result
        other = next(n for n in self.scenario.nodes if n != home)
        node_of = {(self.recorder.wid(w), seq): node
                   for w, seq, node, *_ in self.cluster.call_log}
        obs: Observation = {
            "home": home, "other": other,
            "first_route": _route(first), "route": _route(second),
            "next_call_node": node_of[(probe, 1)],
        }
        rounds = [r for r in self.recorder.of("rebalance")
                  if any(w["workflow_id"] == probe for w in r.args["workflows"])]
        if rounds:
            obs["rebalance"] = only_probe(rounds[0].args["nodes"], rounds[0].args["workflows"],
                                          rounds[0].result, probe)
            obs["rebalance_now_s"] = rounds[0].now_s
        return obs


def _route(record: Any) -> dict[str, Any]:
    return {"call": record.args["call"], "workflow": record.args["workflow"],
            "nodes": sorted(record.args["nodes"], key=lambda n: n["node_id"]),
            "result": record.result}


def only_probe(nodes: list[dict[str, Any]], workflows: list[dict[str, Any]], result: Any,
               probe: str) -> dict[str, Any]:
    """A rebalance round restricted to the probed workflow: the gateway's candidates are only
    workflows between calls (a call it dispatched is on its node, not movable), the bench
    cluster's also queued calls; the scenario makes the probed workflow the only one that can
    move, and the comparison is about it."""
    return {"nodes": sorted(nodes, key=lambda n: n["node_id"]),
            "workflows": [w for w in workflows if w["workflow_id"] == probe],
            "result": [m for m in result if m["workflow_id"] == probe]}

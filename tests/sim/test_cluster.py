"""The cluster harness: conservation, moot eviction with unlimited KV, determinism, and that the
decisions the engine applies are the policy objects' own."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from nodeagent.bench.load import arrivals_for_load
from nodeagent.bench.metrics import belady_total
from nodeagent.sim.kvcache import SegmentKVCache
from nodeagent.workloads.synthetic import generate
from plugins.base import Policy
from plugins.hookspecs import ADMISSION, EVICTION, FAIRNESS, ROUTING, hookimpl
from plugins.named_sets import POLICY_SETS
from plugins.registry import PolicyRegistry
from plugins.views import CacheEntryView, CallView, NodeView, SchedulingContext, WorkflowView
from tests.sim.simkit import PROFILE, chain_workload, manager_for, run_cluster

NAMED_SETS = sorted(POLICY_SETS)


def _synthetic(n: int = 24, load: float = 1.5, seed: int = 3):  # type: ignore[no-untyped-def]
    from nodeagent.sim.costmodel import CostModel

    wl = generate("mix", n, seed=seed)
    return arrivals_for_load(wl, CostModel(PROFILE), 2, load, seed)


@pytest.mark.parametrize("policy_set", NAMED_SETS)
def test_every_call_completes_exactly_once_under_pressure(policy_set: str) -> None:
    wl = _synthetic()
    cluster, res = run_cluster(wl, policy_set, n_instances=2, kv_tokens=150_000)
    assert res.calls_lost == 0
    assert res.calls_completed == res.calls_total == wl.n_calls
    seen = [(wf, seq) for wf, seq, *_ in cluster.call_log]
    assert len(seen) == len(set(seen))
    by_wf: dict[str, list[int]] = {}
    for wf, seq in seen:
        by_wf.setdefault(wf, []).append(seq)
    assert all(v == list(range(len(v))) for v in by_wf.values())  # in order, none skipped
    assert all(t.tct_s is not None and t.tct_s > 0 for t in res.tasks)
    assert res.policy_failures == 0
    for e in cluster.engines:
        assert e.idle and not e.cache.pins and e.cache.private_blocks == 0
        e.cache.check_invariants()


def test_unlimited_kv_has_no_recompute_and_eviction_is_moot() -> None:
    wl = _synthetic(n=16)
    tcts = {}
    for ev in ("lru", "ttl", "aeg", "belady"):
        _, res = run_cluster(wl, f"x={ev}:session-affinity:fcfs", kv_tokens=50_000_000)
        assert sum(n.recompute_tokens for n in res.nodes) == 0
        assert sum(n.evicted_blocks for n in res.nodes) == 0
        tcts[ev] = [t.tct_s for t in res.tasks]
    # equal up to float rounding (a retention expiry may split a macro-step in two)
    for ev in ("ttl", "aeg", "belady"):
        assert tcts[ev] == pytest.approx(tcts["lru"], rel=1e-9)


def test_identical_seeds_give_identical_results() -> None:
    def once() -> tuple[list[float | None], list[int], int]:
        wl = _synthetic(n=16, seed=5)
        _, res = run_cluster(wl, "saga", kv_tokens=150_000)
        return ([t.tct_s for t in res.tasks], [n.recompute_tokens for n in res.nodes],
                res.migrations)

    assert once() == once()


def test_belady_replay_is_a_lower_yardstick() -> None:
    wl = _synthetic(n=20)
    cluster, res = run_cluster(wl, "baseline", kv_tokens=150_000)
    ours = sum(n.recompute_tokens for n in res.nodes)
    bel = belady_total(res, cluster.prepared.index)
    assert ours > 0
    assert bel is not None and bel <= ours
    _, free = run_cluster(wl, "baseline", kv_tokens=50_000_000)
    assert belady_total(free, cluster.prepared.index) == 0


# ------------------------------------------------------------------ the policies' own decisions
class LastNodeRouting(Policy):
    """Routes every call to the last node."""

    name = "spy-route"
    kind = ROUTING

    @hookimpl
    def saga_route_call(self, ctx: SchedulingContext, call: CallView, workflow: WorkflowView,
                        nodes: Sequence[NodeView]) -> str:
        return nodes[-1].node_id

    @hookimpl
    def saga_rebalance(self, ctx: SchedulingContext, nodes: Sequence[NodeView],
                       workflows: Sequence[WorkflowView]) -> list:  # type: ignore[type-arg]
        return []


class ReverseAdmission(Policy):
    """Admits in reverse call-id order."""

    name = "spy-admit"
    kind = ADMISSION
    orders: list[list[str]] = []

    @hookimpl
    def saga_admission_order(self, ctx: SchedulingContext, node: NodeView,
                             waiting: Sequence[CallView],
                             priorities: Mapping[str, float]) -> list[str]:
        order = sorted((c.call_id for c in waiting), reverse=True)
        ReverseAdmission.orders.append(order)
        return order


class HighestIdFirst(Policy):
    """Evicts the highest entry id first and remembers every ranking it gave."""

    name = "spy-evict"
    kind = EVICTION
    rankings: list[list[int]] = []

    @hookimpl
    def saga_eviction_order(self, ctx: SchedulingContext,
                            candidates: Sequence[CacheEntryView]) -> list[int]:
        order = sorted((c.entry_id for c in candidates), reverse=True)
        HighestIdFirst.rankings.append(order)
        return order

    @hookimpl
    def saga_tool_retention_s(self, ctx: SchedulingContext, workflow: WorkflowView) -> float:
        return 0.0


class ConstantPriority(Policy):
    name = "spy-fair"
    kind = FAIRNESS

    @hookimpl
    def saga_call_priority(self, ctx: SchedulingContext, call: CallView,
                           workflow: WorkflowView, tenant: object) -> float:
        return 0.0

    @hookimpl
    def saga_record_service(self, ctx: SchedulingContext, call: CallView, prefill_tokens: int,
                            decode_tokens: int, gpu_s: float) -> None:
        return None


def test_engine_applies_the_policy_objects_decisions(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = PolicyRegistry.discover()
    for cls in (LastNodeRouting, ReverseAdmission, HighestIdFirst, ConstantPriority):
        registry.add(cls)
    ReverseAdmission.orders.clear()
    HighestIdFirst.rankings.clear()
    manager = manager_for("spy=spy-evict:spy-route:spy-admit:spy-fair", registry)
    evicted: list[int] = []
    original = SegmentKVCache.evict

    def spy_evict(self: SegmentKVCache, seg: int, max_blocks: int) -> int:
        took = original(self, seg, max_blocks)
        if took:
            evicted.append(seg)
        return took

    monkeypatch.setattr(SegmentKVCache, "evict", spy_evict)
    admitted: list[str] = []
    wl = chain_workload(n_workflows=6, calls=3, task_tokens=3000, output_tokens=30,
                        arrivals=[0.0] * 6, gap_s=30.0)
    from nodeagent.sim.cluster import Cluster

    original_admit = Cluster.on_admit

    def spy_admit(self: Cluster, engine: object, call: object, now: float) -> None:
        admitted.append(call.call_id)  # type: ignore[attr-defined]
        original_admit(self, engine, call, now)  # type: ignore[arg-type]

    monkeypatch.setattr(Cluster, "on_admit", spy_admit)
    cluster, res = run_cluster(wl, n_instances=3, kv_tokens=16_000, manager=manager)
    assert res.calls_lost == 0
    assert {node for _wf, _seq, node, _a, _f in cluster.call_log} == {"node-2"}
    # the six first calls were admitted in the policy's (reverse) order
    first = ReverseAdmission.orders[0]
    assert first == sorted(first, reverse=True) and len(first) == 6
    assert list(dict.fromkeys(admitted))[:6] == first  # first admissions (preemption re-admits)
    # every eviction round started with the entry the policy ranked first
    assert HighestIdFirst.rankings and evicted
    assert evicted[0] == HighestIdFirst.rankings[0][0]

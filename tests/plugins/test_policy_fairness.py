"""Fairness policies: hand-checked priorities, and the stated service-gap bounds of VTC and AFS."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.manager import PolicyManager
from plugins.policies.fairness import AFSFairness, FCFSFairness, PLASFairness, VTCFairness
from plugins.testing import make_call, make_node, make_tenant, make_workflow
from plugins.views import CallView, StaticContext, TenantView, WorkflowEvent, WorkflowView


def start(policy: Any, tenant: str, wid: str, t: float = 0.0) -> None:
    policy.saga_observe(StaticContext(), WorkflowEvent("call_start", wid, tenant, "a", t))


def test_fcfs_by_call_or_by_workflow() -> None:
    call = make_call(arrival_s=50.0)
    wf = make_workflow(arrival_s=3.0)
    ctx, tenant = StaticContext(), make_tenant()
    assert FCFSFairness().saga_call_priority(ctx, call, wf, tenant) == 50.0
    program = FCFSFairness(FCFSFairness.Params(by="workflow"))
    assert program.saga_call_priority(ctx, call, wf, tenant) == 3.0


def test_vtc_counts_weighted_tokens_per_tenant_weight() -> None:
    ctx = StaticContext(tenants={"a": make_tenant("a", weight=2.0), "b": make_tenant("b")})
    vtc = VTCFairness()
    start(vtc, "a", "wa")
    start(vtc, "b", "wb")
    vtc.saga_record_service(ctx, make_call(workflow_id="wa", tenant="a"), 100, 10, 0.0)
    vtc.saga_record_service(ctx, make_call(workflow_id="wb", tenant="b"), 100, 10, 0.0)
    assert vtc.counters.counter == {"a": 60.0, "b": 120.0}  # (100 + 2*10) / weight
    pa = vtc.saga_call_priority(ctx, make_call(tenant="a"), make_workflow(), make_tenant("a"))
    pb = vtc.saga_call_priority(ctx, make_call(tenant="b"), make_workflow(), make_tenant("b"))
    assert pa < pb


def test_vtc_lifts_a_tenant_that_becomes_backlogged() -> None:
    ctx = StaticContext()
    vtc = VTCFairness()
    for tenant, first, second in (("busy1", "w1", "w3"), ("busy2", "w2", "w4")):
        start(vtc, tenant, first)
        start(vtc, tenant, second)  # each keeps a call waiting after the first is admitted
    vtc.saga_record_service(ctx, make_call(workflow_id="w1", tenant="busy1"), 1000, 0, 0.0)
    vtc.saga_record_service(ctx, make_call(workflow_id="w2", tenant="busy2"), 400, 0, 0.0)
    # A newcomer is lifted to the lowest counter among the backlogged tenants, not left at 0:
    start(vtc, "idle", "w5")
    assert vtc.counters.counter["idle"] == 400.0
    # A tenant that was served while nobody else waited keeps its higher counter on return.
    vtc.saga_record_service(ctx, make_call(workflow_id="w5", tenant="idle"), 5000, 0, 0.0)
    vtc.saga_observe(ctx, WorkflowEvent("call_end", "w5", "idle", "a", 1.0))
    start(vtc, "idle", "w6")
    assert vtc.counters.counter["idle"] == 5400.0
    # A tenant whose calls were all admitted is not backlogged: a new call lifts it to the
    # backlogged minimum (the paper's queue membership), here busy1's 1000 over its own 400.
    for wid in ("w4", "w6"):
        vtc.counters.leave_queue(wid)
    start(vtc, "busy2", "w7")
    assert vtc.counters.counter["busy2"] == 1000.0


def test_vtc_rejects_zero_weights() -> None:
    with pytest.raises(ValueError, match="cannot both be 0"):
        VTCFairness.Params(input_weight=0.0, output_weight=0.0)


def test_plas_least_attained_service_levels_and_starvation() -> None:
    plas = PLASFairness(PLASFairness.Params(first_quantum_s=1.0, quantum_growth=10.0, levels=3))
    ctx = StaticContext(now_s=10.0)
    fresh = make_call("c1", workflow_id="fresh", arrival_s=9.0)
    old = make_call("c2", workflow_id="old", arrival_s=1.0)
    plas.saga_record_service(ctx, old, 0, 0, 2.5)  # level 1 (1 <= 2.5 < 10)
    p_fresh = plas.saga_call_priority(ctx, fresh, make_workflow("fresh"), make_tenant())
    p_old = plas.saga_call_priority(ctx, old, make_workflow("old"), make_tenant())
    assert p_fresh < p_old  # the program that has received less goes first despite arriving later
    assert plas.level(0.5) == 0 and plas.level(2.5) == 1 and plas.level(1e6) == 2
    # The view's attained service counts too (a swap loses no history).
    heavy = make_workflow("fresh", service_s=50.0)
    assert plas.saga_call_priority(ctx, fresh, heavy, make_tenant()) > p_old
    # Anti-starvation: waiting 60 s promotes to the top queue.
    late_ctx = StaticContext(now_s=100.0)
    assert plas.saga_call_priority(late_ctx, old, make_workflow("old"), make_tenant()) == 1.0
    plas.saga_observe(ctx, WorkflowEvent("workflow_end", "old", "t1", "a", 11.0))
    assert "old" not in plas.attained


def test_afs_head_start_from_slowdown_and_cache_is_bounded() -> None:
    afs = AFSFairness(AFSFairness.Params(delta_s=2.0, slowdown_share=0.75))
    tenant = make_tenant(slo_slowdown=3.0)
    on_time = make_workflow(elapsed_s=1.0, isolated_s=1.0)
    late = make_workflow(elapsed_s=2.0, isolated_s=1.0)  # slowdown 2: half-way to the SLO of 3
    hopeless = make_workflow(elapsed_s=50.0, isolated_s=1.0)
    cold, warm = make_call(prompt_tokens=100), make_call(prompt_tokens=100, cached_tokens=100)
    assert afs.head_start(cold, on_time, tenant) == 0.0
    assert afs.head_start(cold, late, tenant) == pytest.approx(2.0 * 0.75 * 0.5)
    assert afs.head_start(cold, hopeless, tenant) == pytest.approx(1.5)
    assert afs.head_start(warm, hopeless, tenant) == pytest.approx(2.0)
    ctx = StaticContext()
    assert afs.saga_call_priority(ctx, cold, hopeless, tenant) < afs.saga_call_priority(
        ctx, cold, on_time, tenant
    )


def test_afs_serves_the_tenant_with_less_weighted_gpu_time_first() -> None:
    ctx = StaticContext(
        tenants={"big": make_tenant("big", weight=3.0), "small": make_tenant("small")}
    )
    afs = AFSFairness(AFSFairness.Params(delta_s=0.0))
    start(afs, "big", "w1")
    start(afs, "small", "w2")
    afs.saga_record_service(ctx, make_call(workflow_id="w1", tenant="big"), 0, 0, 6.0)  # 2 / w
    afs.saga_record_service(ctx, make_call(workflow_id="w2", tenant="small"), 0, 0, 3.0)  # 3 / w
    wf = make_workflow()
    p_big = afs.saga_call_priority(ctx, make_call(tenant="big"), wf, make_tenant("big", weight=3))
    p_small = afs.saga_call_priority(ctx, make_call(tenant="small"), wf, make_tenant("small"))
    assert p_big < p_small


# ----------------------------------------------------------------------------- the bounds

GPU_S_PER_TOKEN = 0.001


@dataclass
class Job:
    call: CallView
    workflow: WorkflowView
    prefill: int
    decode: int
    served: int = 0


@dataclass
class TwoTenantRun:
    """Two continuously backlogged tenants on one node with ``capacity`` slots."""

    fairness: str
    params: dict[str, Any]
    weights: tuple[float, float]
    capacity: int
    lengths: tuple[list[tuple[int, int]], list[tuple[int, int]]]
    slowdowns: list[float]
    cached_fracs: list[float]
    late_tenant: str | None = None  # its calls are stamped later (to show FCFS is unfair)
    admission: tuple[str, dict[str, Any]] = ("priority", {})
    gaps: list[float] = field(default_factory=list)

    def service(self, prefill: int, decode: int) -> float:
        if self.fairness == "vtc":
            return prefill * 1.0 + decode * 2.0
        return (prefill + decode) * GPU_S_PER_TOKEN

    def bound(self) -> float:
        per_call = max(self.service(p, d) for ls in self.lengths for p, d in ls)
        u = self.capacity * per_call / min(self.weights)
        delta = float(self.params.get("delta_s", 1.0)) if self.fairness == "afs" else 0.0
        band = float(self.admission[1].get("admission_band", 0.0))
        return 2.0 * (u + delta + band)

    def run(self, steps: int) -> None:
        names = ("f", "g")
        tenants = {n: TenantView(n, w, 3.0, 99.0) for n, w in zip(names, self.weights, strict=True)}
        manager = PolicyManager(
            initial={
                "eviction": "lru",
                "admission": self.admission,
                "fairness": (self.fairness, self.params),
            }
        )
        workflows: dict[str, WorkflowView] = {}
        ctx = StaticContext(now_s=0.0, tenants=tenants, workflows=workflows)
        node = make_node("n")
        waiting: list[Job] = []
        running: list[Job] = []
        issued = {n: 0 for n in names}
        normalised = {n: 0.0 for n in names}

        def arrive(tenant: str, now: float) -> None:
            k = issued[tenant]
            issued[tenant] += 1
            prefill, decode = self.lengths[names.index(tenant)][
                k % len(self.lengths[0 if tenant == "f" else 1])
            ]
            wid = f"{tenant}-{k}"
            stamp = now + (1e6 if tenant == self.late_tenant else 0.0)
            frac = self.cached_fracs[k % len(self.cached_fracs)]
            call = make_call(
                f"c-{wid}",
                workflow_id=wid,
                tenant=tenant,
                prompt_tokens=prefill + 100,
                cached_tokens=int(100 * frac),
                arrival_s=stamp,
            )
            slowdown = self.slowdowns[k % len(self.slowdowns)]
            wf = make_workflow(
                wid,
                tenant=tenant,
                state="queued",
                arrival_s=stamp,
                isolated_s=1.0,
                elapsed_s=slowdown,
            )
            workflows[wid] = wf
            manager.observe(WorkflowEvent("call_start", wid, tenant, "a", now), ctx)
            waiting.append(Job(call, wf, prefill, decode))

        for n in names:  # more waiting than slots: both stay backlogged at every step
            for _ in range(self.capacity + 1):
                arrive(n, 0.0)
        for step in range(steps):
            now = float(step)
            ctx.now_s = now
            policies = manager.current()
            by_id = {j.call.call_id: j for j in waiting}
            priorities = {
                j.call.call_id: policies.call_priority(
                    ctx, j.call, j.workflow, tenants[j.call.tenant]
                )
                for j in waiting
            }
            order = policies.admission_order(ctx, node, [j.call for j in waiting], priorities)
            for call_id in order[: self.capacity - len(running)]:
                job = by_id[call_id]
                waiting.remove(job)
                running.append(job)
                arrive(job.call.tenant, now)  # continuously backlogged
            for job in list(running):
                prefill = job.prefill if job.served == 0 else 0
                decode = 1
                job.served += 1
                gpu_s = (prefill + decode) * GPU_S_PER_TOKEN
                policies.record_service(ctx, job.call, prefill, decode, gpu_s)
                tenant = job.call.tenant
                normalised[tenant] += self.service(prefill, decode) / tenants[tenant].weight
                if job.served >= job.decode:
                    running.remove(job)
                    wid = job.call.workflow_id
                    manager.observe(WorkflowEvent("call_end", wid, tenant, "a", now), ctx)
                    manager.observe(WorkflowEvent("workflow_end", wid, tenant, "a", now), ctx)
            self.gaps.append(normalised["f"] - normalised["g"])
        assert not [e for e in manager.events if e.type == "failure"]


lengths = st.lists(st.tuples(st.integers(0, 60), st.integers(1, 12)), min_size=1, max_size=6)


@settings(max_examples=25, deadline=None)
@given(
    weights=st.tuples(st.floats(0.5, 4.0), st.floats(0.5, 4.0)),
    capacity=st.integers(1, 4),
    lf=lengths,
    lg=lengths,
)
def test_vtc_gap_stays_within_its_bound(weights, capacity, lf, lg) -> None:  # type: ignore[no-untyped-def]
    run = TwoTenantRun("vtc", {}, weights, capacity, (lf, lg), [1.0], [0.0])
    run.run(150)
    assert max(run.gaps) - min(run.gaps) <= run.bound() + 1e-9


@settings(max_examples=25, deadline=None)
@given(
    weights=st.tuples(st.floats(0.5, 4.0), st.floats(0.5, 4.0)),
    capacity=st.integers(1, 4),
    lf=lengths,
    lg=lengths,
    delta=st.floats(0.0, 0.5),
    slowdowns=st.lists(st.floats(0.5, 20.0), min_size=1, max_size=5),
    cached=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5),
)
def test_afs_gap_stays_within_its_bound(  # type: ignore[no-untyped-def]
    weights, capacity, lf, lg, delta, slowdowns, cached
) -> None:
    run = TwoTenantRun("afs", {"delta_s": delta}, weights, capacity, (lf, lg), slowdowns, cached)
    run.run(150)
    assert max(run.gaps) - min(run.gaps) <= run.bound() + 1e-9


@settings(max_examples=25, deadline=None)
@given(
    weights=st.tuples(st.floats(0.5, 4.0), st.floats(0.5, 4.0)),
    capacity=st.integers(1, 4),
    lf=lengths,
    lg=lengths,
    band=st.floats(0.0, 0.2),
    cached=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5),
)
def test_afs_with_saga_admission_stays_within_the_banded_bound(  # type: ignore[no-untyped-def]
    weights, capacity, lf, lg, band, cached
) -> None:
    run = TwoTenantRun(
        "afs", {"delta_s": 0.1}, weights, capacity, (lf, lg), [1.0, 4.0], cached,
        admission=("saga", {"admission_band": band}),
    )  # fmt: skip
    run.run(150)
    assert max(run.gaps) - min(run.gaps) <= run.bound() + 1e-9


def test_the_harness_detects_unfairness_fcfs_starves_the_later_tenant() -> None:
    run = TwoTenantRun("fcfs", {}, (1.0, 1.0), 2, ([(10, 5)], [(10, 5)]), [1.0], [0.0], "g")
    run.run(150)
    vtc_like_bound = 2.0 * 2 * (10 * GPU_S_PER_TOKEN + 5 * GPU_S_PER_TOKEN)
    assert max(run.gaps) - min(run.gaps) > 10 * vtc_like_bound


def test_changing_afs_parameters_keeps_its_service_counters() -> None:
    """Policy state lives outside the instance (Policy.State): a new activation of the same
    policy with other parameters gets the same counters, so a param change mid-run does not
    hand every tenant a clean slate."""
    from plugins.manager import PolicyManager
    from plugins.views import CallView, StaticContext

    manager = PolicyManager()
    manager.activate("fairness", "afs", {"delta_s": 0.0})
    ctx = StaticContext(now_s=1.0)
    call = CallView("c1", "w1", "acme", "t", 0, 100, 0, 0.0)
    manager.current().record_service(ctx, call, 100, 0, 2.5)
    before = manager.active()["fairness"].instance.counters.counter["acme"]
    assert before > 0
    manager.activate("fairness", "afs", {"delta_s": 30.0})
    after = manager.active()["fairness"].instance
    assert after.params.delta_s == 30.0
    assert after.counters.counter["acme"] == before
    manager.activate("fairness", "vtc")  # another policy has its own state...
    assert "acme" not in manager.active()["fairness"].instance.counters.counter
    manager.activate("fairness", "afs")  # ...and afs's is still there when it comes back
    assert manager.active()["fairness"].instance.counters.counter["acme"] == before

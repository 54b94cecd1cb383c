"""The 2026 peers (thunderagent, las, kvflow) and the AEG's KV fair share, on hand-built views."""

from __future__ import annotations

import pytest

from plugins.policies.eviction import AEGEviction, kv_fair_share_order
from plugins.policies.fairness import LASFairness
from plugins.policies.kvflow import KVFlowEviction
from plugins.policies.thunderagent import (
    ThunderAgentAdmission,
    ThunderAgentEviction,
    ThunderAgentRouting,
)
from plugins.testing import make_call, make_entry, make_node, make_tenant, make_workflow
from plugins.views import Prediction, StaticContext, WorkflowEvent


def _event(kind: str, wid: str, t: float, **kw: object) -> WorkflowEvent:
    return WorkflowEvent(kind, wid, "t1", "agent", t, **kw)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- thunderagent


def _thunder_ctx(now: float, kv_total: int, homes: dict[str, str]) -> StaticContext:
    return StaticContext(
        now_s=now, nodes={"n1": make_node("n1", kv_total_tokens=kv_total)},
        workflows={w: make_workflow(w, home_node=n) for w, n in homes.items()})


def _feed(policy: ThunderAgentEviction | ThunderAgentAdmission, kv_total: int) -> None:
    """a (600 tokens) and b (300) run on a 1,000-token node; a reaches a tool at 90% (kept),
    then b's context grows to 500: at its tool the sum is 110% > 95%, so b is paused."""
    ctx = _thunder_ctx(1.0, kv_total, {"a": "n1", "b": "n1"})
    for e in (_event("call_start", "a", 0.0, prompt_tokens=550),
              _event("call_start", "b", 0.0, prompt_tokens=300),
              _event("call_end", "a", 1.0, output_tokens=50),
              _event("tool_start", "a", 1.0, tool_name="bash"),
              _event("call_end", "b", 2.0, output_tokens=200),
              _event("tool_start", "b", 2.0, tool_name="bash")):
        policy.saga_observe(ctx, e)


def test_thunderagent_pauses_at_a_tool_boundary_above_the_threshold() -> None:
    ev = ThunderAgentEviction()
    _feed(ev, 1_000)
    assert not ev.table.paused("a") and ev.table.paused("b")
    assert ev.table.load["n1"] == 600  # a only: b's tokens left with its pause
    entries = [make_entry(1, workflow_id="a", last_access_s=0.0),
               make_entry(2, workflow_id="b", last_access_s=5.0),
               make_entry(3, workflow_id=None, tenant=None, last_access_s=1.0)]
    ctx = _thunder_ctx(3.0, 1_000, {"a": "n1", "b": "n1"})
    assert ev.saga_eviction_order(ctx, entries) == [2, 1, 3]  # paused first, then LRU
    assert ev.saga_tool_retention_s(ctx, make_workflow("a")) == 0.0
    ev.saga_observe(ctx, _event("call_start", "b", 3.0, prompt_tokens=500))
    ev.saga_observe(ctx, _event("call_end", "b", 4.0, output_tokens=10))
    assert not ev.table.paused("b")  # resumed once its next call ran
    ev.saga_observe(ctx, _event("workflow_end", "b", 4.0))
    assert "b" not in ev.table.programs and ev.table.load["n1"] == 600


def test_thunderagent_with_room_pauses_nobody() -> None:
    ev = ThunderAgentEviction()
    _feed(ev, 10_000)
    assert not ev.table.paused("a") and not ev.table.paused("b")


def test_thunderagent_resumes_paused_programs_smallest_first() -> None:
    ad = ThunderAgentAdmission()
    _feed(ad, 1_000)
    for wid, t in (("c", 3.0), ("d", 3.0)):
        ad.saga_observe(_thunder_ctx(t, 1_000, {wid: "n1"}),
                        _event("call_start", wid, t, prompt_tokens=100))
    waiting = [make_call("b#1", workflow_id="b", prompt_tokens=520, arrival_s=3.0),
               make_call("c#0", workflow_id="c", prompt_tokens=100, arrival_s=4.0),
               make_call("a#1", workflow_id="a", prompt_tokens=610, arrival_s=3.5)]
    priorities = {"b#1": 3.0, "c#0": 4.0, "a#1": 3.5}
    order = ad.saga_admission_order(StaticContext(now_s=5.0), make_node(), waiting, priorities)
    assert order == ["a#1", "c#0", "b#1"]  # active programs in fairness order, paused last


def test_thunderagent_routing_keeps_affinity_for_its_ttl_only() -> None:
    ro = ThunderAgentRouting(ThunderAgentRouting.validate_params({"affinity_ttl_s": 100.0}),
                             state={})
    nodes = [make_node("n1", load=0.9), make_node("n2", load=0.1)]
    wf = make_workflow("w", home_node="n1", state="queued")
    ro.saga_observe(StaticContext(), _event("call_end", "w", 10.0, output_tokens=5))
    call = make_call("w#1", workflow_id="w")
    assert ro.saga_route_call(StaticContext(now_s=60.0), call, wf, nodes) == "n1"
    assert ro.saga_route_call(StaticContext(now_s=200.0), call, wf, nodes) == "n2"
    assert ro.saga_route_call(StaticContext(now_s=0.0), make_call(), make_workflow("new"),
                              nodes) == "n2"  # a new program: least loaded


# ----------------------------------------------------------------------------- las


def test_las_orders_by_attained_service_that_halves_every_half_life() -> None:
    las = LASFairness(LASFairness.validate_params({"half_life_s": 10.0}))
    ctx0 = StaticContext(now_s=0.0)
    las.saga_record_service(ctx0, make_call(workflow_id="long"), 900, 50, 1.0)
    las.saga_record_service(ctx0, make_call(workflow_id="short"), 100, 0, 0.1)
    assert las.attained("long", 0.0) == pytest.approx(950.0)
    assert las.attained("long", 10.0) == pytest.approx(475.0)
    tenant = make_tenant()
    prio = {w: las.saga_call_priority(StaticContext(now_s=10.0), make_call(workflow_id=w),
                                      make_workflow(w), tenant)
            for w in ("long", "short", "new")}
    assert prio["new"] == 0.0 < prio["short"] < prio["long"]
    las.saga_observe(ctx0, _event("workflow_end", "long", 11.0))
    assert las.attained("long", 11.0) == 0.0


# ----------------------------------------------------------------------------- kvflow


def test_kvflow_evicts_done_then_in_tool_then_executing() -> None:
    ctx = StaticContext(now_s=10.0, workflows={
        "run": make_workflow("run", state="running"),
        "tool": make_workflow("tool", state="waiting_tool"),
        "queued": make_workflow("queued", state="queued")})
    entries = [make_entry(1, workflow_id="run", last_access_s=0.0),
               make_entry(2, workflow_id="tool", last_access_s=9.0),
               make_entry(3, workflow_id="gone", last_access_s=9.5),
               make_entry(4, workflow_id="queued", last_access_s=1.0),
               make_entry(5, workflow_id="tool", last_access_s=2.0)]
    assert KVFlowEviction().saga_eviction_order(ctx, entries) == [3, 5, 2, 1, 4]


# ----------------------------------------------------------------------------- KV fair share


def test_fair_share_takes_from_the_tenant_most_over_its_weighted_share() -> None:
    ctx = StaticContext(tenants={"prod": make_tenant("prod", weight=1.0),
                                 "noisy": make_tenant("noisy", weight=1.0)})
    # live order (AEG's) would evict prod's entry first; noisy holds 12 blocks to prod's 4
    live = [make_entry(1, tenant="prod", blocks=4), make_entry(2, tenant="noisy", blocks=4),
            make_entry(3, tenant="noisy", blocks=4), make_entry(4, tenant="noisy", blocks=4)]
    assert kv_fair_share_order(ctx, live, dead=[9]) == [9, 2, 3, 1, 4]
    # prod at weight 3 is entitled to 3x noisy's share: noisy goes first all the way
    ctx3 = StaticContext(tenants={"prod": make_tenant("prod", weight=3.0),
                                  "noisy": make_tenant("noisy", weight=1.0)})
    assert kv_fair_share_order(ctx3, live, dead=[]) == [2, 3, 4, 1]
    # one tenant: the order is untouched
    assert kv_fair_share_order(ctx, live[1:], dead=[]) == [2, 3, 4]


def test_aeg_applies_the_fair_share_only_with_several_tenants() -> None:
    wfs = {w: make_workflow(w, tenant=t, state="waiting_tool", context_tokens=64)
           for w, t in (("p", "prod"), ("n1", "noisy"), ("n2", "noisy"))}
    pred = {"p": Prediction(1.0, 100.0, 64.0), "n1": Prediction(1.0, 1.0, 64.0),
            "n2": Prediction(1.0, 2.0, 64.0)}

    class Table:
        def predict(self, workflow_id: str, now_s: float | None = None) -> Prediction:
            return pred[workflow_id]

    ctx = StaticContext(now_s=0.0, workflows=wfs, predictor=Table())
    entries = [make_entry(1, workflow_id="p", tenant="prod"),
               make_entry(2, workflow_id="n1", tenant="noisy"),
               make_entry(3, workflow_id="n2", tenant="noisy")]
    plain = AEGEviction(AEGEviction.validate_params({"tenant_kv_share": False}))
    assert plain.saga_eviction_order(ctx, entries) == [1, 3, 2]  # p's next call is furthest
    assert AEGEviction().saga_eviction_order(ctx, entries) == [3, 1, 2]  # noisy over share

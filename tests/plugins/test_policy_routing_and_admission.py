"""Routing and admission policies: routes, admission orders and work stealing on small cases."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.policies.admission import (
    LongestPrefixAdmission,
    PriorityAdmission,
    SagaAdmission,
    banded_order,
)
from plugins.policies.routing import (
    LeastLoadedRouting,
    PrefixAwareRouting,
    RoundRobinRouting,
    SagaRouting,
    SessionAffinityRouting,
)
from plugins.testing import make_call, make_node, make_workflow
from plugins.views import Migration, Prediction, StaticContext, WorkflowEvent


class FixedPredictor:
    def __init__(self, prediction: Prediction) -> None:
        self.prediction = prediction

    def predict(self, workflow_id: str, now_s: float | None = None) -> Prediction:
        return self.prediction


CTX = StaticContext()


def test_round_robin_cycles_over_the_nodes() -> None:
    nodes = [make_node(n) for n in ("a", "b", "c")]
    policy = RoundRobinRouting()
    routes = [policy.saga_route_call(CTX, make_call(), make_workflow(), nodes) for _ in range(6)]
    assert routes == ["a", "b", "c", "a", "b", "c"]
    assert policy.saga_rebalance(CTX, nodes, [make_workflow()]) == []


def test_least_loaded_picks_lowest_load_then_delay() -> None:
    nodes = [
        make_node("a", load=0.9),
        make_node("b", load=0.2, queue_delay_s=3.0),
        make_node("c", load=0.2, queue_delay_s=1.0),
    ]
    assert LeastLoadedRouting().saga_route_call(CTX, make_call(), make_workflow(), nodes) == "c"


def test_admission_follows_priorities_then_arrival() -> None:
    waiting = [
        make_call("x", arrival_s=3.0),
        make_call("y", arrival_s=1.0),
        make_call("z", arrival_s=2.0),
    ]
    order = PriorityAdmission().saga_admission_order(
        CTX, make_node(), waiting, {"x": 0.0, "y": 5.0, "z": 5.0}
    )
    assert order == ["x", "y", "z"]


def test_session_affinity_is_stable_balanced_and_consistent() -> None:
    policy = SessionAffinityRouting()
    four = [f"n{i}" for i in range(4)]
    ids = [f"wf-{i}" for i in range(2000)]
    placed = {w: policy.node_for(w, four) for w in ids}
    assert placed == {w: policy.node_for(w, list(reversed(four))) for w in ids}  # order-free
    counts = Counter(placed.values())
    assert min(counts.values()) > 2000 / 4 * 0.7  # 160 virtual nodes: roughly even
    five = [*four, "n4"]
    moved = [w for w in ids if policy.node_for(w, five) != placed[w]]
    assert all(policy.node_for(w, five) == "n4" for w in moved)  # only onto the new node
    assert len(moved) < 2000 / 5 * 1.5
    nodes = [make_node(n) for n in four]
    wf = make_workflow("wf-7")
    assert policy.saga_route_call(CTX, make_call(workflow_id="wf-7"), wf, nodes) == placed["wf-7"]


def test_prefix_aware_routes_to_the_longest_cached_prefix() -> None:
    nodes = [make_node("a", load=0.1), make_node("b", load=0.9), make_node("c", load=0.0)]
    policy = PrefixAwareRouting()
    call = make_call(node_cached_tokens=(("a", 100), ("b", 5000)))
    assert policy.saga_route_call(CTX, call, make_workflow(), nodes) == "b"
    nodes_b = [make_node("a", load=0.5, cached_workflows=("w1",)), make_node("c", load=0.0)]
    assert policy.saga_route_call(CTX, make_call(), make_workflow(), nodes_b) == "a"
    assert (
        policy.saga_route_call(CTX, make_call(workflow_id="w2"), make_workflow("w2"), nodes) == "c"
    )


def test_lpm_admission_is_longest_prefix_first() -> None:
    waiting = [make_call(f"c{i}", cached_tokens=100 * i, arrival_s=float(i)) for i in range(4)]
    prio = {f"c{i}": float(i) for i in range(4)}
    lpm = LongestPrefixAdmission()  # SGLang's LPM: cache order only
    assert lpm.saga_admission_order(CTX, make_node(), waiting, prio) == ["c3", "c2", "c1", "c0"]
    banded = LongestPrefixAdmission(LongestPrefixAdmission.Params(admission_band=1.0))
    # bands from the lowest priority: {c0, c1} (0..1), {c2, c3} (2..3)
    assert banded.saga_admission_order(CTX, make_node(), waiting, prio) == ["c1", "c0", "c3", "c2"]


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(0, 40),
    band=st.one_of(st.none(), st.floats(0.0, 5.0)),
    cheaper=st.booleans(),
    seed=st.randoms(use_true_random=False),
)
def test_banded_order_never_passes_a_call_more_than_a_band_better(
    n: int, band: float | None, cheaper: bool, seed
) -> None:  # type: ignore[no-untyped-def]
    waiting = [
        make_call(f"c{i}", prompt_tokens=1000, cached_tokens=seed.randint(0, 1000), arrival_s=i)
        for i in range(n)
    ]
    prio = {c.call_id: seed.uniform(0.0, 10.0) for c in waiting}
    order = banded_order(waiting, prio, band, cheaper)
    assert sorted(order) == sorted(c.call_id for c in waiting)
    if band is not None:
        for pos, cid in enumerate(order):
            later = [prio[other] for other in order[pos + 1 :]]
            assert not later or prio[cid] <= min(later) + band + 1e-12
    if band == 0.0:
        assert [prio[c] for c in order] == sorted(prio[c] for c in order)


def test_saga_keeps_every_call_at_home_while_its_cache_is_there() -> None:
    nodes = [make_node("a", load=5.0, queue_delay_s=50.0), make_node("b")]
    wf = make_workflow(home_node="a", cached_tokens=4_000)
    assert SagaRouting().saga_route_call(CTX, make_call(cached_tokens=4_000), wf, nodes) == "a"


def test_saga_places_afresh_a_call_whose_backlogged_home_holds_nothing_of_it() -> None:
    nodes = [make_node("a", load=5.0, queue_delay_s=50.0), make_node("b")]
    wf = make_workflow(home_node="a", cached_tokens=0)
    assert SagaRouting().saga_route_call(CTX, make_call(), wf, nodes) == "b"
    keep = SagaRouting(SagaRouting.Params(replace_uncached=False))
    assert keep.saga_route_call(CTX, make_call(), wf, nodes) == "a"
    # a quiet home is kept even with nothing cached (a gateway's heartbeats may lag)
    quiet = [make_node("a", queue_delay_s=1.0), make_node("b")]
    assert SagaRouting().saga_route_call(CTX, make_call(), wf, quiet) == "a"


def test_saga_home_by_predicted_footprint_and_load() -> None:
    ctx = StaticContext(predictor=FixedPredictor(Prediction(0.9, 5.0, 0.0, 200.0, 2000.0, 20.0)))
    # footprint = 10k context + 200 output + min(20, 8) calls x 2000 = 26.2k tokens
    nodes = [
        make_node("tight", kv_free_tokens=5_000, kv_total_tokens=100_000, queue_delay_s=0.0),
        make_node("roomy", kv_free_tokens=90_000, kv_total_tokens=100_000, queue_delay_s=0.5),
        make_node("busy", kv_free_tokens=90_000, kv_total_tokens=100_000, queue_delay_s=4.0),
    ]
    wf = make_workflow(context_tokens=10_000, home_node=None)
    call = make_call(prompt_tokens=10_000)
    # tight: 0 + 10 * 21.2k/100k = 2.12 s; roomy: 0.5 s; busy: 4 s
    exact = SagaRouting(SagaRouting.Params())
    assert exact.saga_route_call(ctx, call, wf, nodes) == "roomy"
    cheap = SagaRouting(SagaRouting.Params(memory_weight_s=0.0))
    assert cheap.saga_route_call(ctx, call, wf, nodes) == "tight"


C = 1.0 / 6000.0  # default prefill seconds per token


def _skewed_cluster() -> tuple[list, list]:  # type: ignore[type-arg]
    nodes = [
        make_node("hot", waiting=4, queue_delay_s=8.0),
        make_node("warm", waiting=1, queue_delay_s=1.0),
        make_node("cool", waiting=0, queue_delay_s=0.0),
    ]
    wfs = [
        make_workflow("running", state="running", home_node="hot", cached_tokens=0),
        make_workflow("big", home_node="hot", context_tokens=90_000, cached_tokens=90_000),
        make_workflow("small", home_node="hot", context_tokens=6_000, cached_tokens=1_200),
        make_workflow(
            "queued", state="queued", home_node="hot", context_tokens=12_000, cached_tokens=6_000
        ),
        make_workflow("done", state="done", home_node="hot", cached_tokens=0),
        make_workflow("elsewhere", state="queued", home_node="warm", cached_tokens=0),
    ]
    return nodes, wfs


ANY_THIEF = SagaRouting.Params(steal_below_s=None)


def test_saga_steals_the_cheapest_movable_workflows_that_pay_off() -> None:
    nodes, wfs = _skewed_cluster()
    moves = SagaRouting(ANY_THIEF).saga_rebalance(CTX, nodes, wfs)
    # small: 8 - 0 - 1200 C = 7.8 s > 2 s: move, cool now holds its 6000-token re-prefill (1 s).
    # queued: 8 - 1 - 6000 C = 6 s > 2 s: move (to warm or cool, both at 1 s: ties by name).
    # big: 8 - 1 - 90000 C = -8 s: its cache is worth more than the queue it would skip.
    assert moves == [Migration("small", "hot", "cool"), Migration("queued", "hot", "cool")]


def test_saga_rebalance_respects_threshold_and_max_moves() -> None:
    nodes, wfs = _skewed_cluster()
    high = SagaRouting(SagaRouting.Params(rebalance_threshold_s=10.0))
    assert high.saga_rebalance(CTX, nodes, wfs) == []
    one = SagaRouting(SagaRouting.Params(max_moves=1, steal_below_s=None))
    assert one.saga_rebalance(CTX, nodes, wfs) == [Migration("small", "hot", "cool")]
    # Default: only an idle node steals (queue delay below 1 s); cool is busy after one move.
    assert SagaRouting().saga_rebalance(CTX, nodes, wfs) == [Migration("small", "hot", "cool")]
    balanced = [make_node("a", queue_delay_s=1.0), make_node("b", queue_delay_s=1.5)]
    assert SagaRouting().saga_rebalance(CTX, balanced, wfs) == []
    assert SagaRouting().saga_rebalance(CTX, [make_node("solo", queue_delay_s=99.0)], wfs) == []


def test_saga_rebalance_stops_when_the_estimated_skew_is_gone() -> None:
    nodes = [make_node("hot", waiting=6, queue_delay_s=6.0), make_node("cool")]
    wfs = [
        make_workflow(f"w{i}", state="queued", home_node="hot", context_tokens=6000)
        for i in range(6)
    ]
    # Each queued move takes 1 s of prefill from hot to cool: (6, 0) -> (5, 1) -> (4, 2), where
    # the excess is no longer above the 2 s threshold.
    moves = SagaRouting(ANY_THIEF).saga_rebalance(CTX, nodes, wfs)
    assert moves == [Migration("w0", "hot", "cool"), Migration("w1", "hot", "cool")]


def test_saga_moves_only_into_free_kv_and_only_queued_calls_when_asked() -> None:
    nodes = [
        make_node("hot", waiting=6, queue_delay_s=6.0),
        make_node("full", kv_free_tokens=5_000),
    ]
    wfs = [
        make_workflow("big", state="queued", home_node="hot", context_tokens=8_000),
        make_workflow("fits", state="queued", home_node="hot", context_tokens=4_000,
                      cached_tokens=1_000),
        make_workflow("tool", home_node="hot", context_tokens=100),
    ]  # fmt: skip
    # "big" has no cache either, but its 8k context would evict the target's caches.
    assert SagaRouting().saga_rebalance(CTX, nodes, wfs) == [
        Migration("tool", "hot", "full"),
        Migration("fits", "hot", "full"),
    ]
    queued_only = SagaRouting(SagaRouting.Params(steal_waiting_tool=False))
    assert queued_only.saga_rebalance(CTX, nodes, wfs) == [Migration("fits", "hot", "full")]
    anywhere = SagaRouting(SagaRouting.Params(require_free_kv=False, steal_waiting_tool=False))
    assert anywhere.saga_rebalance(CTX, nodes, wfs) == [Migration("big", "hot", "full")]


def test_saga_moved_workflows_cool_down_before_moving_again() -> None:
    nodes, wfs = _skewed_cluster()
    policy = SagaRouting(SagaRouting.Params(migration_cooldown_s=30.0, max_moves=1))
    assert policy.saga_rebalance(StaticContext(now_s=100.0), nodes, wfs)[0].workflow_id == "small"
    moved_back = [make_workflow("small", home_node="cool", context_tokens=6_000)]
    flipped = [make_node("hot"), make_node("cool", waiting=3, queue_delay_s=9.0)]
    assert policy.saga_rebalance(StaticContext(now_s=110.0), flipped, moved_back) == []
    later = policy.saga_rebalance(StaticContext(now_s=131.0), flipped, moved_back)
    assert later == [Migration("small", "cool", "hot")]
    policy.saga_observe(CTX, WorkflowEvent("workflow_end", "small", "t1", "agent", 140.0))
    assert "small" not in policy._moved_at


def test_saga_admission_prefers_least_prefill_within_the_band() -> None:
    waiting = [
        make_call("a", prompt_tokens=10_000, cached_tokens=0, arrival_s=0.0),
        make_call("b", prompt_tokens=10_000, cached_tokens=9_900, arrival_s=1.0),
        make_call("c", prompt_tokens=500, cached_tokens=0, arrival_s=2.0),
    ]
    prio = {"a": 0.0, "b": 1.0, "c": 2.0}
    wide = SagaAdmission(SagaAdmission.Params(admission_band=5.0))
    assert wide.saga_admission_order(CTX, make_node(), waiting, prio) == ["b", "c", "a"]
    # Default band 0.5: priorities 0, 1, 2 are in separate bands, so fairness order stands.
    assert SagaAdmission().saga_admission_order(CTX, make_node(), waiting, prio) == ["a", "b", "c"]
    strict = SagaAdmission(SagaAdmission.Params(admission_band=0.0))
    assert strict.saga_admission_order(CTX, make_node(), waiting, prio) == ["a", "b", "c"]

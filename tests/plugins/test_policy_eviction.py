"""Eviction policies: hand-checked orders, vLLM's LRU reproduced, Belady optimal."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.policies.eviction import AEGEviction, BeladyEviction, LRUEviction, TTLEviction
from plugins.testing import make_entry, make_node, make_workflow
from plugins.views import CacheEntryView, Prediction, StaticContext, WorkflowView

BLOCK = 16


@dataclass
class FixedPredictor:
    table: dict[str, Prediction]

    def predict(self, workflow_id: str, now_s: float | None = None) -> Prediction:
        return self.table[workflow_id]


def ctx_with(
    workflows: Sequence[WorkflowView], predictions: dict[str, Prediction], now_s: float = 100.0
) -> StaticContext:
    return StaticContext(
        now_s=now_s,
        workflows={w.workflow_id: w for w in workflows},
        predictor=FixedPredictor(predictions),
    )


# ----------------------------------------------------------------------------- lru


def test_lru_least_recent_first_and_chain_tail_first() -> None:
    entries = [
        make_entry(1, last_access_s=5.0, depth_tokens=0),
        make_entry(2, last_access_s=3.0, depth_tokens=0),
        make_entry(3, last_access_s=3.0, depth_tokens=128),  # same release, deeper: goes first
        make_entry(4, last_access_s=9.0, depth_tokens=64),
    ]
    assert LRUEviction().saga_eviction_order(StaticContext(), entries) == [3, 2, 1, 4]
    assert LRUEviction().saga_tool_retention_s(StaticContext(), make_workflow()) == 0.0


class VLLMFreeQueue:
    """A model of vLLM's block pool (block_pool.py): free queue, eviction from the head."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.cached: set[int] = set()
        self.free: list[int] = []  # ref-count-0 cached blocks, head first
        self.evicted: list[int] = []

    def run(self, path: list[int]) -> None:
        for block in path:  # touch the cached prefix (ref count up: out of the free queue)
            if block in self.cached and block in self.free:
                self.free.remove(block)
        for block in path:  # allocate the rest, evicting from the head of the free queue
            if block not in self.cached:
                if len(self.cached) >= self.capacity:
                    victim = self.free.pop(0)
                    self.cached.discard(victim)
                    self.evicted.append(victim)
                self.cached.add(block)
        self.free.extend(reversed(path))  # freed in reverse order: the tail goes first


class SegmentCache:
    """The engine's view: one entry per block, candidates = unreferenced leaves, ask the policy."""

    def __init__(self, capacity: int, parent: dict[int, int]) -> None:
        self.capacity = capacity
        self.parent = parent
        self.cached: dict[int, float] = {}  # block -> last access (release time)
        self.evicted: list[int] = []
        self.policy = LRUEviction()

    def depth(self, block: int) -> int:
        d = 0
        while self.parent[block] != -1:
            block = self.parent[block]
            d += 1
        return d

    def run(self, path: list[int], time: float) -> None:
        referenced = set(path)
        for block in path:
            if block not in self.cached:
                if len(self.cached) >= self.capacity:
                    parents = {self.parent[b] for b in self.cached}
                    candidates = [
                        make_entry(
                            b,
                            tokens=BLOCK,
                            blocks=1,
                            depth_tokens=self.depth(b) * BLOCK,
                            last_access_s=self.cached[b],
                        )
                        for b in self.cached
                        if b not in referenced and b not in parents
                    ]
                    victim = self.policy.saga_eviction_order(StaticContext(), candidates)[0]
                    del self.cached[victim]
                    self.evicted.append(victim)
                self.cached[block] = time
        for block in path:
            self.cached[block] = time


@st.composite
def request_paths(draw: st.DrawFn) -> tuple[dict[int, int], list[list[int]], int]:
    parent: dict[int, int] = {}
    leaves: list[int] = []
    paths: list[list[int]] = []
    for _ in range(draw(st.integers(1, 25))):
        if leaves and draw(st.booleans()):
            base = draw(st.sampled_from(leaves))
            cut = draw(st.integers(0, 3))
            for _ in range(cut):
                if parent.get(base, -1) != -1:
                    base = parent[base]
        else:
            base = -1
        new = draw(st.integers(0, 3))
        path: list[int] = []
        node = base
        while node != -1:
            path.append(node)
            node = parent[node]
        path.reverse()
        tip = base
        for _ in range(new):
            block = len(parent)
            parent[block] = tip
            path.append(block)
            tip = block
        if path:
            leaves.append(path[-1])
            paths.append(path)
    longest = max((len(p) for p in paths), default=1)
    capacity = draw(st.integers(longest, longest + 6))
    return parent, paths, capacity


@settings(max_examples=200, deadline=None)
@given(request_paths())
def test_lru_reproduces_vllm_eviction_order(
    case: tuple[dict[int, int], list[list[int]], int],
) -> None:
    parent, paths, capacity = case
    vllm = VLLMFreeQueue(capacity)
    engine = SegmentCache(capacity, parent)
    for i, path in enumerate(paths):
        vllm.run(path)
        engine.run(path, float(i))
    assert engine.evicted == vllm.evicted


# ----------------------------------------------------------------------------- ttl


def test_ttl_pins_for_its_ttl_with_per_tool_overrides_and_evicts_lru() -> None:
    policy = TTLEviction(TTLEviction.Params(ttl_s=30.0, per_tool_ttl_s={"browser": 5.0}))
    ctx = StaticContext()
    assert policy.saga_tool_retention_s(ctx, make_workflow(tool_name="bash")) == 30.0
    assert policy.saga_tool_retention_s(ctx, make_workflow(tool_name="browser")) == 5.0
    assert TTLEviction().saga_tool_retention_s(ctx, make_workflow()) == 60.0
    entries = [make_entry(1, last_access_s=2.0), make_entry(2, last_access_s=1.0)]
    assert policy.saga_eviction_order(ctx, entries) == [2, 1]


# ----------------------------------------------------------------------------- aeg


def test_aeg_evicts_finished_workflows_first_then_the_farthest_reuse() -> None:
    wfs = [
        make_workflow("done", state="done", context_tokens=64),
        make_workflow("soon", context_tokens=64),
        make_workflow("late", context_tokens=64),
        make_workflow("queued", state="queued", context_tokens=64),
    ]
    preds = {
        "soon": Prediction(0.95, 2.0, 64.0),
        "late": Prediction(0.95, 300.0, 64.0),
    }
    entries = [
        make_entry(1, workflow_id="queued", last_access_s=1.0),
        make_entry(2, workflow_id="soon", last_access_s=2.0),
        make_entry(3, workflow_id="late", last_access_s=99.0),  # most recent: LRU would keep it
        make_entry(4, workflow_id="done", last_access_s=98.0),
    ]
    order = AEGEviction().saga_eviction_order(ctx_with(wfs, preds), entries)
    assert order == [4, 3, 2, 1]


def test_aeg_weighs_probability_reuse_and_recompute_depth() -> None:
    wfs = [make_workflow(w, context_tokens=1000) for w in ("unlikely", "likely", "partial")]
    preds = {
        "unlikely": Prediction(0.1, 10.0, 1000.0),
        "likely": Prediction(0.9, 10.0, 1000.0),
        "partial": Prediction(0.9, 10.0, 300.0),  # the next call re-reads 30% of the context
    }
    ctx = ctx_with(wfs, preds)
    entries = [
        make_entry(1, workflow_id="likely"),
        make_entry(2, workflow_id="unlikely"),
        make_entry(3, workflow_id="partial"),
    ]
    assert AEGEviction().saga_eviction_order(ctx, entries) == [2, 3, 1]
    # Same forecast, same size: with the attention term the deeper segment costs more to
    # recompute and is kept; by default all tokens cost the same and LRU's tie-break applies.
    deep = [
        make_entry(1, workflow_id="likely", depth_tokens=100_000),
        make_entry(2, workflow_id="likely", depth_tokens=0),
    ]
    weighted = AEGEviction(AEGEviction.Params(attention_scale_tokens=32768))
    assert weighted.saga_eviction_order(ctx, deep) == [2, 1]
    assert AEGEviction().saga_eviction_order(ctx, deep) == [1, 2]


def test_aeg_counts_the_queue_wait_and_drops_entries_of_migrated_workflows() -> None:
    wfs = [
        make_workflow("queued", state="queued", home_node="busy", context_tokens=64),
        make_workflow("tool", home_node="idle", context_tokens=64),
        make_workflow("moved", home_node="elsewhere", context_tokens=64),
    ]
    preds = {"tool": Prediction(1.0, 5.0, 64.0)}
    ctx = StaticContext(
        now_s=100.0,
        workflows={w.workflow_id: w for w in wfs},
        predictor=FixedPredictor(preds),
        nodes={"busy": make_node("busy", queue_delay_s=60.0), "idle": make_node("idle")},
    )
    entries = [
        make_entry(1, workflow_id="queued", last_access_s=99.0),
        make_entry(2, workflow_id="tool", last_access_s=1.0),
    ]
    # The queued call waits 60 s for admission; the tool returns in 5 s to an idle node.
    assert AEGEviction().saga_eviction_order(ctx, entries) == [1, 2]
    here = [
        make_entry(3, workflow_id="moved", last_access_s=99.0, node_id="idle"),
        make_entry(4, workflow_id="tool", last_access_s=1.0, node_id="idle"),
    ]
    value = AEGEviction(AEGEviction.Params(order="value"))
    assert value.saga_eviction_order(ctx, here) == [3, 4]


def test_aeg_orders_by_value_only_on_a_saturated_node() -> None:
    wfs = [make_workflow("soon", context_tokens=64), make_workflow("late", context_tokens=64)]
    preds = {"soon": Prediction(1.0, 1.0, 64.0), "late": Prediction(1.0, 500.0, 64.0)}
    entries = [make_entry(1, workflow_id="soon", last_access_s=1.0, node_id="n"),
               make_entry(2, workflow_id="late", last_access_s=90.0, node_id="n")]

    def order(load: float | None) -> list[int]:
        nodes = {} if load is None else {"n": make_node("n", load=load)}
        ctx = StaticContext(now_s=100.0, workflows={w.workflow_id: w for w in wfs},
                            predictor=FixedPredictor(preds), nodes=nodes)
        return AEGEviction().saga_eviction_order(ctx, entries)

    assert order(0.4) == [1, 2]  # below saturation: vLLM's LRU (soon was used longest ago)
    assert order(1.3) == [2, 1]  # saturated: the farthest predicted reuse first
    assert order(None) == [2, 1]  # no load from the host: the value order


def test_aeg_shared_entries_use_recency_and_unknown_workflows_go_first() -> None:
    ctx = ctx_with([], {}, now_s=100.0)
    entries = [
        make_entry(1, workflow_id=None, last_access_s=99.0),
        make_entry(2, workflow_id=None, last_access_s=10.0),
        make_entry(3, workflow_id="ghost", last_access_s=99.5),
    ]
    assert AEGEviction().saga_eviction_order(ctx, entries) == [3, 2, 1]


def test_aeg_pins_across_a_tool_for_a_multiple_of_the_predicted_gap() -> None:
    preds = {
        "short": Prediction(0.95, 4.0, 100.0),
        "long": Prediction(0.95, 400.0, 100.0),
        "ending": Prediction(0.2, 4.0, 100.0),
    }
    ctx = ctx_with([], preds)
    policy = AEGEviction()
    assert policy.saga_tool_retention_s(ctx, make_workflow("short")) == 12.0  # 3 x 4 s
    assert policy.saga_tool_retention_s(ctx, make_workflow("long")) == 300.0  # capped
    assert policy.saga_tool_retention_s(ctx, make_workflow("ending")) == 0.0  # p < 0.5
    never = AEGEviction(AEGEviction.Params(retention_factor=0.0))
    assert never.saga_tool_retention_s(ctx, make_workflow("short")) == 0.0


# ----------------------------------------------------------------------------- belady


def next_use(trace: Sequence[int], position: int, item: int) -> float | None:
    for j in range(position + 1, len(trace)):
        if trace[j] == item:
            return float(j)
    return None


def misses_with_policy(trace: Sequence[int], capacity: int) -> int:
    policy = BeladyEviction()
    cached: set[int] = set()
    misses = 0
    for i, item in enumerate(trace):
        if item in cached:
            continue
        misses += 1
        if len(cached) >= capacity:
            candidates = [
                make_entry(c, tokens=1, blocks=1, next_use_s=next_use(trace, i, c))
                for c in sorted(cached)
            ]
            cached.remove(policy.saga_eviction_order(StaticContext(), candidates)[0])
        cached.add(item)
    return misses


def optimal_misses(trace: tuple[int, ...], capacity: int) -> int:
    @functools.cache
    def best(i: int, cached: frozenset[int]) -> int:
        if i == len(trace):
            return 0
        item = trace[i]
        if item in cached:
            return best(i + 1, cached)
        if len(cached) < capacity:
            return 1 + best(i + 1, cached | {item})
        return 1 + min(best(i + 1, (cached - {v}) | {item}) for v in cached)

    return best(0, frozenset())


@settings(max_examples=200, deadline=None)
@given(
    trace=st.lists(st.integers(0, 5), min_size=1, max_size=12),
    capacity=st.integers(1, 4),
)
def test_belady_is_optimal_against_brute_force(trace: list[int], capacity: int) -> None:
    assert misses_with_policy(trace, capacity) == optimal_misses(tuple(trace), capacity)


def test_belady_evicts_never_used_first_then_farthest() -> None:
    entries: list[CacheEntryView] = [
        make_entry(1, next_use_s=50.0),
        make_entry(2, next_use_s=None),
        make_entry(3, next_use_s=500.0),
    ]
    assert BeladyEviction().saga_eviction_order(StaticContext(), entries) == [2, 3, 1]
    assert BeladyEviction.requires_oracle is True


"""Batching / routing policies: home node, admission order on a node, work stealing."""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import threading
from collections.abc import Mapping, Sequence

from pydantic import Field

from plugins.base import Policy, PolicyParams
from plugins.hookspecs import BATCHING, hookimpl
from plugins.views import (
    CallView,
    Migration,
    NodeView,
    SchedulingContext,
    WorkflowEvent,
    WorkflowView,
)

_INF = math.inf


def priority_order(waiting: Sequence[CallView], priorities: Mapping[str, float]) -> list[str]:
    """Fairness order: priority (lower first), then arrival, then id (deterministic)."""
    get = priorities.get
    ordered = sorted(waiting, key=lambda c: (get(c.call_id, _INF), c.arrival_s, c.call_id))
    return [c.call_id for c in ordered]


def banded_order(
    waiting: Sequence[CallView],
    priorities: Mapping[str, float],
    band: float | None,
    cheaper_first: bool,
) -> list[str]:
    """Fairness order, regrouped inside priority bands so cached calls go first.

    Walking the fairness order, each band holds the calls whose priority is within ``band`` of
    the band's first (lowest) priority; inside a band the calls whose prompt is most cached go
    first: the fewest tokens left to prefill when ``cheaper_first``, else the longest cached
    prefix (SGLang's longest-prefix-match). Invariant, which keeps the fairness bounds: no call
    is placed ahead of a call whose priority is lower than its own by more than ``band``.
    ``band=None`` is a single band (pure cache order), ``band=0`` the plain fairness order.
    """
    get = priorities.get
    ordered = sorted(waiting, key=lambda c: (get(c.call_id, _INF), c.arrival_s, c.call_id))
    if cheaper_first:

        def cache_key(c: CallView) -> int:
            return c.prompt_tokens - c.cached_tokens

    else:

        def cache_key(c: CallView) -> int:
            return -c.cached_tokens

    if band is None:
        ordered.sort(key=cache_key)  # stable: fairness order among equals
        return [c.call_id for c in ordered]
    if band <= 0.0:
        return [c.call_id for c in ordered]
    out: list[str] = []
    i, n = 0, len(ordered)
    while i < n:
        limit = get(ordered[i].call_id, _INF) + band
        j = i + 1
        while j < n and get(ordered[j].call_id, _INF) <= limit:
            j += 1
        chunk = ordered[i:j]
        chunk.sort(key=cache_key)
        out.extend(c.call_id for c in chunk)
        i = j
    return out


def least_loaded(nodes: Sequence[NodeView]) -> NodeView:
    return min(nodes, key=lambda n: (n.load, n.queue_delay_s, n.waiting + n.running, n.node_id))


def _find(nodes: Sequence[NodeView], node_id: str | None) -> NodeView | None:
    if node_id is None:
        return None
    for n in nodes:
        if n.node_id == node_id:
            return n
    return None


class RequestLevelBatching(Policy):
    """Base of the batching policies that only route: admission follows the fairness priorities
    and no workflow ever moves (request-level serving has no notion of one)."""

    @hookimpl
    def saga_admission_order(
        self,
        ctx: SchedulingContext,
        node: NodeView,
        waiting: Sequence[CallView],
        priorities: Mapping[str, float],
    ) -> list[str]:
        return priority_order(waiting, priorities)

    @hookimpl
    def saga_rebalance(
        self, ctx: SchedulingContext, nodes: Sequence[NodeView], workflows: Sequence[WorkflowView]
    ) -> list[Migration]:
        return []


class RoundRobinBatching(RequestLevelBatching):
    """Request-level round robin over the nodes in the order given; FCFS-by-priority admission.

    Ignores affinity on purpose (the naive baseline): consecutive calls of one workflow land on
    different nodes, so prefix reuse comes only from shared prefixes.
    """

    name = "round-robin"
    kind = BATCHING
    version = "1.0"
    summary = "request-level round robin over nodes; admission by fairness priority"

    def __init__(self, params: PolicyParams | None = None) -> None:
        super().__init__(params)
        self._counter = itertools.count()

    @hookimpl
    def saga_route_call(
        self,
        ctx: SchedulingContext,
        call: CallView,
        workflow: WorkflowView,
        nodes: Sequence[NodeView],
    ) -> str:
        return nodes[next(self._counter) % len(nodes)].node_id


class LeastLoadedBatching(RequestLevelBatching):
    """Each call goes to the node with the lowest load (then queue delay, then queue length).

    The load-balancing half of Autellix's scheduler; no affinity, so a workflow's calls follow the
    load rather than its cache.
    """

    name = "least-loaded"
    kind = BATCHING
    version = "1.0"
    summary = "each call to the least-loaded node; admission by fairness priority"

    @hookimpl
    def saga_route_call(
        self,
        ctx: SchedulingContext,
        call: CallView,
        workflow: WorkflowView,
        nodes: Sequence[NodeView],
    ) -> str:
        return least_loaded(nodes).node_id


class SessionAffinityParams(PolicyParams):
    replicas: int = Field(160, ge=1, le=4096, description="virtual nodes per node on the ring")


class _HashRing:
    """A consistent-hash ring: md5 of ``node#i`` for each virtual node, bisect to look up."""

    __slots__ = ("keys", "owners")

    def __init__(self, node_ids: Sequence[str], replicas: int) -> None:
        points = sorted((_hash(f"{node}#{i}"), node) for node in node_ids for i in range(replicas))
        self.keys = [p[0] for p in points]
        self.owners = [p[1] for p in points]

    def lookup(self, key: str) -> str:
        i = bisect.bisect(self.keys, _hash(key))
        return self.owners[i % len(self.owners)]


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.md5(text.encode(), usedforsecurity=False).digest()[:8], "big")


class SessionAffinityBatching(RequestLevelBatching):
    """vLLM production-stack's session router: consistent hashing of the workflow id.

    Source: vllm-project/production-stack ``src/vllm_router/routers/routing_logic.py``
    (``SessionRouter``: a hash ring over the endpoints keyed by the session header). Every call of
    a workflow goes to the same node while the node set is unchanged; adding or removing a node
    moves only the workflows whose ring arc changed. Admission by fairness priority; no stealing.
    """

    name = "session-affinity"
    kind = BATCHING
    version = "1.0"
    summary = "production-stack session router: consistent hashing of the workflow id"
    Params = SessionAffinityParams

    def __init__(self, params: PolicyParams | None = None) -> None:
        super().__init__(params)
        self._rings: dict[tuple[str, ...], _HashRing] = {}
        self._lock = threading.Lock()

    def node_for(self, workflow_id: str, node_ids: Sequence[str]) -> str:
        key = tuple(sorted(node_ids))
        ring = self._rings.get(key)
        if ring is None:
            params: SessionAffinityParams = self.params  # type: ignore[assignment]
            ring = _HashRing(key, params.replicas)
            with self._lock:
                if len(self._rings) > 64:
                    self._rings.clear()
                self._rings[key] = ring
        return ring.lookup(workflow_id)

    @hookimpl
    def saga_route_call(
        self,
        ctx: SchedulingContext,
        call: CallView,
        workflow: WorkflowView,
        nodes: Sequence[NodeView],
    ) -> str:
        return self.node_for(call.workflow_id, [n.node_id for n in nodes])


class PrefixAwareParams(PolicyParams):
    admission_band: float | None = Field(
        None,
        ge=0.0,
        description="fairness-priority band inside which calls go longest cached prefix first; "
        "None = pure longest-prefix-match (SGLang), 0 = plain fairness order",
    )


class PrefixAwareBatching(RequestLevelBatching):
    """Route to the node holding the longest cached prefix of the prompt; LPM admission.

    Sources: production-stack's ``prefixaware`` / ``kvaware`` routers and SGLang's RadixAttention
    longest-prefix-match scheduling. Uses ``CallView.node_cached_tokens`` (what each node actually
    holds, as the kvaware router asks the KV controller); without it, the node that lists the
    workflow in ``cached_workflows``; with no match at all, the least-loaded node. Ties go to the
    less loaded node. Admission: longest cached prefix first (SGLang's LPM, which ignores
    fairness) by default; with ``admission_band`` only within bands of fairness priority.
    """

    name = "prefix-aware"
    kind = BATCHING
    version = "1.0"
    summary = "longest cached prefix routing (kvaware / RadixAttention LPM) with LPM admission"
    Params = PrefixAwareParams

    @hookimpl
    def saga_route_call(
        self,
        ctx: SchedulingContext,
        call: CallView,
        workflow: WorkflowView,
        nodes: Sequence[NodeView],
    ) -> str:
        if call.node_cached_tokens:
            held = dict(call.node_cached_tokens)
            best = min(
                nodes,
                key=lambda n: (-held.get(n.node_id, 0), n.load, n.queue_delay_s, n.node_id),
            )
            if held.get(best.node_id, 0) > 0:
                return best.node_id
        holders = [n for n in nodes if call.workflow_id in n.cached_workflows]
        return least_loaded(holders or nodes).node_id

    @hookimpl
    def saga_admission_order(
        self,
        ctx: SchedulingContext,
        node: NodeView,
        waiting: Sequence[CallView],
        priorities: Mapping[str, float],
    ) -> list[str]:
        params: PrefixAwareParams = self.params  # type: ignore[assignment]
        return banded_order(waiting, priorities, params.admission_band, cheaper_first=False)


class SagaBatchingParams(PolicyParams):
    load_weight_s: float = Field(
        2.0, ge=0.0, description="seconds of queue delay one unit of node load is worth"
    )
    memory_weight_s: float = Field(
        10.0, ge=0.0, description="seconds per KV-capacity fraction the footprint overflows"
    )
    growth_horizon_calls: float = Field(
        8.0, ge=0.0, description="calls ahead counted in a workflow's predicted KV footprint"
    )
    rebalance_threshold_s: float = Field(
        2.0, ge=0.0, description="queue-delay excess over the other nodes' mean that triggers"
    )
    max_moves: int = Field(4, ge=0, le=1024, description="workflows moved per rebalance at most")
    prefill_s_per_token: float = Field(
        1.0 / 6000.0,
        gt=0.0,
        description="seconds one node takes to prefill a token: prices the cache a move loses "
        "(default: Llama-3-70B TP4 on A100 saturates near 6k tokens/s, calibration README)",
    )
    migration_cooldown_s: float = Field(
        30.0, ge=0.0, description="a workflow moved stays on its new home at least this long"
    )
    steal_below_s: float | None = Field(
        1.0,
        ge=0.0,
        description="a node steals only while its own queue delay is below this (idle thieves, "
        "as in classic work stealing); None = any node below the others' mean may receive",
    )
    require_free_kv: bool = Field(
        True,
        description="move a workflow only to a node with free KV for its whole context, so the "
        "move does not evict the target's caches",
    )
    steal_waiting_tool: bool = Field(
        True, description="also move workflows whose agent is in a tool (not only queued calls)"
    )
    admission_band: float = Field(
        0.5,
        ge=0.0,
        description="fairness-priority band inside which calls go fewest-prefill-tokens first "
        "(priority units: normalised GPU seconds under afs); 0 = plain fairness order",
    )


class SagaBatching(Policy):
    """SAGA session-affinity batching with work stealing of whole workflows.

    Home node (first call): the node minimising
    ``queue_delay_s + load_weight_s * load + memory_weight_s * overflow``, where ``overflow`` is
    the share of the node's KV capacity by which the workflow's predicted footprint (context +
    expected output + ``growth_horizon_calls`` x growth per call, from the AEG) exceeds its free
    KV. Every later call goes home, where its KV cache lives. Admission: the fairness order,
    regrouped inside bands of ``admission_band`` priority units so calls with the least prefill
    left (cached prefixes) go first; a fairness bound grows by at most 2 x the band.
    Rebalance (work stealing): while the most delayed node's ``queue_delay_s`` exceeds the mean
    of the others by ``rebalance_threshold_s``, take its workflows that are between calls
    (``waiting_tool`` or ``queued``), cheapest to move first (fewest cached tokens), and move one
    to the least delayed node if the move pays: its next call would start sooner there even after
    re-prefilling the cache it leaves behind, by more than the threshold::

        delay[hot] - delay[cool] - cached_tokens * prefill_s_per_token > rebalance_threshold_s

    Each move adds the workflow's re-prefill (``context_tokens * prefill_s_per_token``) to the
    target's estimated delay and removes a queued call's uncached prefill from the source's, so
    a round stops when the skew is gone, and at ``max_moves``. A moved workflow is not moved
    again for ``migration_cooldown_s`` (no ping-pong).
    """

    name = "saga"
    kind = BATCHING
    version = "1.0"
    summary = "SAGA: home node by predicted KV footprint and load, affinity, work stealing"
    Params = SagaBatchingParams

    @hookimpl
    def saga_route_call(
        self,
        ctx: SchedulingContext,
        call: CallView,
        workflow: WorkflowView,
        nodes: Sequence[NodeView],
    ) -> str:
        home = _find(nodes, workflow.home_node)
        if home is not None:
            return home.node_id
        params: SagaBatchingParams = self.params  # type: ignore[assignment]
        pred = ctx.predict(workflow.workflow_id)
        footprint = (
            max(workflow.context_tokens, call.prompt_tokens)
            + pred.expected_output_tokens
            + min(pred.expected_remaining_calls, params.growth_horizon_calls)
            * pred.growth_tokens_per_call
        )

        def cost(n: NodeView) -> tuple[float, str]:
            overflow = max(footprint - n.kv_free_tokens, 0.0) / max(n.kv_total_tokens, 1)
            return (
                n.queue_delay_s + params.load_weight_s * n.load + params.memory_weight_s * overflow,
                n.node_id,
            )

        return min(nodes, key=cost).node_id

    @hookimpl
    def saga_admission_order(
        self,
        ctx: SchedulingContext,
        node: NodeView,
        waiting: Sequence[CallView],
        priorities: Mapping[str, float],
    ) -> list[str]:
        params: SagaBatchingParams = self.params  # type: ignore[assignment]
        return banded_order(waiting, priorities, params.admission_band, cheaper_first=True)

    def __init__(self, params: PolicyParams | None = None) -> None:
        super().__init__(params)
        self._moved_at: dict[str, float] = {}

    @hookimpl
    def saga_rebalance(
        self, ctx: SchedulingContext, nodes: Sequence[NodeView], workflows: Sequence[WorkflowView]
    ) -> list[Migration]:
        params: SagaBatchingParams = self.params  # type: ignore[assignment]
        if len(nodes) < 2 or params.max_moves == 0:
            return []
        now = ctx.now_s
        cost = params.prefill_s_per_token
        threshold = params.rebalance_threshold_s
        settled_before = now - params.migration_cooldown_s
        delay = {n.node_id: n.queue_delay_s for n in nodes}
        by_id = {n.node_id: n for n in nodes}
        free = {n.node_id: n.kv_free_tokens for n in nodes}
        movable: dict[str, list[WorkflowView]] = {}
        for wf in workflows:
            if (
                (wf.state == "queued" or (wf.state == "waiting_tool" and params.steal_waiting_tool))
                and wf.home_node in by_id
                and self._moved_at.get(wf.workflow_id, -math.inf) <= settled_before
            ):
                movable.setdefault(wf.home_node, []).append(wf)
        for members in movable.values():  # most expensive first, so the cheapest is at the end
            members.sort(key=lambda w: (w.cached_tokens, w.workflow_id), reverse=True)
        moves: list[Migration] = []
        total = sum(delay.values())
        count = len(delay)
        while len(moves) < params.max_moves:
            source = max(delay, key=lambda k: (delay[k], k))
            if delay[source] - (total - delay[source]) / (count - 1) <= threshold:
                break
            target = min(delay, key=lambda k: (delay[k], k))
            group = movable.get(source)
            if target == source or not group:
                break
            if params.steal_below_s is not None and delay[target] >= params.steal_below_s:
                break
            room = free[target] if params.require_free_kv else by_id[target].kv_total_tokens
            chosen = None
            for index in range(len(group) - 1, -1, -1):  # cheapest first
                wf = group[index]
                if wf.context_tokens > room:
                    continue
                if delay[source] - delay[target] - wf.cached_tokens * cost > threshold:
                    chosen = index
                break  # every later candidate has more cache to lose
            if chosen is None:
                break
            wf = group.pop(chosen)
            moves.append(Migration(wf.workflow_id, source, target))
            self._moved_at[wf.workflow_id] = now
            added = wf.context_tokens * cost
            removed = (
                max(wf.context_tokens - wf.cached_tokens, 0) * cost if wf.state == "queued" else 0.0
            )
            delay[target] += added
            delay[source] -= removed
            free[target] -= wf.context_tokens
            total += added - removed
        return moves

    @hookimpl
    def saga_observe(self, ctx: SchedulingContext, event: WorkflowEvent) -> None:
        if event.kind == "workflow_end":
            self._moved_at.pop(event.workflow_id, None)

"""Routing policies (the cluster tier): a call's node, its workflow's home, work stealing.

The gateway runs them on live traffic and the simulated cluster in ``saga bench``; a node never
calls them (``plugins.hookspecs.CLUSTER_KINDS``).
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import threading
from collections.abc import Sequence

from pydantic import Field

from plugins.base import Policy, PolicyParams
from plugins.hookspecs import ROUTING, hookimpl
from plugins.views import (
    CallView,
    Migration,
    NodeView,
    SchedulingContext,
    WorkflowEvent,
    WorkflowView,
)


def spread(workflow_id: str, node_id: str) -> int:
    """Rendezvous-hash tie-break: among equally good nodes each workflow prefers its own,
    spread uniformly, so a burst of new workflows that all see the same idle cluster (their
    load not yet reported) splits across it instead of all going to the first node by name."""
    digest = hashlib.blake2b(f"{workflow_id}\x00{node_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def least_loaded(nodes: Sequence[NodeView], workflow_id: str = "") -> NodeView:
    return min(nodes, key=lambda n: (n.load, n.queue_delay_s, n.waiting + n.running,
                                     spread(workflow_id, n.node_id), n.node_id))


def _find(nodes: Sequence[NodeView], node_id: str | None) -> NodeView | None:
    if node_id is None:
        return None
    for n in nodes:
        if n.node_id == node_id:
            return n
    return None


class RequestLevelRouting(Policy):
    """Base of the routing policies of request-level serving: no workflow ever moves (it has no
    notion of one)."""

    @hookimpl
    def saga_rebalance(
        self, ctx: SchedulingContext, nodes: Sequence[NodeView], workflows: Sequence[WorkflowView]
    ) -> list[Migration]:
        return []


class RoundRobinRouting(RequestLevelRouting):
    """Request-level round robin over the nodes in the order given.

    Ignores affinity on purpose (the naive baseline): consecutive calls of one workflow land on
    different nodes, so prefix reuse comes only from shared prefixes.
    """

    name = "round-robin"
    kind = ROUTING
    version = "1.0"
    summary = "request-level round robin over nodes"

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


class LeastLoadedRouting(RequestLevelRouting):
    """Each call goes to the node with the lowest load (then queue delay, then queue length).

    The load-balancing half of Autellix's scheduler; no affinity, so a workflow's calls follow the
    load rather than its cache.
    """

    name = "least-loaded"
    kind = ROUTING
    version = "1.0"
    summary = "each call to the least-loaded node"

    @hookimpl
    def saga_route_call(
        self,
        ctx: SchedulingContext,
        call: CallView,
        workflow: WorkflowView,
        nodes: Sequence[NodeView],
    ) -> str:
        return least_loaded(nodes, call.workflow_id).node_id


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


class SessionAffinityRouting(RequestLevelRouting):
    """vLLM production-stack's session router: consistent hashing of the workflow id.

    Source: vllm-project/production-stack ``src/vllm_router/routers/routing_logic.py``
    (``SessionRouter``: a hash ring over the endpoints keyed by the session header). Every call of
    a workflow goes to the same node while the node set is unchanged; adding or removing a node
    moves only the workflows whose ring arc changed. No stealing.
    """

    name = "session-affinity"
    kind = ROUTING
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


class PrefixAwareRouting(RequestLevelRouting):
    """Route to the node holding the longest cached prefix of the prompt.

    Sources: production-stack's ``prefixaware`` / ``kvaware`` routers and SGLang's RadixAttention
    longest-prefix-match scheduling. Uses ``CallView.node_cached_tokens`` (what each node actually
    holds, as the kvaware router asks the KV controller); without it, the node that lists the
    workflow in ``cached_workflows``; with no match at all, the least-loaded node. Ties go to the
    less loaded node. Its admission half (SGLang's LPM) is the admission policy ``lpm``.
    """

    name = "prefix-aware"
    kind = ROUTING
    version = "1.0"
    summary = "longest cached prefix routing (production-stack kvaware / prefixaware)"

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
                key=lambda n: (-held.get(n.node_id, 0), n.load, n.queue_delay_s,
                               spread(call.workflow_id, n.node_id)),
            )
            if held.get(best.node_id, 0) > 0:
                return best.node_id
        holders = [n for n in nodes if call.workflow_id in n.cached_workflows]
        return least_loaded(holders or nodes, call.workflow_id).node_id


class SagaRoutingParams(PolicyParams):
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
    replace_uncached: bool = Field(
        True,
        description="place a call afresh (as a first call) when its home is backlogged (queue "
        "delay above rebalance_threshold_s) and holds none of its context any more: affinity "
        "is worth only what is cached, and moving then loses nothing",
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


class SagaRouting(Policy):
    """SAGA session-affinity routing with work stealing of whole workflows.

    Home node (first call): the node minimising
    ``queue_delay_s + load_weight_s * load + memory_weight_s * overflow`` (ties broken by a
    per-workflow rendezvous hash, so equal nodes share new workflows), where ``overflow`` is
    the share of the node's KV capacity by which the workflow's predicted footprint (context +
    expected output + ``growth_horizon_calls`` x growth per call, from the AEG) exceeds its free
    KV. Every later call goes home, where its KV cache lives (the node's admission half is the
    admission policy ``saga``), unless its home is backlogged (``queue_delay_s`` above
    ``rebalance_threshold_s``) and holds none of its context any more (``replace_uncached``):
    affinity is worth what is cached, so such a call is placed afresh, as a first call. The
    backlog condition keeps a gateway whose node heartbeats lag (cached tokens not yet reported)
    from moving workflows off a quiet home. (Crediting a first call with the prefill a node's
    cached shared prefix saves was tried and dropped: every new workflow herded onto the first
    node holding a template's system prompt, 0.97x on synthetic:webarena at load 0.2.) Measured
    on the tune half of the dev Weka sessions (270 tasks, 64 A100s, load 0.8): 2.04x -> 2.14x
    TCT speedup, recompute 216M -> 141M.
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
    kind = ROUTING
    version = "1.0"
    summary = "SAGA: home node by predicted KV footprint and load, affinity, work stealing"
    Params = SagaRoutingParams

    @hookimpl
    def saga_route_call(
        self,
        ctx: SchedulingContext,
        call: CallView,
        workflow: WorkflowView,
        nodes: Sequence[NodeView],
    ) -> str:
        params: SagaRoutingParams = self.params  # type: ignore[assignment]
        home = _find(nodes, workflow.home_node)
        if home is not None and not (params.replace_uncached and call.cached_tokens == 0
                                     and workflow.cached_tokens == 0
                                     and home.queue_delay_s > params.rebalance_threshold_s):
            return home.node_id
        pred = ctx.predict(workflow.workflow_id)
        footprint = (
            max(workflow.context_tokens, call.prompt_tokens)
            + pred.expected_output_tokens
            + min(pred.expected_remaining_calls, params.growth_horizon_calls)
            * pred.growth_tokens_per_call
        )

        def cost(n: NodeView) -> tuple[float, int]:
            overflow = max(footprint - n.kv_free_tokens, 0.0) / max(n.kv_total_tokens, 1)
            return (
                n.queue_delay_s + params.load_weight_s * n.load + params.memory_weight_s * overflow,
                spread(workflow.workflow_id, n.node_id),
            )

        return min(nodes, key=cost).node_id

    State = dict  # workflow id -> when work stealing last moved it (cooldowns survive swaps)

    @property
    def _moved_at(self) -> dict[str, float]:
        return self.state  # type: ignore[no-any-return]

    @hookimpl
    def saga_rebalance(
        self, ctx: SchedulingContext, nodes: Sequence[NodeView], workflows: Sequence[WorkflowView]
    ) -> list[Migration]:
        params: SagaRoutingParams = self.params  # type: ignore[assignment]
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

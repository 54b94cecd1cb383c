"""ThunderAgent (the peer set ``thunderagent``): program-aware capacity scheduling.

Source: NVIDIA Dynamo's ThunderAgent router (arXiv 2602.13692; Dynamo
``docs/agents/thunderagent-router.md``; the ThunderAgent CLI's ``tr`` router mode). ThunderAgent
sits in front of vLLM and keys every request by its *program* (the agent trajectory, our
workflow). Per backend it adds up the KV tokens of its programs, those *acting* (in a tool)
counted with ``acting_token_weight`` (1.0 by default: an acting program still holds its
cache). When a program reaches a tool boundary while that sum exceeds ``pause_threshold``
(0.95) of the backend's KV capacity, the program is *paused*: its cache is given up and its
next request waits until capacity frees, paused programs being resumed smallest first. New
programs go to the least-loaded backend and stay there (session affinity) while they are
active; an affinity unused for ``affinity_ttl_s`` expires and the program is placed afresh.

Mapped onto the four kinds:

* eviction ``thunderagent``: vLLM's LRU prefix cache, except that a paused program's blocks go
  first (pausing is what frees them); no pins.
* admission ``thunderagent``: the fairness order for running programs' calls, then the calls
  of paused programs, smallest context first (the resume order).
* routing ``thunderagent``: least-loaded placement, affinity with a TTL.

The resume order follows Dynamo's description (smallest first); the ThunderAgent CLI's own
documentation describes its ``tr`` mode as Best Fit Decreasing bin-packing of paused programs
into the freed capacity, a different order for the same decision.

Approximation, stated: a router can hold a paused program's request while capacity is short;
an admission order cannot hold a call while the node has room for it, so a resumed call is
admitted as soon as room appears, which is ThunderAgent's resume condition anyway. Both node
policies keep the same program table (each its own copy, fed by the same events), so they agree
on who is paused.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import Field

from plugins.base import Policy, PolicyParams
from plugins.hookspecs import ADMISSION, EVICTION, ROUTING, hookimpl
from plugins.policies.admission import priority_order
from plugins.policies.eviction import LRUEviction, lru_key
from plugins.policies.routing import RequestLevelRouting, _find, least_loaded
from plugins.views import (
    CacheEntryView,
    CallView,
    NodeView,
    SchedulingContext,
    WorkflowEvent,
    WorkflowView,
)


class ThunderAgentParams(PolicyParams):
    pause_threshold: float = Field(
        0.95, gt=0.0, le=1.0,
        description="pause a program at a tool boundary while its node's program tokens exceed "
        "this share of KV capacity",
    )
    acting_token_weight: float = Field(
        1.0, ge=0.0, le=1.0,
        description="weight of an acting (in-tool) program's tokens in the capacity sum",
    )


@dataclass(slots=True)
class _Program:
    node: str
    tokens: int = 0
    acting: bool = False
    paused: bool = False


class ProgramTable:
    """ThunderAgent's per-backend program accounting, fed by workflow events.

    ``load[node]`` is the weighted token sum of the node's unpaused programs; a program is paused
    at ``tool_start`` when that sum is above ``pause_threshold`` of the node's KV capacity, and
    stays paused until its next call ends (its resume). O(1) per event.
    """

    __slots__ = ("load", "lock", "params", "programs")

    def __init__(self, params: ThunderAgentParams) -> None:
        self.params = params
        self.programs: dict[str, _Program] = {}
        self.load: dict[str, float] = {}
        self.lock = threading.Lock()

    def _weight(self, prog: _Program) -> float:
        if prog.paused:
            return 0.0
        return self.params.acting_token_weight if prog.acting else 1.0

    def _set(self, prog: _Program, *, tokens: int | None = None, acting: bool | None = None,
             paused: bool | None = None) -> None:
        before = self._weight(prog) * prog.tokens
        if tokens is not None:
            prog.tokens = tokens
        if acting is not None:
            prog.acting = acting
        if paused is not None:
            prog.paused = paused
        self.load[prog.node] = self.load.get(prog.node, 0.0) + self._weight(prog) * prog.tokens \
            - before

    @staticmethod
    def _node_of(ctx: SchedulingContext, workflow_id: str) -> tuple[str, NodeView | None]:
        nodes = ctx.nodes
        wf = ctx.workflow(workflow_id)
        home = wf.home_node if wf is not None else None
        if home is not None and home in nodes:
            return home, nodes[home]
        if len(nodes) == 1:  # a node host sees only itself
            (node_id, view), = nodes.items()
            return node_id, view
        return home or "", None

    def observe(self, ctx: SchedulingContext, event: WorkflowEvent) -> None:
        wid = event.workflow_id
        with self.lock:
            prog = self.programs.get(wid)
            if event.kind == "workflow_end":
                if prog is not None:
                    self._set(prog, tokens=0)
                    del self.programs[wid]
                return
            node, view = self._node_of(ctx, wid)
            if prog is None:
                prog = self.programs[wid] = _Program(node=node)
            elif prog.node != node:  # re-placed (affinity expired): move its tokens
                tokens = prog.tokens
                self._set(prog, tokens=0)
                prog.node = node
                self._set(prog, tokens=tokens)
            if event.kind == "call_start":
                self._set(prog, tokens=event.prompt_tokens, acting=False)
            elif event.kind == "call_end":
                self._set(prog, tokens=prog.tokens + event.output_tokens, paused=False)
            elif event.kind == "tool_start":
                self._set(prog, acting=True)
                capacity = view.kv_total_tokens if view is not None else 0
                if capacity > 0 and self.load.get(node, 0.0) > self.params.pause_threshold \
                        * capacity:
                    self._set(prog, paused=True)
            elif event.kind == "tool_end":
                self._set(prog, acting=False)

    def paused(self, workflow_id: str | None) -> bool:
        if workflow_id is None:
            return False
        prog = self.programs.get(workflow_id)
        return prog is not None and prog.paused


class _ProgramTablePolicy(Policy):
    """Base of ThunderAgent's node policies: each keeps its own :class:`ProgramTable`, fed by
    every workflow event."""

    Params = ThunderAgentParams

    def __init__(self, params: PolicyParams | None = None) -> None:
        super().__init__(params)
        self.table = ProgramTable(self.params)  # type: ignore[arg-type]

    @hookimpl
    def saga_observe(self, ctx: SchedulingContext, event: WorkflowEvent) -> None:
        self.table.observe(ctx, event)


class ThunderAgentEviction(_ProgramTablePolicy, LRUEviction):
    """ThunderAgent's node half of eviction: LRU, a paused program's blocks first; no pins
    (LRU's ``saga_tool_retention_s``)."""

    name = "thunderagent"
    kind = EVICTION
    version = "1.0"
    summary = "ThunderAgent: LRU prefix cache, paused programs' blocks first"

    @hookimpl
    def saga_eviction_order(
        self, ctx: SchedulingContext, candidates: Sequence[CacheEntryView]
    ) -> list[int]:
        paused = self.table.paused
        ordered = sorted(candidates, key=lambda e: (not paused(e.workflow_id), *lru_key(e)))
        return [e.entry_id for e in ordered]


class ThunderAgentAdmission(_ProgramTablePolicy):
    """ThunderAgent's resume order: running programs' calls in the fairness order, then the calls
    of paused programs, smallest prompt first."""

    name = "thunderagent"
    kind = ADMISSION
    version = "1.0"
    summary = "ThunderAgent: active programs first, paused ones resumed smallest first"

    @hookimpl
    def saga_admission_order(
        self,
        ctx: SchedulingContext,
        node: NodeView,
        waiting: Sequence[CallView],
        priorities: Mapping[str, float],
    ) -> list[str]:
        paused = self.table.paused
        active = [c for c in waiting if not paused(c.workflow_id)]
        resumed = sorted((c for c in waiting if paused(c.workflow_id)),
                         key=lambda c: (c.prompt_tokens, c.arrival_s, c.call_id))
        return priority_order(active, priorities) + [c.call_id for c in resumed]


class ThunderAgentRoutingParams(PolicyParams):
    affinity_ttl_s: float = Field(
        120.0, ge=0.0,
        description="seconds a program stays bound to its backend after its last call ended",
    )


class ThunderAgentRouting(RequestLevelRouting):
    """ThunderAgent's placement: a new program to the least-loaded backend; later calls to the
    same backend while the affinity is fresh (last call ended under ``affinity_ttl_s`` ago),
    otherwise placed afresh. No work stealing."""

    name = "thunderagent"
    kind = ROUTING
    version = "1.0"
    summary = "ThunderAgent: least-loaded placement, session affinity with a TTL"
    Params = ThunderAgentRoutingParams

    State = dict  # workflow id -> when its last call ended

    @hookimpl
    def saga_route_call(
        self,
        ctx: SchedulingContext,
        call: CallView,
        workflow: WorkflowView,
        nodes: Sequence[NodeView],
    ) -> str:
        params: ThunderAgentRoutingParams = self.params  # type: ignore[assignment]
        home = _find(nodes, workflow.home_node)
        last_end = self.state.get(call.workflow_id)
        if home is not None and (last_end is None or ctx.now_s - last_end <= params.affinity_ttl_s):
            return home.node_id
        return least_loaded(nodes, call.workflow_id).node_id

    @hookimpl
    def saga_observe(self, ctx: SchedulingContext, event: WorkflowEvent) -> None:
        if event.kind == "call_end":
            self.state[event.workflow_id] = event.time_s
        elif event.kind == "workflow_end":
            self.state.pop(event.workflow_id, None)

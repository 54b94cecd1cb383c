"""The hooks a SAGA policy implements (pluggy project ``saga``).

Every scheduling decision an engine delegates is one hook below. Decision hooks are
``firstresult``: the policy set holds exactly one active policy per kind, and the first non-None
answer is the decision, so a policy may also return None to say "no opinion" and let a later
implementation (a wrapped default) answer. Notification hooks (``saga_observe``,
``saga_record_service``) reach every active policy.

A policy is a class with ``name``, ``kind`` (``"eviction"``, ``"routing"``, ``"admission"`` or
``"fairness"``),
``version`` and a pydantic ``Params`` model; its instance implements the hooks of its kind with
methods decorated by :data:`hookimpl`. Hooks are called with keyword arguments, so an
implementation may accept only the arguments it needs (pluggy's rule). ``docs/policies.md``
documents each hook; a test fails when one is missing there.

Hot path: the simulator calls these hooks at every admission and eviction decision, so an
implementation must be O(n log n) in the size of its inputs and must not log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pluggy

from plugins.views import (
    CacheEntryView,
    CallView,
    Migration,
    NodeView,
    SchedulingContext,
    TenantView,
    WorkflowEvent,
    WorkflowView,
)

PROJECT_NAME = "saga"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
"""Marks a hook specification in this module."""

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Marks a policy method as the implementation of the hook of the same name."""

EVICTION = "eviction"
ROUTING = "routing"
ADMISSION = "admission"
FAIRNESS = "fairness"
KINDS: tuple[str, ...] = (EVICTION, ROUTING, ADMISSION, FAIRNESS)
"""The four policy kinds; a policy set holds at most one active policy of each."""

CLUSTER_KINDS: tuple[str, ...] = (ROUTING,)
"""The kinds the cluster tier (the gateway) calls: where a call goes, work stealing."""
NODE_KINDS: tuple[str, ...] = (EVICTION, ADMISSION, FAIRNESS)
"""The kinds an engine (simulated or vLLM) calls: its KV cache, its waiting queue's order."""


# --------------------------------------------------------------------------------------------
# eviction


@hookspec(firstresult=True)
def saga_eviction_order(
    ctx: SchedulingContext, candidates: Sequence[CacheEntryView]
) -> list[int] | None:
    """Order the evictable cache entries of a node, first to evict first.

    Called when the engine needs KV room. ``candidates`` are the leaf segments that may be
    evicted now (unpinned, no cached children). Return their ``entry_id`` values in eviction
    order; the engine evicts tail blocks of the first entries until it has room and asks again
    if evicting a leaf exposed its parent. Ids not in ``candidates`` are ignored; candidates left
    out are evicted after the listed ones, in the engine's order.
    """


@hookspec(firstresult=True)
def saga_tool_retention_s(ctx: SchedulingContext, workflow: WorkflowView) -> float | None:
    """Seconds to pin a workflow's cached context when its agent starts a tool.

    Called at ``tool_start``. 0 means do not pin (vLLM's behaviour: the blocks become evictable
    as soon as the call ends); a positive value pins them until the tool ends or the time runs
    out, whichever is first (Continuum's TTL).
    """


# --------------------------------------------------------------------------------------------
# routing (cluster tier)


@hookspec(firstresult=True)
def saga_route_call(
    ctx: SchedulingContext, call: CallView, workflow: WorkflowView, nodes: Sequence[NodeView]
) -> str | None:
    """Choose the node for a call; return its ``node_id``.

    ``workflow.home_node`` is None for a workflow's first call; the engine records the chosen
    node as the workflow's home, so affinity policies return the home node for later calls.
    """


@hookspec(firstresult=True)
def saga_rebalance(
    ctx: SchedulingContext, nodes: Sequence[NodeView], workflows: Sequence[WorkflowView]
) -> list[Migration] | None:
    """Work stealing: which workflows change home node when load is skewed.

    Called periodically by the cluster with the live workflows. Only workflows not in a running
    call may move (the engine drops any other migration). Return ``[]`` for no move.
    """


# --------------------------------------------------------------------------------------------
# admission (node tier)


@hookspec(firstresult=True)
def saga_admission_order(
    ctx: SchedulingContext,
    node: NodeView,
    waiting: Sequence[CallView],
    priorities: Mapping[str, float],
) -> list[str] | None:
    """Order a node's waiting calls for admission; return their ``call_id`` values.

    ``priorities`` maps each waiting call id to the fairness policy's priority (lower first).
    An admission policy may regroup within what fairness allows (for instance cached-prefix first
    within a priority band). The engine admits in this order while memory and batch limits allow.
    """


# --------------------------------------------------------------------------------------------
# fairness


@hookspec(firstresult=True)
def saga_call_priority(
    ctx: SchedulingContext, call: CallView, workflow: WorkflowView, tenant: TenantView
) -> float | None:
    """Priority of a waiting call; lower is admitted first.

    Called for each waiting call at each scheduling step in which the node admits; the result
    feeds ``saga_admission_order`` as ``priorities``.
    """


@hookspec
def saga_record_service(
    ctx: SchedulingContext, call: CallView, prefill_tokens: int, decode_tokens: int, gpu_s: float
) -> None:
    """Account service delivered to a call (and so to its workflow and tenant).

    Called at least once per scheduling step for each call that got tokens, or aggregated per
    call segment; ``prefill_tokens`` counts only tokens actually computed (not cache hits).
    """


# --------------------------------------------------------------------------------------------
# all kinds


@hookspec
def saga_observe(ctx: SchedulingContext, event: WorkflowEvent) -> None:
    """See a workflow event (call start/end, tool start/end, workflow end).

    Every active policy gets every event, after the manager has updated the Agent Execution
    Graph with it. Policies use it to keep per-workflow state (and to drop it at
    ``workflow_end``).
    """


HOOKS_BY_KIND: Mapping[str, tuple[str, ...]] = {
    EVICTION: ("saga_eviction_order", "saga_tool_retention_s"),
    ROUTING: ("saga_route_call", "saga_rebalance"),
    ADMISSION: ("saga_admission_order",),
    FAIRNESS: ("saga_call_priority", "saga_record_service"),
}
"""The decision hooks each kind must answer; ``saga_observe`` is optional for every kind."""

ALL_HOOKS: tuple[str, ...] = (
    *HOOKS_BY_KIND[EVICTION],
    *HOOKS_BY_KIND[ROUTING],
    *HOOKS_BY_KIND[ADMISSION],
    *HOOKS_BY_KIND[FAIRNESS],
    "saga_observe",
)

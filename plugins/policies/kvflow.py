"""KVFlow (the peer set ``kvflow``): eviction driven by each agent's steps to execution.

Source: Pan et al., "KVFlow: Efficient Prefix Caching for Accelerating LLM-Based Multi-Agent
Workflows", arXiv 2507.07400. KVFlow keeps an *Agent Step Graph* of the workflow and gives every
agent a *steps-to-execution* value: how many workflow steps remain before it runs again. Each
node of SGLang's radix tree takes the smallest value among the agents that use it, and eviction
takes the largest value first (least recently used among equals), so the cache of an agent about
to run survives and that of an agent far from its turn goes.

On our workloads every workflow is one agent whose steps form a chain (LLM call, tool, LLM
call, ...), so its steps to execution are: 0 while a call of it waits or runs (it is executing
or about to), 1 while its agent runs a tool (its next step is the call after the tool), and
"never" once it is done. A shared segment (several workflows) takes the smallest value of the
live ones, as a radix node does; the view names no owner for it, so it is treated as 0.

Left out, stated: KVFlow's overlapped CPU-to-GPU prefetch of a paused agent's cache; the
simulator models no host-memory tier, so there is nothing to prefetch from. No pinning either:
KVFlow orders eviction, it does not reserve memory.
"""

from __future__ import annotations

from collections.abc import Sequence

from plugins.base import Policy
from plugins.hookspecs import EVICTION, hookimpl
from plugins.policies.eviction import lru_key
from plugins.views import CacheEntryView, SchedulingContext, WorkflowView

NEVER = 1 << 30
"""Steps to execution of a finished (or unknown) workflow: evicted before any live one."""

_STEPS_BY_STATE = {"queued": 0, "running": 0, "waiting_tool": 1}


def steps_to_execution(ctx: SchedulingContext, workflow_id: str | None) -> int:
    """KVFlow's value for a cache entry's owner (see the module docstring)."""
    if workflow_id is None:
        return 0
    wf = ctx.workflow(workflow_id)
    if wf is None:
        return NEVER
    return _STEPS_BY_STATE.get(wf.state, NEVER)


class KVFlowEviction(Policy):
    """KVFlow: evict the entries whose agent is the most steps from executing first (LRU among
    equals, SGLang's radix cache order)."""

    name = "kvflow"
    kind = EVICTION
    version = "1.0"
    summary = "KVFlow: largest steps-to-execution first (agent step graph), LRU among equals"

    @hookimpl
    def saga_eviction_order(
        self, ctx: SchedulingContext, candidates: Sequence[CacheEntryView]
    ) -> list[int]:
        steps: dict[str | None, int] = {}

        def key(e: CacheEntryView) -> tuple[int, float, int, int]:
            wid = e.workflow_id
            value = steps.get(wid)
            if value is None:
                value = steps[wid] = steps_to_execution(ctx, wid)
            return (-value, *lru_key(e))

        return [e.entry_id for e in sorted(candidates, key=key)]

    @hookimpl
    def saga_tool_retention_s(self, ctx: SchedulingContext, workflow: WorkflowView) -> float:
        return 0.0

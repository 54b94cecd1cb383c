"""Per-workload data every policy run shares: tree index, call paths, isolated times.

Building the write path of 30k calls and their isolated (no-contention) latency takes about a
second; a bench runs several policy sets on the identical workload, so it is computed once.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodeagent.sim.costmodel import CostModel
from nodeagent.sim.isolated import (
    call_isolated_seconds,
    own_reused_tokens,
    workflow_isolated_seconds,
)
from nodeagent.sim.kvcache import TreeIndex
from nodeagent.workloads.model import ROOT, Workload


@dataclass(slots=True)
class CallPlan:
    """What the engine needs about one call of the workload."""

    path: list[int]
    """Write path: prompt segments root..prompt_segment, then the output segment if re-sent."""
    path_end: int
    """Token position the write path ends at (prompt + re-sent output)."""
    own_cached_tokens: int
    """Block-aligned prefix this prompt shares with the previous call's computed KV."""
    isolated_s: float
    """Cost-model latency alone on an idle instance, cached prefix = own_cached_tokens."""


@dataclass(slots=True)
class PreparedWorkload:
    """A workload plus the derived per-call data (see module docstring)."""

    workload: Workload
    index: TreeIndex
    calls: dict[str, list[CallPlan]]
    isolated_tct_s: dict[str, float]
    """Isolated task completion time: isolated call latencies plus every gap between calls
    (``nodeagent.sim.isolated``, the definition the live control plane shares)."""

    @property
    def n_calls(self) -> int:
        return sum(len(v) for v in self.calls.values())


def own_cached_tokens(workload: Workload, prev_last_seg: int, prev_kv_tokens: int,
                      prompt_seg: int, block_size: int) -> int:
    """Prefix of the prompt ending at ``prompt_seg`` that the previous call left cached.

    The previous call computed ``prev_kv_tokens`` tokens along the path ending at
    ``prev_last_seg``; only full blocks are reusable and the last prompt token is always
    recomputed (vLLM caps a full hit at prompt - 1).
    """
    common = workload.tree.common_prefix_tokens(prev_last_seg, prompt_seg)
    prompt = workload.tree.end_tokens(prompt_seg)
    return own_reused_tokens(common, prev_kv_tokens, prompt, block_size)


def prepare(workload: Workload, cost: CostModel) -> PreparedWorkload:
    """Compute the write paths and isolated times of every call (once per workload)."""
    bs = cost.profile.block_size
    tree = workload.tree
    index = TreeIndex(tree, bs)
    calls: dict[str, list[CallPlan]] = {}
    iso_tct: dict[str, float] = {}
    for wf in workload.workflows:
        plans: list[CallPlan] = []
        prev_seg = ROOT
        prev_kv = 0
        isolated: list[float] = []
        for i, c in enumerate(wf.calls):
            path = tree.path(c.prompt_segment)
            end = c.input_tokens
            out_seg = getattr(c, "output_segment", ROOT)
            if out_seg != ROOT:
                path.append(out_seg)
                end = tree.end_tokens(out_seg)
            own = 0 if i == 0 else own_cached_tokens(workload, prev_seg, prev_kv,
                                                     c.prompt_segment, bs)
            iso = call_isolated_seconds(cost, c.input_tokens, own, c.output_tokens)
            plans.append(CallPlan(path, end, own, iso))
            isolated.append(iso)
            prev_seg = path[-1]
            prev_kv = min(end, c.input_tokens + c.output_tokens - 1)
        calls[wf.workflow_id] = plans
        iso_tct[wf.workflow_id] = workflow_isolated_seconds(
            isolated, [c.gap_after_s for c in wf.calls])
    return PreparedWorkload(workload, index, calls, iso_tct)

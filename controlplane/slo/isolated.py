"""A live workflow's isolated time, from what was recorded about it.

The per-call and per-workflow formula is ``nodeagent.sim.isolated``, the one ``saga bench`` uses;
this module only turns recorded ``Call`` rows into its inputs:

* **Which cost model.** Each completed call is costed on its own node: a vLLM node that measured
  its single-request per-token costs (heartbeat ``isolated_*_s_per_token``) by those; otherwise
  the simulated profile the node registered, or the one matching the GPU and model it reported
  (``profile_for``). A call whose node has neither makes the whole workflow *unevaluable*.
* **Reused prefix.** What running alone would reuse is the workflow's own previous context (the
  bench's definition), not the ``cached_tokens`` the node served (those include other workflows'
  shared prefixes and miss what contention evicted). Agents re-send the conversation, so a prompt
  at least as long as the previous completed call's prompt plus output repeats that context:
  it reuses prompt + output - 1 tokens of it, whole blocks, capped at prompt - 1. A shorter
  prompt (the agent rewrote or compacted its conversation) reuses at most what the node really
  served, capped the same way.
* **Agent time.** Everything outside the calls is the agent's own time, taken as it happened:
  from submission to the first call, the gaps between calls (tools, think time, retries) and from
  the last call to the end. Calls that overlap in time (an agent calling in parallel) form one
  stretch, charged the longest isolated latency among its completed calls; a call that did not
  complete (failed, node lost) contributes no isolated latency, so its time counts as delay.

    isolated = head + workflow_isolated_seconds(stretch latencies, gaps between stretches) + tail

and slowdown = TCT / isolated with TCT = end - submission, so a workflow that ran alone on an
idle instance has slowdown 1 (calls take their isolated latency, the rest is the same time).
A simulated node run faster than real time (``--speed``) serves faster than its profile, so
slowdowns below 1 are possible there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from nodeagent.sim.isolated import (
    CallCost,
    MeasuredCost,
    call_isolated_seconds,
    cost_model,
    own_reused_tokens,
    profile_for,
    workflow_isolated_seconds,
)

if TYPE_CHECKING:
    from controlplane.nodes.models import Node
    from controlplane.workflows.models import Call, Workflow


@dataclass(frozen=True, slots=True)
class Estimate:
    """A workflow's isolated time (None: unevaluable), what it was computed from, and how many
    of its own previously computed tokens its nodes had to compute again."""

    seconds: float | None
    basis: str
    calls: int
    recompute_tokens: int | None = None


def node_cost(node: Node | None) -> tuple[CallCost | None, int, str]:
    """(cost model, KV block size, what it is) of a node; None when it has none."""
    if node is None:
        return None, 0, "a call's node is no longer registered"
    prefill, decode = node.isolated_prefill_s_per_token, node.isolated_decode_s_per_token
    if node.engine == "vllm" and prefill and decode:
        measured = MeasuredCost(prefill, decode)
        return measured, measured.block_size, f"measured single-request costs of {node.name}"
    profile = profile_for(node.profile, node.gpu_model, node.model_name, node.gpu_count)
    if profile is not None:
        return cost_model(profile.name), profile.block_size, f"profile {profile.name}"
    reported = ", ".join(part for part in (node.profile and f"profile {node.profile!r}",
                                           node.gpu_model, node.model_name) if part)
    return None, 0, (f"node {node.name} has no known profile ({reported or 'nothing reported'}) "
                     "and no measured costs")


def reused_tokens(previous: Call | None, call: Call, block_size: int) -> int:
    """Prompt tokens of ``call`` that running alone would reuse from the workflow's previous
    completed call (module docstring)."""
    if previous is None:
        return 0
    return reused_after(previous.prompt_tokens + previous.output_tokens, call.prompt_tokens,
                        call.cached_tokens, block_size)


def reused_after(previous_context_tokens: int, prompt_tokens: int, served_tokens: int,
                 block_size: int) -> int:
    """``reused_tokens`` from counts: the previous completed call's prompt plus output (0: no
    previous call), this prompt, and what its node served from cache (module docstring)."""
    if previous_context_tokens <= 0:
        return 0
    prompt = max(prompt_tokens, 1)
    common = previous_context_tokens if prompt >= previous_context_tokens else served_tokens
    return own_reused_tokens(common, previous_context_tokens - 1, prompt, block_size)


def call_isolated_s(cost: CallCost, block_size: int, previous_context_tokens: int,
                    prompt_tokens: int, served_tokens: int, output_tokens: float) -> float:
    """One call's isolated seconds on ``cost`` (in flight: at an expected output length)."""
    own = reused_after(previous_context_tokens, prompt_tokens, served_tokens, block_size)
    return call_isolated_seconds(cost, max(prompt_tokens, 1), own,
                                 max(round(output_tokens), 1))


def estimate(workflow: Workflow, end: datetime) -> Estimate:
    """The isolated time of ``workflow`` if it ends at ``end`` (module docstring)."""
    from controlplane.workflows.models import CallOutcome

    calls = list(workflow.calls.select_related("node").order_by("seq"))
    if not calls:
        return Estimate(None, "no calls recorded", 0)
    start = workflow.submitted_at
    span = max((end - start).total_seconds(), 0.0)
    latency: dict[int, float] = {}
    recompute = 0
    bases: list[str] = []
    previous: Call | None = None
    for call in calls:
        if call.outcome != CallOutcome.COMPLETED:
            continue
        cost, block_size, basis = node_cost(call.node)
        if cost is None:
            return Estimate(None, basis, len(calls))
        if basis not in bases:
            bases.append(basis)
        own = reused_tokens(previous, call, block_size)
        latency[call.pk] = call_isolated_seconds(cost, max(call.prompt_tokens, 1), own,
                                                 max(call.output_tokens, 1))
        recompute += max(own - call.cached_tokens, 0)
        previous = call
    if not latency:
        return Estimate(None, "no call completed", len(calls))
    stretches = _stretches(calls, start, end)
    stretch_s = [max((latency.get(pk, 0.0) for pk in members), default=0.0)
                 for _a, _b, members in stretches]
    gaps = [after[0] - before[1] for before, after in zip(stretches, stretches[1:], strict=False)]
    head = stretches[0][0]
    tail = span - stretches[-1][1]
    seconds = head + workflow_isolated_seconds(stretch_s, [*gaps, 0.0]) + tail
    return Estimate(seconds if seconds > 0 else None, "; ".join(bases), len(calls), recompute)


def _stretches(calls: list[Call], start: datetime, end: datetime
               ) -> list[tuple[float, float, list[int]]]:
    """Calls' [queued, finished] intervals in seconds since ``start``, clipped to the workflow's
    life, merged where they overlap: (from, to, call ids)."""
    limit = max((end - start).total_seconds(), 0.0)

    def at(moment: datetime | None) -> float:
        value = limit if moment is None else (moment - start).total_seconds()
        return min(max(value, 0.0), limit)

    intervals = sorted((at(c.queued_at), max(at(c.queued_at), at(c.finished_at)), c.pk)
                       for c in calls)
    merged: list[tuple[float, float, list[int]]] = []
    for a, b, pk in intervals:
        if merged and a <= merged[-1][1]:
            first, last, members = merged[-1]
            merged[-1] = (first, max(last, b), [*members, pk])
        else:
            merged.append((a, b, [pk]))
    return merged

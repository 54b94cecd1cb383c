"""Isolated time: how long a call, and a whole workflow, would take alone on an idle instance.

This is the denominator of every slowdown SAGA reports, ``saga bench`` (``nodeagent.sim.prepared``)
and the live control plane (``controlplane.slo.isolated``) alike, so the two mean the same:

    isolated(call)     = CostModel.isolated_call_seconds(prompt, own_reused, output)
                         (chunked prefill of prompt - own_reused tokens after own_reused cached
                         ones, the last prefill step sampling the first output token, then
                         output - 1 single-sequence decode steps)
    isolated(workflow) = sum over its calls of isolated(call) + every gap between calls
                         (tool runs, think time: the agent's own time, taken as it happened)
    slowdown           = TCT / isolated(workflow)

``own_reused`` is the prefix of the call's prompt that the workflow's OWN previous call left
computed (its prompt plus its output, whole KV blocks, never the last prompt token): an idle
instance running the workflow alone would still hold exactly that. It is not the prefix the
node's cache happened to serve, which includes other workflows' shared prefixes (a template's
system prompt) and misses what contention evicted.

Where a node has no profile but measured its own per-token costs (vLLM nodes: only from steps
in which a single request ran, so queueing and batching never leak in), ``MeasuredCost`` stands
in for the cost model with the same call shape.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from nodeagent.sim.costmodel import CostModel
from nodeagent.sim.profiles import DEFAULT_BLOCK_SIZE, PROFILES, Profile


class CallCost(Protocol):
    """What isolated time needs of a cost model (``CostModel`` and ``MeasuredCost``)."""

    def isolated_call_seconds(self, prompt_tokens: int, cached_tokens: int,
                              output_tokens: int) -> float: ...


@dataclass(frozen=True, slots=True)
class MeasuredCost:
    """A node's measured single-request costs: a prefill step of ``n`` tokens takes
    ``prefill_step_s + n * prefill_s_per_token`` (the step that finishes the prefill samples the
    first output token; prompts longer than ``chunk_tokens``, the engine's
    max_num_batched_tokens, take several steps) and each decode step ``decode_s_per_token``."""

    prefill_s_per_token: float
    decode_s_per_token: float
    block_size: int = DEFAULT_BLOCK_SIZE
    prefill_step_s: float = 0.0
    chunk_tokens: int = 8192

    def prefill_seconds(self, tokens: int) -> float:
        """Chunked prefill of ``tokens`` alone: one step per chunk of ``chunk_tokens``."""
        if tokens <= 0:
            return 0.0
        steps = -(-tokens // max(self.chunk_tokens, 1))
        return steps * self.prefill_step_s + tokens * self.prefill_s_per_token

    def isolated_call_seconds(self, prompt_tokens: int, cached_tokens: int,
                              output_tokens: int) -> float:
        """Same shape as ``CostModel.isolated_call_seconds``: at least the last prompt token is
        prefilled, then output_tokens - 1 decode steps."""
        if prompt_tokens < 1 or output_tokens < 1 or cached_tokens < 0:
            raise ValueError("isolated_call_seconds needs prompt_tokens >= 1, "
                             "output_tokens >= 1, cached_tokens >= 0")
        cached = min(cached_tokens, prompt_tokens - 1)
        return (self.prefill_seconds(prompt_tokens - cached)
                + (output_tokens - 1) * self.decode_s_per_token)

    @property
    def queue_s_per_token(self) -> float:
        """Seconds per token of a queue of prompts cleared in full chunks."""
        return self.prefill_s_per_token + self.prefill_step_s / max(self.chunk_tokens, 1)


def own_reused_tokens(common_prefix_tokens: int, previous_computed_tokens: int,
                      prompt_tokens: int, block_size: int) -> int:
    """Tokens of a prompt that running alone would reuse from the workflow's previous call.

    ``common_prefix_tokens``: how much of this prompt repeats the previous call's context;
    ``previous_computed_tokens``: how many tokens the previous call computed (its prompt plus
    its output but the last output token, whose KV is never written). Only whole blocks are
    reusable and the last prompt token is always recomputed (vLLM caps a full hit at
    prompt - 1).
    """
    cached = min(common_prefix_tokens, previous_computed_tokens, prompt_tokens - 1)
    return max(0, cached // block_size * block_size)


def call_isolated_seconds(cost: CallCost, prompt_tokens: int, own_reused: int,
                          output_tokens: int) -> float:
    """Latency of one call alone on an idle instance that holds its workflow's own previous
    context (``own_reused`` tokens of it)."""
    return cost.isolated_call_seconds(prompt_tokens, own_reused, output_tokens)


def workflow_isolated_seconds(call_seconds: Sequence[float],
                              gaps_after_s: Sequence[float]) -> float:
    """A workflow's isolated completion time: its calls' isolated latencies plus the gap after
    every call but the last (the order of additions is part of the contract: the bench's
    results are reproduced bit for bit)."""
    total = 0.0
    last = len(call_seconds) - 1
    for i, iso in enumerate(call_seconds):
        total += iso + (gaps_after_s[i] if i < last else 0.0)
    return total


@dataclass(frozen=True, slots=True)
class IsolatedCall:
    """One call as isolated time sees it."""

    prompt_tokens: int
    own_reused_tokens: int
    output_tokens: int
    gap_after_s: float = 0.0


def isolated_tct_seconds(cost: CallCost, calls: Sequence[IsolatedCall]) -> float:
    """``workflow_isolated_seconds`` of ``calls`` on one cost model."""
    return workflow_isolated_seconds(
        [call_isolated_seconds(cost, c.prompt_tokens, c.own_reused_tokens, c.output_tokens)
         for c in calls],
        [c.gap_after_s for c in calls])


# ------------------------------------------------------------------ which cost model a node has
_MODEL_SIZE = re.compile(r"(?<![0-9.])(8|70)b(?![a-z0-9])")
_LLAMA3 = re.compile(r"llama[-_ ]?3")


def profile_for(profile: str = "", gpu_model: str = "", model_name: str = "",
                gpu_count: int = 1) -> Profile | None:
    """The simulated profile describing a node: the one it registered by name (sim nodes), else
    the profile whose GPU and model match what it reported (``NVIDIA H100 80GB HBM3`` running
    ``meta-llama/Meta-Llama-3-8B-Instruct`` is ``h100-llama3-8b``); None when none matches
    (its isolated time is then unknown, never guessed)."""
    if profile in PROFILES:
        return PROFILES[profile]
    gpu = gpu_model.lower()
    family = next((f for f in ("a100", "h100", "h200") if f in gpu), None)
    model = model_name.lower()
    size = _MODEL_SIZE.search(model)
    if family is None or size is None or not _LLAMA3.search(model):
        return None
    name = f"{family}-llama3-{size.group(1)}b"
    if size.group(1) == "70":
        name += f"-tp{gpu_count}"
    return PROFILES.get(name)


@lru_cache(maxsize=16)
def cost_model(profile_name: str) -> CostModel:
    """One CostModel per profile per process (building one expands the linear table)."""
    return CostModel(profile_name)

"""What the node agent needs from an engine, whichever it is (simulated or vLLM).

The HTTP server and the control channel speak only this interface, so the same agent code
serves a laptop demo (``sim``) and a GPU host (``vllm``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from nodeagent import wire
from nodeagent.openai_api import Message, SimScript  # the request types, defined with the API
from plugins.views import TenantView


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """What the node registers with the control plane."""

    engine: str
    model: str
    gpu_model: str
    gpu_count: int
    kv_capacity_tokens: int
    max_num_seqs: int = 0
    profile: str = ""
    """The simulated profile (GPU x model) whose cost model the node runs; empty for vLLM."""
    max_model_len: int = 0
    """Longest request (prompt plus output) the model takes; 0: bounded by the KV cache only."""


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What each heartbeat carries (``nodeagent.wire.Heartbeat``), in the contract's terms
    (``plugins.views.NodeView``): ``kv_used_tokens`` is capacity minus KV free without evicting.
    ``cached_workflows``: private cached tokens of this node's workflows, the largest
    ``wire.MAX_CACHED_WORKFLOWS`` (what routing and work stealing price a move with)."""

    waiting: int
    running: int
    kv_used_tokens: int
    kv_total_tokens: int
    prefix_cache_hit_rate: float
    queue_delay_s: float
    load: float = 0.0
    cached_workflows: Mapping[str, int] = field(default_factory=dict)

    def heartbeat(self) -> wire.Heartbeat:
        return wire.Heartbeat(
            waiting=self.waiting, running=self.running, kv_used_tokens=self.kv_used_tokens,
            kv_total_tokens=self.kv_total_tokens,
            prefix_cache_hit_rate=min(max(self.prefix_cache_hit_rate, 0.0), 1.0),
            queue_delay_s=self.queue_delay_s, load=self.load,
            cached_workflows=dict(self.cached_workflows))


@dataclass(frozen=True, slots=True)
class ToolCallOut:
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    request_id: str
    workflow_id: str
    tenant: str
    template: str
    messages: tuple[Message, ...]
    max_output_tokens: int | None
    tools: tuple[str, ...] = ()
    script: SimScript | None = None
    raw_prompt: str | None = None  # /v1/completions
    tool_choice: str | None = None
    """The tool the call must call (OpenAI's named ``tool_choice``), None: the model decides."""
    tool_parameters: tuple[tuple[str, str], ...] = ()
    """(tool name, JSON schema of its arguments as JSON text) of the tools that declare one."""
    sampling: tuple[tuple[str, Any], ...] = ()
    """Sampling options the client set (temperature, top_p, seed, ...; ``openai_api.
    SAMPLING_FIELDS``): a real model honours them, the simulated engine has no use for them."""


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    service_s: float | None = None
    """Engine seconds the call received (``WorkflowView.service_s``'s share), where the engine
    knows it; the gateway adds it to its workflow's record."""


@dataclass(slots=True)
class Chunk:
    """A piece of a generation: text deltas, then one final chunk with ``finish_reason``."""

    text: str = ""
    finish_reason: str | None = None
    tool_calls: tuple[ToolCallOut, ...] = ()
    usage: Usage | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class EngineUnavailable(Exception):
    """The engine cannot take the request now (shutting down, request larger than the KV)."""


class ContextTooLong(EngineUnavailable):
    """The request can never run here: its prompt (plus output) is larger than the KV cache.
    Unlike other ``EngineUnavailable`` errors a retry cannot help, so the API answers 400
    ``context_length_exceeded`` rather than a retryable 503."""


@dataclass(frozen=True, slots=True)
class PolicyFailureReport:
    """A policy that failed on this node: its kind, the error, the hook that raised ("" for a
    policy the engine refused outright) and the policy that answers instead ("" if unknown)."""

    kind: str
    error: str
    hook: str = ""
    replaced_by: str = ""


class Engine(Protocol):
    info: EngineInfo

    def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Stream the request's output; the last chunk carries ``finish_reason`` and usage."""
        ...

    def load(self) -> LoadReport: ...

    def tool_started(self, workflow_id: str, tool_name: str) -> None:
        """The workflow's agent runs a tool now: ask the eviction policy whether to keep its
        cache until the next call."""
        ...

    def tool_ended(self, workflow_id: str) -> None:
        """The workflow's tool finished (its next call follows); what is kept for it stays
        until that call is admitted."""
        ...

    def workflow_ended(self, workflow_id: str) -> None:
        """The control plane closed the workflow: drop its pins and state."""
        ...

    def apply_policy(self, kind: str, name: str, params: Mapping[str, Any]) -> None:
        """Activate a policy at the next scheduling step; raises PolicyConfigError when invalid
        (the previous policy stays active)."""
        ...

    def drain_policy_failures(self) -> list[PolicyFailureReport]:
        """Policies that raised at run time (or that the engine refused) since the last call;
        the engine has already fallen back to the last good policy of that kind."""
        ...

    def active_policies(self) -> dict[str, str]:
        """kind -> "name@version" of what runs now."""
        ...

    def set_tenants(self, tenants: Sequence[TenantView]) -> None: ...

    def load_execution_graphs(self, graphs: Sequence[Mapping[str, Any]]) -> None:
        """Install Agent Execution Graphs the control plane learned from completed workflows
        (``AgentTemplate.aeg_stats``); they replace this node's graphs of those templates."""
        ...

    def counters(self) -> dict[str, float]:
        """Monotonic counters and gauges for /metrics (names without prefix)."""
        ...

    async def close(self) -> None: ...

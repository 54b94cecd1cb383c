"""What the node agent needs from an engine, whichever it is (simulated or vLLM).

The HTTP server and the control channel speak only this interface, so the same agent code
serves a laptop demo (``sim``) and a GPU host (``vllm``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from plugins.views import TenantView


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """What the node registers with the control plane."""

    engine: str
    model: str
    gpu_model: str
    gpu_count: int
    kv_capacity_tokens: int


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What each heartbeat carries (the control plane's HeartbeatMessage)."""

    waiting: int
    running: int
    kv_used_tokens: int
    kv_total_tokens: int
    prefix_cache_hit_rate: float
    queue_delay_s: float
    load: float = 0.0

    def as_message(self) -> dict[str, Any]:
        return {"type": "heartbeat", "waiting": self.waiting, "running": self.running,
                "kv_used_tokens": self.kv_used_tokens, "kv_total_tokens": self.kv_total_tokens,
                "prefix_cache_hit_rate": self.prefix_cache_hit_rate,
                "queue_delay_s": self.queue_delay_s, "load": self.load}


@dataclass(frozen=True, slots=True)
class ToolCallOut:
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message in canonical form (what prefix matching hashes)."""

    role: str
    content: str
    tool_calls: tuple[tuple[str, str], ...] = ()  # (function name, arguments)
    tool_call_id: str = ""


@dataclass(frozen=True, slots=True)
class SimScript:
    """How a simulated call should end (replays and demos script their outcomes; a real model
    decides by itself, so the vLLM engine ignores this)."""

    output_tokens: int | None = None
    finish_reason: str | None = None  # "stop" | "tool_calls" | "length"
    tool_name: str | None = None


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


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int


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
        """The workflow's next call arrived: release what was kept for the tool."""
        ...

    def apply_policy(self, kind: str, name: str, params: Mapping[str, Any]) -> None:
        """Activate a policy at the next scheduling step; raises PolicyConfigError when invalid
        (the previous policy stays active)."""
        ...

    def drain_policy_failures(self) -> list[tuple[str, str]]:
        """(kind, error) of policies that raised at run time since the last call; the engine
        has already fallen back to the last good policy of that kind."""
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

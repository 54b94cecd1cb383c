"""What both sides of ``saga fidelity`` are configured with, and what a replay records.

One :class:`EngineShape` configures the real vLLM engine and the simulated one alike: KV blocks
(counted as vLLM counts its pool, null block included, so ``num_blocks - 1`` are usable on both
sides), block size, ``max_num_batched_tokens`` and ``max_num_seqs``. Both sides keep time on the
same clock, the simulated engine's cost model: the real engine's steps take the cost model's
time of what they scheduled (a CPU step's wall time says nothing about a GPU's), so arrivals and
tool pauses meet both engines at the same steps and their decisions can be compared one by one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from nodeagent.sim import profiles
from nodeagent.sim.costmodel import CostModel

DEFAULT_PROFILE = "h100-llama3-8b"


@dataclass(frozen=True, slots=True)
class EngineShape:
    num_blocks: int = 64
    block_size: int = 32
    max_num_batched_tokens: int = 256
    max_num_seqs: int = 4
    max_model_len: int = 2048
    profile: str = DEFAULT_PROFILE
    """Cost model of both clocks (and of ``--timing``'s comparison)."""

    def __post_init__(self) -> None:
        for name in ("num_blocks", "block_size", "max_num_batched_tokens", "max_num_seqs",
                     "max_model_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.num_blocks < 2:
            raise ValueError("num_blocks must be >= 2 (vLLM keeps one as its null block)")
        if self.block_size % 16:
            raise ValueError(f"block_size must be a multiple of 16, got {self.block_size}")
        profiles.get_profile(self.profile)  # ValueError naming the valid ones

    @property
    def context_tokens(self) -> int:
        """The engine's context: ``max_model_len``, at most what the KV pool holds (vLLM refuses
        a context its pool cannot hold once)."""
        return min(self.max_model_len, self.kv_tokens)

    @property
    def kv_tokens(self) -> int:
        """Usable KV tokens on both sides."""
        return (self.num_blocks - 1) * self.block_size

    def cost_profile(self) -> profiles.Profile:
        base = profiles.get_profile(self.profile)
        return dataclasses.replace(
            base, name=f"fidelity-{self.num_blocks}x{self.block_size}",
            kv_capacity_tokens=self.kv_tokens, block_size=self.block_size,
            max_num_batched_tokens=self.max_num_batched_tokens, max_num_seqs=self.max_num_seqs)

    def cost_model(self) -> CostModel:
        return CostModel(self.cost_profile())


@dataclass
class ReplayResult:
    """One replay of a trace under one policy set, on one side.

    ``cached_tokens``: per call (``wf#seq``), the prefix-cache hit when it was first admitted.
    ``hit_tokens``: prefix-cache hits over every admission, re-admissions after a preemption
    included (what prefill was saved). ``admission_order``: calls in the order they were first
    admitted. ``steps``: scheduling steps that ran (the simulated engine runs identical steps as
    one macro-step; it counts each). ``engine_stats``: what the engine counted itself (vLLM:
    its own prefix-cache statistics).
    """

    side: str
    policy_set: str
    cached_tokens: dict[str, int] = field(default_factory=dict)
    hit_tokens: int = 0
    prompt_tokens: int = 0
    preemptions: int = 0
    admission_order: list[str] = field(default_factory=list)
    finished: int = 0
    steps: int = 0
    end_s: float = 0.0
    engine_stats: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[float, str, str]] = field(default_factory=list)
    """(time, admit | readmit | preempt | finish, call) in order: where two replays part."""
    step_timing: list[tuple[float, float]] = field(default_factory=list)
    """``--timing``: (measured wall seconds, cost-model seconds) of every real step."""

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("step_timing")
        return out


def call_id(workflow_id: str, seq: int) -> str:
    return f"{workflow_id}#{seq}"

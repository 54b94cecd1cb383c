"""One ``saga fidelity`` run: a trace, one real engine, one replay per policy set and side.

Replays run one after another on the same engine (its start takes most of a minute on a CPU),
each from an empty prefix cache under names of its own (:func:`~nodeagent.fidelity.trace.
tagged`); the simulated replay of the same tagged trace follows each real one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nodeagent.fidelity.compare import Agreement, compare
from nodeagent.fidelity.replay import EngineShape, ReplayResult
from nodeagent.fidelity.sim_side import replay_sim
from nodeagent.fidelity.trace import check_fits, tagged
from nodeagent.workloads.model import Workload

REPLAY_GAP_S = 1000.0
"""Clock time left between two replays (past every pin's deadline and idle timer)."""


@dataclass
class FidelityRun:
    shape: EngineShape
    workload: Workload
    engine_start_s: float = 0.0
    agreements: list[Agreement] = field(default_factory=list)
    replays: list[tuple[ReplayResult, ReplayResult]] = field(default_factory=list)
    wall_s: dict[str, float] = field(default_factory=dict)
    timing: dict[str, Any] | None = None

    @property
    def meets_targets(self) -> bool:
        return all(a.meets_targets for a in self.agreements)

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace": {"name": self.workload.name, "workflows": len(self.workload.workflows),
                      "calls": self.workload.n_calls,
                      "prompt_tokens": sum(c.input_tokens for w in self.workload.workflows
                                           for c in w.calls),
                      "output_tokens": sum(c.output_tokens for w in self.workload.workflows
                                           for c in w.calls)},
            "engine": {"num_blocks": self.shape.num_blocks, "block_size": self.shape.block_size,
                       "max_num_batched_tokens": self.shape.max_num_batched_tokens,
                       "max_num_seqs": self.shape.max_num_seqs,
                       "max_model_len": self.shape.context_tokens,
                       "cost_profile": self.shape.profile, "start_s": self.engine_start_s},
            "agreement": [a.to_dict() for a in self.agreements],
            "meets_targets": self.meets_targets,
            "replays": [{"vllm": v.to_dict(), "sim": s.to_dict()} for v, s in self.replays],
            "wall_s": self.wall_s,
            "timing": self.timing,
        }


def run_fidelity(engine: Any, workload: Workload, policy_sets: Sequence[str], *,
                 timing: bool = False,
                 progress: Callable[[str], None] = lambda message: None) -> FidelityRun:
    """Replay ``workload`` under each policy set on ``engine`` (a ``VllmReplayEngine``) and on
    the simulator; compare each pair."""
    shape: EngineShape = engine.shape
    check_fits(workload, shape.context_tokens)
    run = FidelityRun(shape, workload, engine_start_s=engine.start_s)
    start = engine.clock.now + REPLAY_GAP_S
    pairs: list[tuple[float, float]] = []
    for i, policy_set in enumerate(policy_sets):
        tag = f"p{i}-"
        trace = tagged(workload, tag, start)
        progress(f"replaying {workload.n_calls} calls under {policy_set} on vLLM")
        t0 = time.perf_counter()
        real = engine.replay(trace, policy_set, tag=tag, start_s=start, timing=timing)
        t1 = time.perf_counter()
        progress(f"replaying {workload.n_calls} calls under {policy_set} on the simulator")
        sim = replay_sim(trace, shape, policy_set)
        t2 = time.perf_counter()
        run.wall_s[policy_set] = round(t1 - t0, 2)
        run.wall_s[f"{policy_set} (sim)"] = round(t2 - t1, 3)
        run.replays.append((real, sim))
        run.agreements.append(compare(real, sim))
        pairs.extend(real.step_timing)
        start = real.end_s + REPLAY_GAP_S
    if timing:
        from nodeagent.fidelity.timing import summarize

        run.timing = summarize(pairs)
    return run

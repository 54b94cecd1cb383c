"""The simulated side of ``saga fidelity``: the bench's cluster harness with one node.

Nothing is changed for the comparison: the trace runs through :class:`~nodeagent.sim.cluster.
Cluster` (closed-loop agents, tool pauses, retention, the policy manager) and its
:class:`~nodeagent.sim.engine.SimEngine`, configured with the shape the real engine has. The
harness's own engine callbacks are observed to record what the real side records.
"""

from __future__ import annotations

from typing import Any

from nodeagent.fidelity.replay import EngineShape, ReplayResult
from nodeagent.sim.cluster import Cluster, ClusterConfig
from nodeagent.sim.engine import SimCall, SimEngine
from nodeagent.sim.prepared import prepare
from nodeagent.workloads.model import Workload
from plugins.manager import PolicyManager
from plugins.named_sets import parse_policy_set


class _RecordingCluster(Cluster):
    def __init__(self, *args: Any, result: ReplayResult, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.result = result

    def on_admit(self, engine: SimEngine, call: SimCall, now: float) -> None:
        if call.preemptions == 0:
            self.result.admission_order.append(call.call_id)
            self.result.cached_tokens[call.call_id] = call.hit_tokens
        self.result.events.append((now, "readmit" if call.preemptions else "admit",
                                   call.call_id))
        super().on_admit(engine, call, now)

    def on_preempt(self, engine: SimEngine, call: SimCall, now: float) -> None:
        self.result.events.append((now, "preempt", call.call_id))
        super().on_preempt(engine, call, now)

    def on_finish(self, engine: SimEngine, call: SimCall, now: float) -> None:
        self.result.events.append((now, "finish", call.call_id))
        super().on_finish(engine, call, now)


def replay_sim(workload: Workload, shape: EngineShape, policy_set: str) -> ReplayResult:
    """Replay ``workload`` on one simulated engine of ``shape`` under ``policy_set``."""
    cost = shape.cost_model()
    prepared = prepare(workload, cost)
    manager = PolicyManager()
    manager.activate_set(**parse_policy_set(policy_set).as_kwargs())
    result = ReplayResult(side="sim", policy_set=policy_set)
    cluster = _RecordingCluster(
        prepared, cost, manager,
        ClusterConfig(n_instances=1, kv_capacity_tokens=shape.kv_tokens, record_access=False),
        result=result)
    run = cluster.run()
    engine = cluster.engines[0]
    result.hit_tokens = engine.hit_tokens
    result.prompt_tokens = engine.prompt_tokens_admitted
    result.preemptions = engine.preemptions
    result.finished = run.calls_completed
    result.steps = engine.steps
    result.end_s = run.end_s
    result.engine_stats = {"evicted_blocks": engine.cache.evicted_blocks,
                           "macro_steps": engine.macro_steps,
                           "calls_lost": run.calls_lost}
    return result

"""Node-tier host adapters that need neither Django nor vLLM: the live simulated node.

:class:`SimNodeHost` drives a real :class:`~nodeagent.agent.sim_backend.SimBackend` (the
``sim`` engine of ``saga node``) through the entry points the node agent uses: ``generate``
for a call (the HTTP API's path), ``tool_started`` / ``tool_ended`` / ``workflow_ended`` (the
control channel's boundaries), ``apply_policy`` (a live activation), and the engine's own
wake-ups, which a :class:`ManualTimer` (the backend's ``timer`` seam) runs in simulated time
instead of the asyncio loop, deterministically.

The vLLM adapter lives with the vLLM tests (``tests/vllm/test_conformance.py``): it imports vLLM.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from nodeagent.agent.engine import GenerationRequest, SimScript
from nodeagent.agent.sim_backend import SimBackend
from nodeagent.sim import profiles
from nodeagent.sim.pins import SegmentPins
from plugins.hookspecs import NODE_KINDS
from plugins.manager import PolicyManager
from plugins.views import TenantView
from tests.conformance.recording import Recorder, recording_registry
from tests.conformance.scenarios import T0, Call, NodeConfig, Runs, token_text

BASE_PROFILE = "h100-llama3-8b"
"""The cost model of every node in the suite (vLLM's fake model steps take its step times)."""
MAX_EVENTS = 100_000


class _Handle:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualTimer:
    """A SimBackend timer whose clock moves only when the test runs its events."""

    def __init__(self, start_s: float = T0) -> None:
        self._now = start_s
        self._heap: list[tuple[float, int, _Handle, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_at(self, time_s: float, callback: Callable[..., None], *args: Any) -> _Handle:
        handle = _Handle()
        heapq.heappush(self._heap, (max(time_s, self._now), next(self._seq), handle, callback,
                                    args))
        return handle

    def _pop_due(self, until: float | None) -> bool:
        while self._heap:
            t, _, handle, callback, args = self._heap[0]
            if until is not None and t > until:
                return False
            heapq.heappop(self._heap)
            if handle.cancelled:
                continue
            self._now = max(self._now, t)
            callback(*args)
            return True
        return False

    def run_next(self) -> bool:
        """Run the next event; False when none is pending (the engine is idle)."""
        return self._pop_due(None)

    def run_until(self, time_s: float) -> None:
        for _ in range(MAX_EVENTS):
            if not self._pop_due(time_s):
                break
        self._now = max(self._now, time_s)


def profile_for(config: NodeConfig) -> profiles.Profile:
    """The suite's profile with the node's limits (block size 16, as vLLM's)."""
    base = profiles.get_profile(BASE_PROFILE)
    return dataclasses.replace(
        base, name=f"conformance-{config.max_num_seqs}-{config.max_num_batched_tokens}",
        max_num_seqs=config.max_num_seqs, max_num_batched_tokens=config.max_num_batched_tokens,
        kv_capacity_tokens=config.kv_tokens)


@contextlib.contextmanager
def registered_profile(config: NodeConfig) -> Iterator[str]:
    """The node's profile under a name ``SimBackend`` can look up (only while it is built)."""
    profile = profile_for(config)
    profiles.PROFILES[profile.name] = profile
    try:
        yield profile.name
    finally:
        profiles.PROFILES.pop(profile.name, None)


class SimNodeHost:
    """The live simulated node (SimBackend) as a scenario's NodeHost."""

    name = "sim"

    def __init__(self, config: NodeConfig, runs: Runs, tenants: Mapping[str, float],
                 policies: Mapping[str, tuple[str, Mapping[str, Any]]],
                 node_id: str = "node-0") -> None:
        self.recorder = Recorder()
        self.runs = runs
        self.timer = ManualTimer()
        manager = PolicyManager(recording_registry(self.recorder), kinds=NODE_KINDS)
        manager.activate_set(**{k: (n, dict(p)) for k, (n, p) in policies.items()})
        with registered_profile(config) as profile:
            self.backend = SimBackend(profile, model_name="conformance", manager=manager,
                                      node_id=node_id, kv_capacity_tokens=config.kv_tokens,
                                      timer=self.timer)
        self.backend.set_tenants([TenantView(name, weight) for name, weight in tenants.items()])
        self.admitted: list[str] = []
        self.admission_steps: dict[str, int] = {}
        self.preempted: list[str] = []
        self.finished: list[str] = []
        self.streams: dict[str, Any] = {}
        self._hook_engine_callbacks()

    def _hook_engine_callbacks(self) -> None:
        """Observe admissions, preemptions and finishes at the backend's own engine callbacks
        (the SimEngine calls its host's ``on_*``), and count scheduling steps (wake-ups)."""
        b = self.backend
        on_admit, on_preempt, on_finish, on_wake = (b.on_admit, b.on_preempt, b.on_finish,
                                                    b._on_wake)

        def admitted(engine: Any, call: Any, now: float) -> None:
            if call.call_id not in self.admission_steps:
                self.admitted.append(call.call_id)
                self.admission_steps[call.call_id] = self.recorder.step
            on_admit(engine, call, now)

        def preempted(engine: Any, call: Any, now: float) -> None:
            self.preempted.append(call.call_id)
            on_preempt(engine, call, now)

        def finished(engine: Any, call: Any, now: float) -> None:
            self.finished.append(call.call_id)
            on_finish(engine, call, now)

        def woke(time_s: float, version: int) -> None:
            if version == b.engine.version:
                self.recorder.step += 1
            on_wake(time_s, version)

        b.on_admit, b.on_preempt, b.on_finish, b._on_wake = (  # type: ignore[method-assign]
            admitted, preempted, finished, woke)

    # ------------------------------------------------------------------ NodeHost
    def now(self) -> float:
        return self.backend.now()

    def arrive(self, call: Call) -> None:
        finish = "tool_calls" if call.tool else "stop"
        request = GenerationRequest(
            request_id=call.call_id, workflow_id=call.workflow, tenant=call.tenant,
            template=call.template, messages=(), max_output_tokens=call.output_tokens,
            script=SimScript(call.output_tokens, finish, call.tool),
            raw_prompt=token_text(self.runs.prompt_ids(call.prompt)))
        self.streams[call.call_id] = self.backend.generate(request)

    def advance(self, seconds: float) -> None:
        self.timer.run_until(self.timer.now() + seconds)

    def run_until(self, what: str, done: Callable[[], bool]) -> None:
        for _ in range(MAX_EVENTS):
            if done():
                return
            if not self.timer.run_next():
                raise AssertionError(f"sim: the engine went idle before {what}")
        raise AssertionError(f"sim: {what} did not happen in {MAX_EVENTS} events")

    def tool_start(self, workflow: str, tool: str) -> None:
        self.backend.tool_started(workflow, tool)

    def tool_end(self, workflow: str) -> None:
        self.backend.tool_ended(workflow)

    def workflow_end(self, workflow: str) -> None:
        self.backend.workflow_ended(workflow)

    def swap(self, kind: str, name: str, params: Mapping[str, Any]) -> None:
        self.backend.apply_policy(kind, name, params)

    def active(self, kind: str) -> str:
        return self.backend.manager.active()[kind].name

    def pinned_blocks(self, workflow: str) -> int:
        if not self.backend.retention.is_held(workflow):
            return 0
        pinner = self.backend.retention.pinner
        assert isinstance(pinner, SegmentPins)
        return pinner.held_blocks(workflow)

    def node_view(self) -> dict[str, Any]:
        return self.recorder.normal(self.backend.engine.node_view(self.now()))

    def settle(self) -> None:
        return None

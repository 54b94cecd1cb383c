"""The vLLM node as a scenario host: a real SagaScheduler (vLLM 0.33's scheduler code on CPU,
``tests/vllm/harness.py``) stepped with ``schedule()`` / ``update_from_output()`` and fake model
outputs. Imports vLLM: only ``tests/vllm/test_conformance.py`` imports this module.

Entry points, as the node agent uses them: ``add_request`` for a call (tagged with its
workflow, tenant and template in ``extra_args``, as the OpenAI server passes ``vllm_xargs``),
the ``saga_control`` utility for tool boundaries, tenants and live activations, and the step
loop. The fake model takes, per step, the step time of the same cost model the simulated node
uses (``node_hosts.BASE_PROFILE``) on the scheduler's clock, so the two hosts' clocks advance
alike and vLLM's *measured* costs (service, isolated times, queue delay) are measured on the
simulated node's time scale.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import nodeagent.vllm_hooks.scheduler as saga_scheduler
from nodeagent.sim.costmodel import CostModel
from nodeagent.vllm_hooks.occupancy import private_cached_blocks
from plugins.manager import PolicyManager
from tests.conformance.node_hosts import MAX_EVENTS, profile_for, registered_profile
from tests.conformance.recording import Recorder, recording_registry
from tests.conformance.scenarios import T0, Call, NodeConfig, Runs
from tests.vllm.fakes import FakeClock
from tests.vllm.harness import fake_output, make_request, make_scheduler


@contextlib.contextmanager
def recording_manager(recorder: Recorder) -> Iterator[None]:
    """SagaScheduler builds its PolicyManager in ``__init__``: make it one over the recording
    registry while the scheduler is built (the manager is then the scheduler's own: its control
    channel activates and swaps policies in it by name)."""
    registry = recording_registry(recorder)
    original = saga_scheduler.PolicyManager
    saga_scheduler.PolicyManager = (  # type: ignore[assignment,misc]
        lambda **kwargs: PolicyManager(registry, **kwargs))
    try:
        yield
    finally:
        saga_scheduler.PolicyManager = original  # type: ignore[misc]


class VllmNodeHost:
    name = "vllm"

    def __init__(self, model_dir: Path, config: NodeConfig, runs: Runs,
                 tenants: Mapping[str, float],
                 policies: Mapping[str, tuple[str, Mapping[str, Any]]],
                 node_id: str = "node-0") -> None:
        self.recorder = Recorder()
        self.runs = runs
        self.clock = FakeClock(T0)
        self.t = T0
        """Scenario time: the clock can be ahead of it while a step that began earlier runs."""
        self.cost = CostModel(profile_for(config))
        # The node names its profile, as the simulated node does: isolated times and queue
        # delays come from the same cost model (the measured path has tests of its own).
        with recording_manager(self.recorder), registered_profile(config) as profile:
            self.scheduler: Any = make_scheduler(
                model_dir, num_blocks=config.kv_blocks, max_num_seqs=config.max_num_seqs,
                max_num_batched_tokens=config.max_num_batched_tokens,
                scheduling_policy="priority", saga={"node_id": node_id, "profile": profile},
                clock=self.clock)
        self.scheduler.saga_control("activate_set", {
            kind: {"name": name, "params": dict(params)} for kind, (name, params) in
            policies.items()})
        self.scheduler.saga_control("set_tenants", {"tenants": {
            name: {"weight": weight} for name, weight in tenants.items()}})
        self.admitted: list[str] = []
        self.admission_steps: dict[str, int] = {}
        self.preempted: list[str] = []
        self.finished: list[str] = []

    # ------------------------------------------------------------------ the step loop
    def _step_seconds(self, output: Any) -> float:
        pf = pf_ctx = chunks = nd = d_ctx = 0
        for request_id, q in output.num_scheduled_tokens.items():
            request = self.scheduler.requests[request_id]
            before = request.num_computed_tokens - q
            if before < request.num_prompt_tokens or q > 1:
                pf += q
                pf_ctx += before
                chunks += 1
            else:
                nd += 1
                d_ctx += before + 1
        return self.cost.step_seconds(pf, pf_ctx, nd, d_ctx, prefill_chunks=max(chunks, 1))

    def step(self) -> None:
        self.recorder.step += 1
        output = self.scheduler.schedule()
        for new in output.scheduled_new_reqs:
            if new.req_id not in self.admission_steps:
                self.admitted.append(new.req_id)
                self.admission_steps[new.req_id] = self.recorder.step
        self.preempted.extend(output.preempted_req_ids or ())
        self.clock.advance(self._step_seconds(output))
        outputs = self.scheduler.update_from_output(output, fake_output(self.scheduler, output))
        for outs in outputs.values():
            self.finished.extend(o.request_id for o in outs.outputs if o.finish_reason is not None)
        self._check_private_counts()

    def _check_private_counts(self) -> None:
        """The incrementally kept private cached blocks equal a recount from scratch."""
        scheduler = self.scheduler
        recount = private_cached_blocks(scheduler.saga_provenance,
                                        scheduler.kv_cache_manager.block_pool)
        assert scheduler.saga_provenance.private == recount, (
            f"step {self.recorder.step}: kept {scheduler.saga_provenance.private}, "
            f"recounted {recount}")

    # ------------------------------------------------------------------ NodeHost
    def now(self) -> float:
        return self.clock.now

    def arrive(self, call: Call) -> None:
        self.scheduler.add_request(make_request(
            call.call_id, self.runs.prompt_ids(call.prompt), max_tokens=call.output_tokens,
            workflow=call.workflow, tenant=call.tenant, template=call.template,
            arrival_time=self.t))

    def advance(self, seconds: float) -> None:
        target = self.t + seconds
        for _ in range(MAX_EVENTS):
            if not (self.scheduler.has_requests() and self.clock.now < target):
                break
            self.step()
        self.t = target
        self.clock.now = max(self.clock.now, target)

    def run_until(self, what: str, done: Callable[[], bool]) -> None:
        for _ in range(MAX_EVENTS):
            if done():
                self.t = max(self.t, self.clock.now)
                return
            if not self.scheduler.has_requests():
                raise AssertionError(f"vllm: the engine went idle before {what}")
            self.step()
        raise AssertionError(f"vllm: {what} did not happen in {MAX_EVENTS} steps")

    def tool_start(self, workflow: str, tool: str) -> None:
        self.scheduler.notify_tool_start(workflow, tool)

    def tool_end(self, workflow: str) -> None:
        self.scheduler.saga_control("tool_end", {"workflow_id": workflow})

    def workflow_end(self, workflow: str) -> None:
        self.scheduler.notify_workflow_end(workflow)

    def swap(self, kind: str, name: str, params: Mapping[str, Any]) -> None:
        self.scheduler.saga_control("activate", {"kind": kind, "name": name,
                                                 "params": dict(params)})

    def active(self, kind: str) -> str:
        return self.scheduler.saga_manager.active()[kind].name

    def pinned_blocks(self, workflow: str) -> int:
        pin = self.scheduler.saga_pins.pins.get(workflow)
        return pin.num_blocks if pin is not None else 0

    def node_view(self) -> dict[str, Any]:
        return self.recorder.normal(self.scheduler.saga_node_view())

    def settle(self) -> None:
        """Apply the control channel's queued boundaries now, as the scheduler does before its
        next step or arrival (at their receipt times), so a probe right after a tool start
        sees the pin the next step would hold."""
        self.scheduler._saga_apply_boundaries()

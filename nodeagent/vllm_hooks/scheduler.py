"""SagaScheduler: vLLM 0.33's scheduler driven by SAGA's policies.

A subclass, not a fork: every decision vLLM makes is still made by vLLM's code (``super()``);
SAGA changes what that code sees, once per step, before calling it:

(a) admission order and preemption victims: the waiting queues are re-ordered into the
    admission policy's order over the fairness policy's priorities
    (:mod:`.ordering`);
(b) tool-call retention: when the node agent reports a tool start, the eviction policy's
    ``tool_retention_s`` pins the workflow's blocks (:mod:`.retention`);
(c) eviction order: the evictable head of the free-block queue is put in the eviction policy's
    order (:mod:`.eviction`);
(d) live swap: the policy manager is swapped through the control channel (:mod:`.control`) and
    the scheduler takes ``manager.current()`` once per step, so a swap applies from the next step.

With the ``baseline`` policy set (lru / session-affinity / fcfs) the scheduler behaves as stock
vLLM; by default it runs SAGA's own policies (aeg / saga / afs). Start vLLM with
``--scheduler-cls nodeagent.vllm_hooks.SagaScheduler`` (``--scheduling-policy priority`` for
SAGA's preemption victims) and configure it with ``--additional-config '{"saga": {...}}'``.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.interface import PauseState
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.request_queue import SchedulingPolicy
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request

from nodeagent.host.context import HostContext
from nodeagent.host.retention import Retention
from nodeagent.host.tracker import WorkflowTracker
from nodeagent.sim.isolated import CallCost, call_isolated_seconds, cost_model
from nodeagent.vllm_hooks.accounting import StepAccounting
from nodeagent.vllm_hooks.config import SagaSchedulerConfig
from nodeagent.vllm_hooks.control import SchedulerControl, install_engine_core_utility
from nodeagent.vllm_hooks.eviction import BlockProvenance, FreeQueueReorderer
from nodeagent.vllm_hooks.identity import (
    DEFAULT_TENANT,
    UNTAGGED_TEMPLATE,
    RequestIdentity,
    RequestTagError,
    identify,
)
from nodeagent.vllm_hooks.occupancy import CachedFreeCounter
from nodeagent.vllm_hooks.ordering import (
    PriorityTable,
    SagaRequestQueue,
    admission_ranks,
    victim_ranks,
)
from nodeagent.vllm_hooks.retention import RetentionPins
from nodeagent.wire import MAX_CACHED_WORKFLOWS
from plugins.hookspecs import NODE_KINDS
from plugins.manager import PolicyManager
from plugins.named_sets import parse_policy_set
from plugins.views import NodeView, WorkflowEvent, node_view

logger = logging.getLogger(__name__)

CLOCK_EPSILON_S = 1e-6
"""Smallest step of the scheduler's clock: events get strictly increasing times, so that two
frees in one step keep vLLM's order under LRU."""
IDLE_SWEEP_S = 60.0
FALLBACK_PROFILE = "a100-llama3-70b-tp4"
"""Whose costs stand in until the engine has measured its own (the node agent's start-up
calibration runs the steps that measure them): the calibration README's reference instance."""

if TYPE_CHECKING:
    from vllm.v1.core.sched.scheduler import Scheduler as _SchedulerBase
else:
    _SchedulerBase = object  # the mixin's super() is the vLLM class it is combined with


class SagaSchedulingMixin(_SchedulerBase):
    """SAGA's additions to a vLLM scheduler class (see the module docstring)."""

    _saga_ready = False
    """True once SAGA's state exists. vLLM's white-box tests build schedulers with
    ``object.__new__`` and set only the attributes they need; such a scheduler (no SAGA state)
    must behave exactly as vLLM's, so every override passes straight through until then."""

    saga_clock: Callable[[], float] = time.time
    """The engine clock the policies see: wall time, like ``Request.arrival_time`` (tests
    replace it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = SagaSchedulerConfig.from_sources(self.vllm_config.additional_config, os.environ)
        self.saga_config = config
        self.saga_manager = PolicyManager(kinds=NODE_KINDS)  # routing is the gateway's
        if config.policy_set is not None:
            self.saga_manager.activate_set(**parse_policy_set(config.policy_set).as_kwargs())
        pool = self.kv_cache_manager.block_pool
        self.saga_tracker = WorkflowTracker(config.node_id, self._saga_private_cached_tokens)
        self._saga_last_hashes: dict[str, tuple[object, ...]] = {}
        self._saga_user_priority: dict[str, int] = {}
        self._saga_unreported: dict[str, tuple[int, int, float]] = {}
        """Service each call received since its last ``record_service`` (prefill, decode, s)."""
        self.waiting = SagaRequestQueue(self.policy, self._saga_user_priority_of)
        self.kv_holding_waiting = SagaRequestQueue(self.policy, self._saga_user_priority_of)
        self.saga_provenance = BlockProvenance()
        self.saga_reorderer = FreeQueueReorderer(
            pool,
            self.saga_provenance,
            self.block_size,
            config.eviction_window_blocks,
            self.saga_tracker.tenant_of,
        )
        self.saga_cached_free = CachedFreeCounter(pool, self.saga_provenance.evicted)
        max_pinned = int(config.max_pinned_fraction * max(pool.num_gpu_blocks - 1, 0))
        self.saga_pins = RetentionPins(pool, max_pinned, self._saga_pin_released,
                                       self._saga_pin_dropped)
        self.saga_retention = Retention(self.saga_pins)
        self.saga_accounting = StepAccounting(self.max_num_scheduled_tokens)
        self.saga_profile_cost = (cost_model(config.profile) if config.profile is not None
                                  else None)
        """The node's cost model when it names a profile (what ``saga bench`` simulates it
        with); None: its costs are measured (``saga_accounting.costs``)."""
        self.saga_control_channel = SchedulerControl(
            self.saga_manager, self.saga_describe, self.saga_now
        )
        self._saga_last_s = -math.inf
        self._saga_next_sweep_s = -math.inf
        self._saga_margin_blocks = (
            math.ceil(self.max_num_scheduled_tokens / max(self.block_size, 1))
            + self.max_num_running_reqs
            + self.num_lookahead_tokens // max(self.block_size, 1)
            + 1
        )
        install_engine_core_utility()
        self._saga_ready = True

    # ------------------------------------------------------------------ clock and context

    def saga_now(self) -> float:
        """The scheduler's clock: ``saga_clock`` made strictly increasing."""
        now = float(self.saga_clock())
        if now <= self._saga_last_s:
            now = self._saga_last_s + CLOCK_EPSILON_S
        self._saga_last_s = now
        return now

    def saga_node_view(self) -> NodeView:
        """This engine as a node, in the contract's terms (``plugins.views.node_view``)."""
        pool = self.kv_cache_manager.block_pool
        demand = 0
        pending = 0
        for request in self.running:
            demand += request.num_tokens
            pending += max(request.num_prompt_tokens - request.num_computed_tokens, 0)
        waiting = 0
        for queue in (self.waiting, self.kv_holding_waiting):
            for request in queue:
                waiting += 1
                demand += request.num_tokens
                view = self.saga_tracker.call_view(request.request_id)
                cached = view.cached_tokens if view is not None else 0
                pending += max(request.num_tokens - max(request.num_computed_tokens, cached), 0)
        return node_view(
            self.saga_tracker.node_id, waiting=waiting, running=len(self.running),
            kv_total_tokens=(pool.num_gpu_blocks - 1) * self.block_size,
            kv_free_tokens=self.saga_cached_free.uncached_free_blocks * self.block_size,
            demand_tokens=demand, pending_prefill_tokens=pending,
            prefill_s_per_token=self.saga_queue_s_per_token(),
            max_num_seqs=self.max_num_running_reqs,
            cached_workflows=tuple(self.saga_provenance.private))

    def saga_call_cost(self) -> CallCost:
        """The cost model isolated times come from: the node's profile, else what the engine
        measured alone (single-request steps), else the fallback profile's until it has."""
        if self.saga_profile_cost is not None:
            return self.saga_profile_cost
        measured = self.saga_accounting.costs.snapshot(self.block_size)
        return measured if measured is not None else cost_model(FALLBACK_PROFILE)

    def saga_queue_s_per_token(self) -> float:
        """Seconds per queued prompt token (``NodeView.queue_delay_s``): a full-chunk step's
        time per token, from the profile or from every measured prefill step."""
        cost = self.saga_profile_cost
        if cost is None:
            measured = self.saga_accounting.costs.queue_s_per_token
            if measured is not None:
                return measured
            cost = cost_model(FALLBACK_PROFILE)
        chunk = cost.profile.max_num_batched_tokens
        return cost.step_seconds(chunk, 0, 0, 0) / chunk

    def saga_isolated_call_s(self, prompt_tokens: int, own_prefix_tokens: int,
                             output_tokens: float) -> float:
        """``isolated_s`` of one call (``nodeagent.sim.isolated``, as every host counts it)."""
        return call_isolated_seconds(self.saga_call_cost(), max(prompt_tokens, 1),
                                     max(own_prefix_tokens, 0), max(round(output_tokens), 1))

    def saga_context(self, now_s: float) -> HostContext:
        return HostContext(now_s, self.saga_control_channel.tenants, self.saga_node_view,
                           self.saga_tracker, self.saga_manager)

    def _saga_private_cached_tokens(self, workflow_id: str) -> int:
        """The contract's ``WorkflowView.cached_tokens``: private context still cached (the
        block provenance keeps the count exact at every free and eviction)."""
        return self.saga_provenance.private.get(workflow_id, 0) * self.block_size

    def _saga_manages(self, request_id: str) -> bool:
        """Whether SAGA orders this request: a tagged call, or any call with order_untagged."""
        if self.saga_config.order_untagged:
            return request_id in self.saga_tracker.calls
        workflow_id = self.saga_tracker.workflow_id_of(request_id)
        record = self.saga_tracker.workflows.get(workflow_id) if workflow_id else None
        return record is not None and record.tagged

    def _saga_user_priority_of(self, request: Request) -> int:
        return self._saga_user_priority.get(request.request_id, request.priority)

    def _saga_observe(self, events: Iterable[WorkflowEvent], now_s: float) -> None:
        ctx = None
        for event in events:
            if ctx is None:
                ctx = self.saga_context(now_s)
            self.saga_manager.observe(event, ctx)

    # ------------------------------------------------------------------ vLLM interface

    def add_request(self, request: Request) -> None:
        if self._saga_ready and request.request_id not in self.requests:
            self._saga_apply_boundaries()
            self._saga_call_started(request)
        super().add_request(request)

    def schedule(self, *args: Any, **kwargs: Any) -> SchedulerOutput:
        if not self._saga_ready:
            return super().schedule(*args, **kwargs)
        self._saga_apply_boundaries()
        now = self.saga_now()
        self.saga_retention.expire(now)
        self.saga_cached_free.step()
        self._saga_sweep_idle(now)
        policy_set = self.saga_manager.current()
        ctx = self.saga_context(now)
        table = PriorityTable(policy_set, ctx, self.saga_tracker)
        node = ctx.nodes[self.saga_tracker.node_id]
        managed = self._saga_manages
        # Admission is decided only when a sequence slot is free (vLLM admits nothing else), as
        # on every host: a policy is never asked for an order nobody can act on.
        if len(self.running) < self.max_num_running_reqs:
            for queue in (self.waiting, self.kv_holding_waiting):
                if isinstance(queue, SagaRequestQueue) and queue:
                    queue.reorder(admission_ranks(table, list(queue), node, managed))
        overridden: list[tuple[Request, int]] = []
        if self.policy == SchedulingPolicy.PRIORITY and len(self.running) > 1:
            ranks = victim_ranks(table, self.running, self._saga_user_priority_of, managed)
            for request in self.running if ranks is not None else ():
                overridden.append((request, request.priority))
                request.priority = ranks[request.request_id]  # type: ignore[index]
        self.saga_reorderer.maybe_reorder(policy_set, ctx, self._saga_margin_blocks)
        try:
            output = super().schedule(*args, **kwargs)
        finally:
            for request, priority in overridden:
                request.priority = priority
        self._saga_after_schedule(output, now)
        return output

    def update_from_output(self, scheduler_output: SchedulerOutput, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        if not self._saga_ready:
            return super().update_from_output(scheduler_output, *args, **kwargs)
        now = self.saga_now()
        prefilled: list[str] = []
        unreported = self._saga_unreported
        for share in self.saga_accounting.finished(scheduler_output, now):
            request_id = share.request_id
            if request_id not in self.saga_tracker.calls:
                continue
            pf, dc, gpu = unreported.get(request_id, (0, 0, 0.0))
            unreported[request_id] = (pf + share.prefill_tokens, dc + share.decode_tokens,
                                      gpu + share.gpu_s)
            request = self.requests.get(request_id)
            if (request is not None and (share.prefill_tokens or share.decode_tokens > 1)
                    and request.num_computed_tokens >= request.num_tokens):
                prefilled.append(request_id)  # its (re)computed prompt is done: a first token
        result = super().update_from_output(scheduler_output, *args, **kwargs)
        for request_id in prefilled:  # the finished ones reported when they were freed
            self._saga_report_service(request_id, now)
        return result

    def _saga_report_service(self, request_id: str, now: float) -> None:
        """Charge a call's service since its last report to the fairness policy, once per call
        segment as every host does (``docs/policies.md``): at the end of its prefill (the
        first token), then the rest when it finishes or is preempted."""
        pending = self._saga_unreported.pop(request_id, None)
        call = self.saga_tracker.call_view(request_id)
        if pending is None or call is None:
            return
        prefill, decode, gpu_s = pending
        self.saga_tracker.add_service(request_id, gpu_s)
        self.saga_manager.current().record_service(self.saga_context(now), call, prefill,
                                                   decode, gpu_s)

    def reset_prefix_cache(self, *args: Any, **kwargs: Any) -> bool:
        # Pins hold references; vLLM only resets a pool whose blocks are all free.
        if self._saga_ready:
            self.saga_retention.release_all(self.saga_now())
        done = super().reset_prefix_cache(*args, **kwargs)
        if done and self._saga_ready:
            self.saga_provenance.clear()
        return done

    def _free_request(self, request: Request, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        if not self._saga_ready:
            return super()._free_request(request, *args, **kwargs)
        request_id = request.request_id
        call = self.saga_tracker.calls.get(request_id)
        if call is not None:  # what the workflow's next call can reuse: every computed block
            computed_blocks = max(request.num_tokens - 1, 0) // self.block_size
            self._saga_last_hashes[call.workflow_id] = tuple(
                request.block_hashes[:computed_blocks])
        if call is not None:
            self._saga_report_service(request_id, self.saga_now())
        result = super()._free_request(request, *args, **kwargs)
        if call is not None:
            now = self.saga_now()
            events = self.saga_tracker.call_finished(
                request_id, now, request.num_output_tokens,
                isolated_s=self.saga_isolated_call_s(
                    call.view.prompt_tokens, call.prefix_tokens, request.num_output_tokens))
            self.saga_retention.call_admitted(call.workflow_id, call.seq, now)
            self._saga_observe(events, now)
            self._saga_user_priority.pop(request_id, None)
            if call.workflow_id not in self.saga_tracker.workflows:  # an untagged one-call
                self._saga_last_hashes.pop(call.workflow_id, None)
        return result

    def _free_request_blocks(self, request: Request) -> None:
        if not self._saga_ready:
            super()._free_request_blocks(request)
            return
        request_id = request.request_id
        groups = self.kv_cache_manager.coordinator.get_blocks(request_id)
        call = self.saga_tracker.calls.get(request_id)
        workflow_id = call.workflow_id if call is not None else None
        now = self.saga_now()
        self.saga_provenance.record_free(groups, workflow_id, now)
        if call is not None:
            record = self.saga_tracker.workflows.get(call.workflow_id)
            if record is not None and record.tagged:
                self.saga_pins.remember(call.workflow_id, groups, now)
        super()._free_request_blocks(request)
        self.saga_reorderer.mark_dirty()

    # ------------------------------------------------------------------ SAGA steps

    def _saga_call_started(self, request: Request) -> None:
        try:
            ident = identify(request)
        except RequestTagError as exc:  # a bad tag must not take the engine down
            logger.warning("request %s: %s; scheduled as untagged", request.request_id, exc)
            ident = RequestIdentity(request.request_id, DEFAULT_TENANT, UNTAGGED_TEMPLATE, False)
        now = self.saga_now()
        # The engine core takes requests in between steps; the call arrived (vLLM stamps
        # arrival_time as it enters the engine) up to a step earlier: that is when its workflow's
        # tool ended and its call started, as every other host times them.
        arrived = request.arrival_time
        if isinstance(arrived, int | float) and math.isfinite(arrived):
            now = min(now, float(arrived))
        self._saga_user_priority[request.request_id] = request.priority
        hashes = tuple(request.block_hashes)
        previous = self._saga_last_hashes.get(ident.workflow_id, ())
        self._saga_last_hashes[ident.workflow_id] = hashes
        prefix = _common_prefix_blocks(previous, hashes) * self.block_size
        prefix = min(prefix, max(request.num_prompt_tokens - 1, 0))
        cached = self._saga_cached_prefix_tokens(request)
        expected_output = self.saga_manager.predict(ident.workflow_id, now).expected_output_tokens
        events = self.saga_tracker.call_started(
            request.request_id, ident.workflow_id, ident.tenant, ident.template, now_s=now,
            arrival_s=request.arrival_time, prompt_tokens=request.num_prompt_tokens,
            cached_tokens=cached, prefix_tokens=prefix, tagged=ident.tagged,
            isolated_s=self.saga_isolated_call_s(request.num_prompt_tokens, prefix,
                                                 expected_output))
        self._saga_observe(events, now)

    def _saga_cached_prefix_tokens(self, request: Request) -> int:
        """Prompt tokens whose blocks are in the prefix cache now (leading hash hits)."""
        if not self.cache_config.enable_prefix_caching or not request.block_hashes:
            return 0
        pool = self.kv_cache_manager.block_pool
        hits = 0
        for block_hash in request.block_hashes:
            if pool.get_cached_block(block_hash, [0]) is None:
                break
            hits += 1
        return min(hits * pool.hash_block_size, max(request.num_prompt_tokens - 1, 0))

    def _saga_after_schedule(self, output: SchedulerOutput, now: float) -> None:
        tracker = self.saga_tracker
        computed_before: dict[str, int] = {}
        prompt_tokens: dict[str, int] = {}
        for request_id, tokens in output.num_scheduled_tokens.items():
            request = self.requests.get(request_id)
            if request is None:
                continue
            computed_before[request_id] = request.num_computed_tokens - tokens
            prompt_tokens[request_id] = request.num_prompt_tokens
            call = tracker.call_admitted(request_id)
            if call is not None:
                self.saga_retention.call_admitted(call.workflow_id, call.seq, now)
        for request_id in output.preempted_req_ids or ():
            self._saga_report_service(request_id, now)
            tracker.call_preempted(request_id)
        self.saga_accounting.scheduled(
            output, now, output.num_scheduled_tokens, computed_before, prompt_tokens
        )
        if (
            output.total_num_scheduled_tokens == 0
            and self.saga_pins.pins
            and not self.running
            and (self.waiting or self.kv_holding_waiting)
            and self.pause_state == PauseState.UNPAUSED
        ):
            released = self.saga_retention.release_for_room(now)
            logger.info("nothing admissible while blocks were pinned: released %d", released)

    def _saga_apply_boundaries(self) -> None:
        """Apply the workflow boundaries the control channel received, at their receipt times."""
        for boundary in self.saga_control_channel.drain():
            at = boundary.time_s
            workflow_id = boundary.workflow_id
            if boundary.kind == "workflow_end":
                self.saga_retention.release(workflow_id, at)
                self.saga_pins.forget(workflow_id)
                self._saga_last_hashes.pop(workflow_id, None)
                self._saga_observe(self.saga_tracker.workflow_ended(workflow_id, at), at)
                continue
            if boundary.kind == "tool_end":
                self._saga_observe(self.saga_tracker.tool_ended(workflow_id, at), at)
                continue
            try:
                events = self.saga_tracker.tool_started(workflow_id, boundary.tool_name, at)
            except KeyError:
                logger.warning("tool_start for unknown workflow %r ignored", workflow_id)
                continue
            self._saga_observe(events, at)
            ctx = self.saga_context(at)
            view = ctx.workflow(workflow_id)
            if view is None:
                continue
            ttl = self.saga_manager.current().tool_retention_s(ctx, view)
            record = self.saga_tracker.workflows[workflow_id]
            self.saga_retention.tool_started(workflow_id, ttl, at, record.calls_started)

    def _saga_pin_released(
        self, workflow_id: str, groups: Sequence[Sequence[Any]], freed_s: float
    ) -> None:
        # Blocks nobody else took back rejoin the LRU as of the call's end, not as just used.
        self.saga_provenance.record_free(groups, workflow_id, freed_s)
        self.saga_reorderer.mark_dirty()

    def _saga_pin_dropped(self, workflow_id: str) -> None:
        self.saga_retention.dropped(workflow_id)

    def _saga_sweep_idle(self, now: float) -> None:
        """Workflows silent for ``workflow_idle_s`` end here, in case the control plane's
        ``workflow_end`` never comes."""
        if now < self._saga_next_sweep_s:
            return
        self._saga_next_sweep_s = now + IDLE_SWEEP_S
        for workflow_id in self.saga_tracker.idle_workflows(now, self.saga_config.workflow_idle_s):
            self.saga_retention.release(workflow_id, now)
            self.saga_pins.forget(workflow_id)
            self._saga_last_hashes.pop(workflow_id, None)
            self._saga_observe(self.saga_tracker.workflow_ended(workflow_id, now), now)

    # ------------------------------------------------------------------ control API

    def saga_control(
        self, command: str, payload: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Entry point of the ``saga_control`` EngineCore utility (see :mod:`.control`)."""
        return self.saga_control_channel.handle(command, payload)

    def notify_tool_start(self, workflow_id: str, tool_name: str | None = None) -> None:
        """The workflow's agent started a tool (applied at the next step)."""
        payload: dict[str, Any] = {"workflow_id": workflow_id}
        if tool_name is not None:
            payload["tool_name"] = tool_name
        self.saga_control("tool_start", payload)

    def notify_workflow_end(self, workflow_id: str) -> None:
        """The workflow is done: drop its pins and state (applied at the next step)."""
        self.saga_control("workflow_end", {"workflow_id": workflow_id})

    def saga_activate(
        self, kind: str, name: str, params: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Swap the active ``kind`` policy; used from the next ``schedule()`` on."""
        return self.saga_control("activate", {"kind": kind, "name": name, "params": params})

    def saga_describe(self) -> dict[str, Any]:
        """Active policies and counters (what the node agent's metrics and heartbeat read)."""
        pins = self.saga_pins
        reorderer = self.saga_reorderer
        view = self.saga_node_view()
        private = self.saga_provenance.private
        top = heapq.nlargest(MAX_CACHED_WORKFLOWS, private.items(), key=lambda kv: kv[1])
        measured = self.saga_accounting.costs.snapshot(self.block_size)
        return {
            "node_id": self.saga_tracker.node_id,
            "scheduler": type(self).__name__,
            "pid": os.getpid(),  # the engine-core process this scheduler runs in
            "block_size": self.block_size,
            "scheduling_policy": self.policy.value,
            "policies": self.saga_manager.describe(),
            "node": {"waiting": view.waiting, "running": view.running,
                     "kv_free_tokens": view.kv_free_tokens,
                     "kv_total_tokens": view.kv_total_tokens,
                     "queue_delay_s": view.queue_delay_s, "load": view.load,
                     "cached_workflows": {w: n * self.block_size for w, n in top}},
            "isolated_costs": None if measured is None else {
                "prefill_s_per_token": measured.prefill_s_per_token,
                "prefill_step_s": measured.prefill_step_s,
                "decode_s_per_token": measured.decode_s_per_token,
                "chunk_tokens": measured.chunk_tokens},
            "workflows": len(self.saga_tracker.workflows),
            "pinned_workflows": len(pins.pins),
            "pinned_blocks": pins.pinned_blocks,
            "pinned_blocks_total": pins.pinned_total,
            "released_blocks_total": pins.released_total,
            "eviction_evaluations": reorderer.evaluations,
            "eviction_reorders": reorderer.reorders,
            "eviction_blocks_moved": reorderer.moves,
            "cached_free_drift_total": self.saga_cached_free.drift_total,
        }


def _common_prefix_blocks(previous: Sequence[object], current: Sequence[object]) -> int:
    """Leading block hashes two prompts share (chained hashes: equal means same prefix)."""
    n = min(len(previous), len(current))
    if n == 0 or previous[0] != current[0]:
        return 0
    if previous[n - 1] == current[n - 1]:
        return n
    lo, hi = 0, n - 1  # invariant: previous[lo] == current[lo], previous[hi] != current[hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if previous[mid] == current[mid]:
            lo = mid
        else:
            hi = mid
    return lo + 1


class SagaScheduler(SagaSchedulingMixin, AsyncScheduler):
    """SAGA on vLLM's asynchronous scheduler (the one vLLM 0.33 uses by default)."""


class SagaSyncScheduler(SagaSchedulingMixin, Scheduler):
    """SAGA on vLLM's synchronous scheduler, for engines that run with async scheduling off."""

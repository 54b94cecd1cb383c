"""SagaScheduler: vLLM 0.33's scheduler driven by SAGA's policies.

A subclass, not a fork: every decision vLLM makes is still made by vLLM's code (``super()``);
SAGA changes what that code sees, once per step, before calling it:

(a) admission order and preemption victims: the waiting queues are re-ordered into the
    batching policy's admission order over the fairness policy's priorities
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

from nodeagent.vllm_hooks.accounting import StepAccounting
from nodeagent.vllm_hooks.config import SagaSchedulerConfig
from nodeagent.vllm_hooks.context import EngineContext
from nodeagent.vllm_hooks.control import ControlChannel, install_engine_core_utility
from nodeagent.vllm_hooks.eviction import BlockProvenance, FreeQueueReorderer
from nodeagent.vllm_hooks.identity import (
    DEFAULT_TENANT,
    UNTAGGED_TEMPLATE,
    RequestIdentity,
    RequestTagError,
    identify,
)
from nodeagent.vllm_hooks.ordering import (
    PriorityTable,
    SagaRequestQueue,
    admission_ranks,
    node_view,
    victim_ranks,
)
from nodeagent.vllm_hooks.retention import RetentionPins
from nodeagent.vllm_hooks.workflows import WorkflowRegistry
from plugins.manager import PolicyManager
from plugins.sets import parse_policy_set
from plugins.views import WorkflowEvent

logger = logging.getLogger(__name__)

CLOCK_EPSILON_S = 1e-6
"""Smallest step of the scheduler's clock: events get strictly increasing times, so that two
frees in one step keep vLLM's order under LRU."""
IDLE_SWEEP_S = 60.0

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
        self.saga_manager = PolicyManager()
        if config.policy_set is not None:
            self.saga_manager.activate_set(**parse_policy_set(config.policy_set).as_kwargs())
        pool = self.kv_cache_manager.block_pool
        self.saga_registry = WorkflowRegistry(config.node_id, self.block_size)
        self._saga_user_priority: dict[str, int] = {}
        self.waiting = SagaRequestQueue(self.policy, self._saga_user_priority_of)
        self.kv_holding_waiting = SagaRequestQueue(self.policy, self._saga_user_priority_of)
        self.saga_provenance = BlockProvenance()
        self.saga_reorderer = FreeQueueReorderer(
            pool,
            self.saga_provenance,
            self.block_size,
            config.eviction_window_blocks,
            self.saga_registry.tenant_of,
        )
        max_pinned = int(config.max_pinned_fraction * max(pool.num_gpu_blocks - 1, 0))
        self.saga_pins = RetentionPins(pool, max_pinned, self._saga_pin_released)
        self.saga_accounting = StepAccounting()
        self.saga_control_channel = ControlChannel(
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

    def saga_context(self, now_s: float) -> EngineContext:
        pool = self.kv_cache_manager.block_pool
        _, num_waiting = self.get_request_counts()
        node = node_view(
            self.saga_registry.node_id,
            waiting=num_waiting,
            running=len(self.running),
            free_blocks=pool.get_num_free_blocks(),
            total_blocks=pool.num_gpu_blocks - 1,
            block_size=self.block_size,
            max_running=self.max_num_running_reqs,
        )
        return EngineContext(
            now_s=now_s,
            tenants=self.saga_control_channel.tenants,
            nodes={node.node_id: node},
            registry=self.saga_registry,
            manager=self.saga_manager,
        )

    def _saga_manages(self, request_id: str) -> bool:
        """Whether SAGA orders this request: a tagged call, or any call with order_untagged."""
        if self.saga_config.order_untagged:
            return request_id in self.saga_registry.calls
        workflow_id = self.saga_registry.workflow_id_of(request_id)
        record = self.saga_registry.workflows.get(workflow_id) if workflow_id else None
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
        self.saga_pins.expire(now)
        self._saga_sweep_idle(now)
        policy_set = self.saga_manager.current()
        ctx = self.saga_context(now)
        table = PriorityTable(policy_set, ctx, self.saga_registry)
        node = ctx.nodes[self.saga_registry.node_id]
        managed = self._saga_manages
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
        shares = self.saga_accounting.finished(scheduler_output, now)
        if shares:
            policy_set = self.saga_manager.current()
            ctx = self.saga_context(now)
            for share in shares:
                call = self.saga_registry.call_view(share.request_id)
                if call is None:
                    continue
                self.saga_registry.add_service(share.request_id, share.gpu_s)
                policy_set.record_service(
                    ctx, call, share.prefill_tokens, share.decode_tokens, share.gpu_s
                )
        return super().update_from_output(scheduler_output, *args, **kwargs)

    def reset_prefix_cache(self, *args: Any, **kwargs: Any) -> bool:
        # Pins hold references; vLLM only resets a pool whose blocks are all free.
        if self._saga_ready:
            self.saga_pins.release_all()
        done = super().reset_prefix_cache(*args, **kwargs)
        if done and self._saga_ready:
            self.saga_provenance.clear()
        return done

    def _free_request(self, request: Request, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        if not self._saga_ready:
            return super()._free_request(request, *args, **kwargs)
        request_id = request.request_id
        call = self.saga_registry.calls.get(request_id)
        result = super()._free_request(request, *args, **kwargs)
        if call is not None:
            now = self.saga_now()
            events = self.saga_registry.call_finished(
                request_id, now, request.num_output_tokens, request.num_computed_tokens
            )
            self.saga_pins.release_call_served(call.workflow_id, call.seq)
            self._saga_observe(events, now)
            self._saga_user_priority.pop(request_id, None)
        return result

    def _free_request_blocks(self, request: Request) -> None:
        if not self._saga_ready:
            super()._free_request_blocks(request)
            return
        request_id = request.request_id
        groups = self.kv_cache_manager.coordinator.get_blocks(request_id)
        call = self.saga_registry.calls.get(request_id)
        workflow_id = call.workflow_id if call is not None else None
        now = self.saga_now()
        self.saga_provenance.record_free(groups, workflow_id, now)
        if call is not None:
            record = self.saga_registry.workflows.get(call.workflow_id)
            if record is not None and record.tagged:
                self.saga_pins.remember(call.workflow_id, groups, call.seq + 1, now)
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
        self._saga_user_priority[request.request_id] = request.priority
        events = self.saga_registry.call_started(
            request.request_id,
            ident,
            now_s=now,
            arrival_s=request.arrival_time,
            prompt_tokens=request.num_prompt_tokens,
            cached_tokens=self._saga_cached_prefix_tokens(request),
            block_hashes=request.block_hashes,
        )
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
        registry = self.saga_registry
        computed_before: dict[str, int] = {}
        prompt_tokens: dict[str, int] = {}
        for request_id, tokens in output.num_scheduled_tokens.items():
            request = self.requests.get(request_id)
            if request is None:
                continue
            computed_before[request_id] = request.num_computed_tokens - tokens
            prompt_tokens[request_id] = request.num_prompt_tokens
            registry.call_admitted(request_id, request.num_computed_tokens)
            call = registry.calls.get(request_id)
            if call is not None:
                self.saga_pins.release_call_served(call.workflow_id, call.seq)
        for request_id in output.preempted_req_ids or ():
            registry.call_preempted(request_id)
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
            released = self.saga_pins.release_all()
            logger.warning("nothing admissible while %d blocks were pinned: released", released)

    def _saga_apply_boundaries(self) -> None:
        """Apply the workflow boundaries the control channel received, at their receipt times."""
        for boundary in self.saga_control_channel.drain():
            at = boundary.time_s
            if boundary.kind == "workflow_end":
                self.saga_pins.forget(boundary.workflow_id)
                ended = self.saga_registry.workflow_ended(boundary.workflow_id, at)
                self._saga_observe(ended, at)
                continue
            if boundary.kind == "tool_end":
                self._saga_observe(self.saga_registry.tool_ended(boundary.workflow_id, at), at)
                continue
            try:
                events = self.saga_registry.tool_started(
                    boundary.workflow_id, boundary.tool_name, at
                )
            except KeyError:
                logger.warning("tool_start for unknown workflow %r ignored", boundary.workflow_id)
                continue
            self._saga_observe(events, at)
            ctx = self.saga_context(at)
            view = ctx.workflow(boundary.workflow_id)
            if view is None:
                continue
            ttl = self.saga_manager.current().tool_retention_s(ctx, view)
            if ttl > 0.0:
                self.saga_pins.pin(boundary.workflow_id, ttl, at)

    def _saga_pin_released(
        self, workflow_id: str, groups: Sequence[Sequence[Any]], freed_s: float
    ) -> None:
        # Blocks nobody else took back rejoin the LRU as of the call's end, not as just used.
        self.saga_provenance.record_free(groups, workflow_id, freed_s)
        self.saga_reorderer.mark_dirty()

    def _saga_sweep_idle(self, now: float) -> None:
        if now < self._saga_next_sweep_s:
            return
        self._saga_next_sweep_s = now + IDLE_SWEEP_S
        for workflow_id in self.saga_registry.idle_workflows(now, self.saga_config.workflow_idle_s):
            self.saga_pins.forget(workflow_id)
            self.saga_registry.forget(workflow_id)
            self.saga_manager.aeg.forget(workflow_id)

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
        return {
            "node_id": self.saga_registry.node_id,
            "scheduling_policy": self.policy.value,
            "policies": self.saga_manager.describe(),
            "workflows": len(self.saga_registry.workflows),
            "pinned_workflows": len(pins.pins),
            "pinned_blocks": pins.pinned_blocks,
            "pinned_blocks_total": pins.pinned_total,
            "released_blocks_total": pins.released_total,
            "eviction_evaluations": reorderer.evaluations,
            "eviction_reorders": reorderer.reorders,
            "eviction_blocks_moved": reorderer.moves,
        }


class SagaScheduler(SagaSchedulingMixin, AsyncScheduler):
    """SAGA on vLLM's asynchronous scheduler (the one vLLM 0.33 uses by default)."""


class SagaSyncScheduler(SagaSchedulingMixin, Scheduler):
    """SAGA on vLLM's synchronous scheduler, for engines that run with async scheduling off."""

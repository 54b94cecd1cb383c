"""The ``sim`` engine of the node agent: one simulated vLLM instance, in real time.

It runs the same :class:`~nodeagent.sim.engine.SimEngine` as ``saga bench`` (continuous
batching, chunked prefill, segment KV cache, preemption, the policy objects from ``plugins``),
but driven by the asyncio loop: simulated time is wall time x ``speed``, requests come from the
HTTP API, and tokens stream out as the engine produces them, at the cost model's pace.

Everything around the engine's mechanics is the shared host layer (:mod:`nodeagent.host`):
workflow tracking and views, retention across tool calls, policy activation and failures.
Prompts are chained KV blocks of a deterministic stand-in tokenizer
(:mod:`nodeagent.agent.prompt_blocks`), so prefix hits happen at block granularity, as in vLLM.

A simulated engine has no model: output text is synthetic, and a request may script how it ends
(``saga_sim``: output length, ``stop`` / ``tool_calls`` / ``length``, tool name), which is how
replays and the demo reproduce real agents' behaviour through the real API.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from nodeagent.agent.engine import (
    Chunk,
    ContextTooLong,
    EngineInfo,
    EngineUnavailable,
    GenerationRequest,
    LoadReport,
    Message,
    PolicyFailureReport,
    ToolCallOut,
    Usage,
)
from nodeagent.agent.prompt_blocks import BlockPromptTree, chat_tokens, message_tokens, text_tokens
from nodeagent.host.context import HostContext
from nodeagent.host.policies import PolicyHost
from nodeagent.host.retention import Retention
from nodeagent.host.tracker import WorkflowTracker
from nodeagent.sim.costmodel import CostModel
from nodeagent.sim.engine import EngineConfig, SimCall, SimEngine
from nodeagent.sim.isolated import call_isolated_seconds
from nodeagent.sim.kvcache import SegmentKVCache, cache_entry_views
from nodeagent.sim.pins import SegmentPins
from nodeagent.sim.profiles import get_profile
from nodeagent.wire import MAX_CACHED_WORKFLOWS
from plugins.hookspecs import NODE_KINDS
from plugins.manager import PolicyManager
from plugins.views import CacheEntryView, CallView, TenantView, WorkflowEvent

log = logging.getLogger("saga.node.sim")

DEFAULT_OUTPUT_TOKENS = 128
"""Output length an unscripted request "wants"; a smaller max_tokens cuts it (finish "length")."""

# Live nodes stream tokens every few decode steps rather than in 128-step macro-steps.
LIVE_MACRO_STEPS = 4

WORKFLOW_IDLE_S = 1800.0
"""A workflow silent this long (simulated seconds) with no call in flight is ended here, in case
the control plane's ``workflow_end`` never comes: its AEG state and retention must not leak."""

_WORDS = ("the ", "and ", "for ", "run ", "fix ", "bug ", "log ", "key ", "map ", "set ",
          "kv  ", "gpu ", "api ", "row ", "end ", "new ")


def synthetic_text(tokens: int, seed: int) -> str:
    """``tokens`` four-character words: as many simulated tokens as the counter will count."""
    return "".join(_WORDS[(seed + i * 7) % len(_WORDS)] for i in range(tokens))


@dataclass(slots=True)
class LiveCall:
    request: GenerationRequest
    sim: SimCall
    text: str
    tool_calls: tuple[ToolCallOut, ...]
    finish_reason: str
    queue: asyncio.Queue[Chunk | Exception]
    emitted: int = 0


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class SimTimer(Protocol):
    """The simulated clock of a SimBackend and its alarms, in simulated seconds.

    The default, :class:`LoopTimer`, runs on the asyncio loop the node agent serves on. Tests
    inject a manual one (``SimBackend(timer=...)``) to step the engine deterministically: the
    backend only ever asks for the time and for a callback at a simulated time.
    """

    def now(self) -> float: ...

    def call_at(self, time_s: float, callback: Callable[..., None], *args: Any) -> TimerHandle: ...


class LoopTimer:
    """Simulated time = the running asyncio loop's time since first use, x ``speed``."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0

    def _bind(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._t0 = self._loop.time()
        return self._loop

    def now(self) -> float:
        if self._loop is None:
            return 0.0
        return (self._loop.time() - self._t0) * self.speed

    def call_at(self, time_s: float, callback: Callable[..., None], *args: Any) -> TimerHandle:
        loop = self._bind()
        return loop.call_at(self._t0 + time_s / self.speed, callback, *args)

    def bind(self) -> None:
        """Start the clock on the running loop (the first request does it)."""
        self._bind()


class SimBackend:
    """Engine protocol implementation over a real-time SimEngine (see module docstring)."""

    def __init__(self, profile: str, *, model_name: str, manager: PolicyManager | None = None,
                 node_id: str = "local", speed: float = 1.0,
                 kv_capacity_tokens: int | None = None, timer: SimTimer | None = None) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.profile = get_profile(profile)
        self.cost = CostModel(self.profile)
        self.node_id = node_id
        self.speed = speed
        self.manager = manager or PolicyManager(kinds=NODE_KINDS)  # routing: the gateway's
        bs = self.profile.block_size
        self.bs = bs
        capacity = (kv_capacity_tokens or self.profile.kv_capacity_tokens) // bs
        self.prompts = BlockPromptTree(bs)
        self.cache = SegmentKVCache(self.prompts.index, capacity)
        config = EngineConfig(
            max_num_batched_tokens=self.profile.max_num_batched_tokens,
            max_num_seqs=self.profile.max_num_seqs, capacity_blocks=capacity, block_size=bs,
            max_macro_steps=LIVE_MACRO_STEPS,
        )
        step = self.cost.step_seconds
        self.engine = SimEngine(
            node_id, config, self.cache,
            lambda pf, pctx, nd, dctx, chunks: step(pf, pctx, nd, dctx, prefill_chunks=chunks),
            self.manager.current, self,
        )
        self.info = EngineInfo(engine="sim", model=model_name, gpu_model=self.profile.gpu,
                               gpu_count=self.profile.gpus_per_instance,
                               kv_capacity_tokens=capacity * bs,
                               max_num_seqs=self.profile.max_num_seqs, profile=profile)
        self.tenants: dict[str, TenantView] = {}
        self.tracker = WorkflowTracker(
            node_id, cached_tokens=lambda wf: self.cache.owner_blocks.get(wf, 0) * bs)
        self.last_paths: dict[str, list[int]] = {}
        self.retention = Retention(SegmentPins(
            self.cache, lambda workflow_id: self.last_paths.get(workflow_id, ()),
            lambda now_s: self.engine.poke(now_s),
            lambda workflow_id: self.retention.dropped(workflow_id)))
        self.policies = PolicyHost(self.manager)
        self.calls: dict[str, LiveCall] = {}
        self.timer: SimTimer = timer if timer is not None else LoopTimer(speed)
        """The simulated clock (test seam: a manual timer steps the engine deterministically)."""
        self._seq = itertools.count()
        self._retention_timer: TimerHandle | None = None
        self._counters = {"prefix_cache_queries": 0.0, "prefix_cache_hits": 0.0,
                          "generation_tokens": 0.0}

    # ------------------------------------------------------------------ time
    def _bind_loop(self) -> None:
        bind = getattr(self.timer, "bind", None)
        if bind is not None:
            bind()

    def now(self) -> float:
        return self.timer.now()

    # ------------------------------------------------------------------ Engine protocol
    def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Submit now, then stream: a request that cannot fit raises ``ContextTooLong`` from
        this call, before the HTTP layer has started any response (it can still answer 400)."""
        self._bind_loop()
        return self._chunks(self._submit(request))

    async def _chunks(self, live: LiveCall) -> AsyncIterator[Chunk]:
        while True:
            chunk = await live.queue.get()
            if isinstance(chunk, Exception):
                raise EngineUnavailable(f"simulated engine failed: {chunk}") from chunk
            yield chunk
            if chunk.finish_reason is not None:
                return

    def load(self) -> LoadReport:
        view = self.engine.node_view(self.now(), with_workflows=False)
        queries = self._counters["prefix_cache_queries"]
        owned = heapq.nlargest(MAX_CACHED_WORKFLOWS, self.cache.owner_blocks.items(),
                               key=lambda kv: kv[1])
        return LoadReport(
            waiting=view.waiting, running=view.running,
            kv_used_tokens=view.kv_total_tokens - view.kv_free_tokens,
            kv_total_tokens=view.kv_total_tokens,
            prefix_cache_hit_rate=self._counters["prefix_cache_hits"] / queries if queries else 0.0,
            queue_delay_s=view.queue_delay_s, load=view.load,
            cached_workflows={w: n * self.bs for w, n in owned},
        )

    def apply_policy(self, kind: str, name: str, params: Mapping[str, Any]) -> None:
        self.policies.apply(kind, name, params)

    def active_policies(self) -> dict[str, str]:
        return self.policies.active()

    def drain_policy_failures(self) -> list[PolicyFailureReport]:
        return [PolicyFailureReport(e.kind or "", e.error or e.message, e.hook or "",
                                    e.replaced_by or "") for e in self.policies.drain_failures()]

    def set_tenants(self, tenants: Sequence[TenantView]) -> None:
        self.tenants = {t.name: t for t in tenants}

    def load_execution_graphs(self, graphs: Sequence[Mapping[str, Any]]) -> None:
        for graph in graphs:
            self.manager.aeg.load(graph)

    def counters(self) -> dict[str, float]:
        e = self.engine
        return {**self._counters, "policy_failures": float(self.policies.failures_total),
                "prompt_tokens": float(e.prompt_tokens_admitted),
                "preemptions": float(e.preemptions),
                "recompute_tokens": float(e.recompute_tokens)}

    def tool_started(self, workflow_id: str, tool_name: str) -> None:
        now = self.now()
        try:
            events = self.tracker.tool_started(workflow_id, tool_name, now)
        except KeyError:
            return  # a workflow this node never served
        self._observe(events, now)
        ctx = self.context(now)
        view = ctx.workflow(workflow_id)
        wf = self.tracker.workflows[workflow_id]
        ttl = float(self.manager.current().tool_retention_s(ctx, view))
        if self.retention.tool_started(workflow_id, ttl, now, wf.calls_started):
            self._arm_retention_timer()

    def tool_ended(self, workflow_id: str) -> None:
        now = self.now()
        self._observe(self.tracker.tool_ended(workflow_id, now), now)

    def workflow_ended(self, workflow_id: str) -> None:
        """The control plane says the workflow is over: drop its pins and state."""
        now = self.now()
        self.retention.release(workflow_id, now)
        self.last_paths.pop(workflow_id, None)
        self._observe(self.tracker.workflow_ended(workflow_id, now), now)

    async def close(self) -> None:
        for live in self.calls.values():
            live.queue.put_nowait(Chunk(finish_reason="abort", usage=Usage(0, 0, 0)))

    # ------------------------------------------------------------------ requests
    def _submit(self, request: GenerationRequest) -> LiveCall:
        now = self.now()
        self._end_idle(now)
        wf_id = request.workflow_id
        tokens = (text_tokens(request.raw_prompt) if request.raw_prompt is not None
                  else chat_tokens(request.messages))
        prompt_tokens = len(tokens)
        text, tool_calls, finish, output_tokens = self._plan_output(request)
        answer = Message("assistant", text, tuple((c.name, c.arguments) for c in tool_calls))
        written = message_tokens(answer)
        if len(written) < output_tokens:
            # A tool call renders shorter than the tokens the model generated for it; an engine
            # caches every token it computed, so the rest is cached too (under tokens no later
            # prompt repeats: the next prompt holds the rendered call, not the raw output).
            written += [f"\x1a{request.request_id}\x1d{i}"
                        for i in range(output_tokens - len(written))]
        write_path = self.prompts.path_for([*tokens, *written], wf_id)
        tracked = self.tracker.workflows.get(wf_id)
        seq = tracked.calls_started if tracked is not None else 0
        sim = SimCall(request.request_id, wf_id, request.tenant, request.template, seq,
                      prompt_tokens, output_tokens, write_path,
                      self.prompts.end_tokens(write_path[-1]), now, user=None)
        if not self.engine.fits_alone(sim):
            raise ContextTooLong(
                f"prompt of {prompt_tokens} tokens plus {output_tokens} output tokens does not "
                f"fit this node's KV cache ({self.info.kv_capacity_tokens} tokens)")
        cap = (prompt_tokens - 1) // self.bs * self.bs
        own = self._own_prefix(wf_id, write_path, cap)
        cached = self.cache.cached_end(write_path, cap)
        events = self.tracker.call_started(
            request.request_id, wf_id, request.tenant, request.template, now_s=now,
            arrival_s=now, prompt_tokens=prompt_tokens, cached_tokens=cached,
            prefix_tokens=own,
            isolated_s=self._isolated_call_s(prompt_tokens, own, self.manager.predict(
                wf_id, now).expected_output_tokens))
        self._observe(events, now)
        self.last_paths[wf_id] = write_path
        live = LiveCall(request, sim, text, tool_calls, finish, asyncio.Queue())
        self.calls[request.request_id] = live
        self.engine.submit(sim, now)
        return live

    def _plan_output(self, request: GenerationRequest
                     ) -> tuple[str, tuple[ToolCallOut, ...], str, int]:
        script = request.script
        limit = request.max_output_tokens
        tokens = script.output_tokens if script and script.output_tokens else DEFAULT_OUTPUT_TOKENS
        finish = script.finish_reason if script and script.finish_reason else "stop"
        if limit is not None and tokens > limit:
            tokens, finish = limit, "length"
        seed = next(self._seq)
        if finish == "tool_calls":
            name = (script.tool_name if script else None) or \
                (request.tools[0] if request.tools else "tool")
            arguments = json.dumps({"simulated": True, "call": seed})
            return "", (ToolCallOut(f"call_{seed}", name, arguments),), finish, tokens
        return synthetic_text(tokens, seed), (), finish, tokens

    def _own_prefix(self, workflow_id: str, path: list[int], cap: int) -> int:
        """Prompt tokens repeating the workflow's previous context (what running alone would
        reuse), whole blocks, short of the last prompt token."""
        last = self.last_paths.get(workflow_id)
        if not last:
            return 0
        common = self.prompts.common_prefix_tokens(last[-1], path[-1])
        return max(0, min(common, cap) // self.bs * self.bs)

    def _end_idle(self, now: float) -> None:
        for workflow_id in self.tracker.idle_workflows(now, WORKFLOW_IDLE_S):
            self.workflow_ended(workflow_id)

    def _arm_retention_timer(self) -> None:
        deadline = self.retention.next_deadline()
        if deadline is None:
            return
        if self._retention_timer is not None:
            self._retention_timer.cancel()
        self._retention_timer = self.timer.call_at(max(deadline, self.now()),
                                                   self._expire_retention)

    def _expire_retention(self) -> None:
        self._retention_timer = None
        self.retention.expire(self.now())
        self._arm_retention_timer()

    # ------------------------------------------------------------------ EngineHost
    def context(self, now: float) -> HostContext:
        return HostContext(now, self.tenants, lambda: self.engine.node_view(now),
                           self.tracker, self.manager)

    def call_priority(self, ps: Any, ctx: Any, call: SimCall, view: CallView) -> float:
        wf = ctx.workflow(call.workflow_id)
        tenant = self.tenants.get(call.tenant) or TenantView(name=call.tenant)
        return float(ps.call_priority(ctx, view, wf, tenant))

    def entry_views(self, engine: SimEngine, segs: Sequence[int], now: float,
                    oracle: bool) -> list[CacheEntryView]:
        return cache_entry_views(self.cache, segs, self.node_id, self.tracker.tenant_of)

    def wake(self, engine: SimEngine, time_s: float, version: int) -> None:
        self.timer.call_at(time_s, self._on_wake, time_s, version)

    def _on_wake(self, time_s: float, version: int) -> None:
        try:
            self.engine.on_wake(time_s, version)
        except Exception as exc:  # a bug must fail the calls in flight, not hang them
            log.exception("simulated engine step failed; failing %d calls", len(self.calls))
            for live in self.calls.values():
                live.queue.put_nowait(exc)
            self.calls.clear()

    def on_admit(self, engine: SimEngine, call: SimCall, now: float) -> None:
        tracked = self.tracker.call_admitted(call.call_id)
        if tracked is not None:
            self.retention.call_admitted(call.workflow_id, tracked.seq, now)
        self._counters["prefix_cache_queries"] += call.prefill_target
        self._counters["prefix_cache_hits"] += call.hit_tokens

    def on_first_token(self, engine: SimEngine, call: SimCall, now: float) -> None:
        live = self.calls.get(call.call_id)
        if live is not None:
            self._stream_progress(live)

    def on_tokens(self, engine: SimEngine, call: SimCall, n_tokens: int, now: float) -> None:
        live = self.calls.get(call.call_id)
        if live is not None:
            self._stream_progress(live)

    def on_preempt(self, engine: SimEngine, call: SimCall, now: float) -> None:
        self.tracker.call_preempted(call.call_id)

    def _isolated_call_s(self, prompt_tokens: int, own_prefix_tokens: int,
                         output_tokens: float) -> float:
        """``isolated_s`` of one call (``nodeagent.sim.isolated``); in flight, at the AEG's
        expected output (no host knows a call's output before it ends)."""
        return call_isolated_seconds(self.cost, max(prompt_tokens, 1), own_prefix_tokens,
                                     max(round(output_tokens), 1))

    def on_stalled(self, engine: SimEngine, now: float) -> bool:
        released = self.retention.release_for_room(now)
        if released:
            log.info("nothing admissible while retention pins held blocks: released %d",
                     released)
        return released > 0

    def on_finish(self, engine: SimEngine, call: SimCall, now: float) -> None:
        live = self.calls.pop(call.call_id, None)
        self._counters["generation_tokens"] += call.output_tokens
        self.tracker.add_service(call.call_id, call.gpu_s)
        tracked = self.tracker.calls.get(call.call_id)
        isolated = (self._isolated_call_s(call.prompt_tokens, tracked.prefix_tokens,
                                          call.output_tokens) if tracked is not None else None)
        self._observe(self.tracker.call_finished(call.call_id, now, call.output_tokens,
                                                 isolated_s=isolated), now)
        if live is None:
            return
        self._stream_progress(live, final=True)
        live.queue.put_nowait(Chunk(
            finish_reason=live.finish_reason, tool_calls=live.tool_calls,
            usage=Usage(call.prompt_tokens, call.hit_tokens, call.output_tokens, call.gpu_s)))

    def _stream_progress(self, live: LiveCall, final: bool = False) -> None:
        if live.tool_calls:
            return  # a tool call is delivered whole with the final chunk
        produced = live.sim.output_tokens if final else live.sim.generated
        if produced > live.emitted:
            text = live.text[live.emitted * 4:produced * 4]
            live.emitted = produced
            live.queue.put_nowait(Chunk(text=text))

    # ------------------------------------------------------------------ policies
    def _observe(self, events: Sequence[WorkflowEvent], now: float) -> None:
        if not events:
            return
        ctx = self.context(now)
        for event in events:
            self.manager.observe(event, ctx)

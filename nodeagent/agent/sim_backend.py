"""The ``sim`` engine of the node agent: one simulated vLLM instance, in real time.

It runs the same :class:`~nodeagent.sim.engine.SimEngine` as ``saga bench`` (continuous
batching, chunked prefill, segment KV cache, preemption, the policy objects from ``plugins``),
but driven by the asyncio loop: simulated time is wall time x ``speed``, requests come from the
HTTP API, and tokens stream out as the engine produces them, at the cost model's pace.

A simulated engine has no model: output text is synthetic, and a request may script how it ends
(``saga_sim``: output length, ``stop`` / ``tool_calls`` / ``length``, tool name), which is how
replays and the demo reproduce real agents' behaviour through the real API.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nodeagent.agent.engine import (
    Chunk,
    EngineInfo,
    EngineUnavailable,
    GenerationRequest,
    LoadReport,
    Message,
    ToolCallOut,
    Usage,
)
from nodeagent.agent.prompt_tree import PromptTree
from nodeagent.sim.costmodel import CostModel
from nodeagent.sim.engine import EngineConfig, SimCall, SimEngine
from nodeagent.sim.kvcache import SegmentKVCache, cache_entry_views
from nodeagent.sim.profiles import get_profile
from plugins.base import PolicyConfigError
from plugins.events import FAILURE, PolicyEvent
from plugins.manager import PolicyManager
from plugins.views import (
    CacheEntryView,
    CallView,
    NodeView,
    Prediction,
    TenantView,
    WorkflowEvent,
    WorkflowView,
)

log = logging.getLogger("saga.node.sim")

DEFAULT_OUTPUT_TOKENS = 128
"""Output length an unscripted request "wants"; a smaller max_tokens cuts it (finish "length")."""

# Live nodes stream tokens every few decode steps rather than in 128-step macro-steps.
LIVE_MACRO_STEPS = 4

# A workflow silent this long (simulated seconds) is considered finished: the node is never
# told explicitly, and its AEG state and retention must not leak.
WORKFLOW_IDLE_S = 1800.0

_WORDS = ("the ", "and ", "for ", "run ", "fix ", "bug ", "log ", "key ", "map ", "set ",
          "kv  ", "gpu ", "api ", "row ", "end ", "new ")


def synthetic_text(tokens: int, seed: int) -> str:
    """``tokens`` four-character words: as many simulated tokens as the counter will count."""
    return "".join(_WORDS[(seed + i * 7) % len(_WORDS)] for i in range(tokens))


@dataclass(slots=True)
class LiveWorkflow:
    workflow_id: str
    tenant: str
    template: str
    arrival_s: float
    state: str = "queued"
    calls_done: int = 0
    context_tokens: int = 0
    service_s: float = 0.0
    isolated_done_s: float = 0.0
    current_isolated_s: float = 0.0
    tool_name: str | None = None
    tool_since_s: float = 0.0
    last_path: list[int] = field(default_factory=list)
    last_seen_s: float = 0.0
    retained: list[int] | None = None
    retention_timer: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class LiveCall:
    request: GenerationRequest
    sim: SimCall
    text: str
    tool_calls: tuple[ToolCallOut, ...]
    finish_reason: str
    queue: asyncio.Queue[Chunk | Exception]
    emitted: int = 0


class _Context:
    """The SchedulingContext policies see on this node."""

    def __init__(self, backend: SimBackend) -> None:
        self._b = backend

    @property
    def now_s(self) -> float:
        return self._b.now()

    @property
    def tenants(self) -> Mapping[str, TenantView]:
        return self._b.tenants

    @property
    def nodes(self) -> Mapping[str, NodeView]:
        return {self._b.node_id: self._b.engine.node_view(self._b.now())}

    def workflow(self, workflow_id: str) -> WorkflowView | None:
        wf = self._b.workflows.get(workflow_id)
        return None if wf is None else self._b.workflow_view(wf)

    def predict(self, workflow_id: str) -> Prediction:
        return self._b.manager.predict(workflow_id, self._b.now())


class SimBackend:
    """Engine protocol implementation over a real-time SimEngine (see module docstring)."""

    def __init__(self, profile: str, *, model_name: str, manager: PolicyManager | None = None,
                 node_id: str = "local", speed: float = 1.0,
                 kv_capacity_tokens: int | None = None) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.profile = get_profile(profile)
        self.cost = CostModel(self.profile)
        self.node_id = node_id
        self.speed = speed
        self.manager = manager or PolicyManager()
        bs = self.profile.block_size
        self.bs = bs
        capacity = (kv_capacity_tokens or self.profile.kv_capacity_tokens) // bs
        self.prompts = PromptTree(bs)
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
                               kv_capacity_tokens=capacity * bs)
        self.tenants: dict[str, TenantView] = {}
        self.workflows: dict[str, LiveWorkflow] = {}
        self.calls: dict[str, LiveCall] = {}
        self._ctx = _Context(self)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        self._seq = itertools.count()
        self._failures: list[tuple[str, str]] = []
        self._counters = {"prefix_cache_queries": 0.0, "prefix_cache_hits": 0.0,
                          "policy_failures": 0.0, "generation_tokens": 0.0}
        self.manager.subscribe(self._on_policy_event)

    # ------------------------------------------------------------------ time
    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._t0 = self._loop.time()
        return self._loop

    def now(self) -> float:
        if self._loop is None:
            return 0.0
        return (self._loop.time() - self._t0) * self.speed

    # ------------------------------------------------------------------ Engine protocol
    async def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        self._bind_loop()
        live = self._submit(request)
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
        return LoadReport(
            waiting=len(self.engine.waiting), running=len(self.engine.running),
            kv_used_tokens=self.cache.used_blocks * self.bs,
            kv_total_tokens=self.cache.capacity_blocks * self.bs,
            prefix_cache_hit_rate=self._counters["prefix_cache_hits"] / queries if queries else 0.0,
            queue_delay_s=view.queue_delay_s, load=view.load,
        )

    def apply_policy(self, kind: str, name: str, params: Mapping[str, Any]) -> None:
        cls = self.manager.registry.get(kind, name)
        if cls.requires_oracle:
            raise PolicyConfigError(
                f"{kind} policy {name!r} needs the future of a trace: simulator replays only",
                field="name")
        self.manager.activate(kind, name, dict(params))

    def active_policies(self) -> dict[str, str]:
        return {kind: f"{p.name}@{p.version}" for kind, p in self.manager.active().items()}

    def drain_policy_failures(self) -> list[tuple[str, str]]:
        failures, self._failures = self._failures, []
        return failures

    def set_tenants(self, tenants: Sequence[TenantView]) -> None:
        self.tenants = {t.name: t for t in tenants}

    def load_execution_graphs(self, graphs: Sequence[Mapping[str, Any]]) -> None:
        for graph in graphs:
            self.manager.aeg.load(graph)

    def counters(self) -> dict[str, float]:
        e = self.engine
        return {**self._counters, "prompt_tokens": float(e.prompt_tokens_admitted),
                "preemptions": float(e.preemptions),
                "recompute_tokens": float(e.recompute_tokens)}

    def tool_started(self, workflow_id: str, tool_name: str) -> None:
        wf = self.workflows.get(workflow_id)
        if wf is None:
            return
        now = self.now()
        wf.state, wf.tool_name, wf.tool_since_s = "waiting_tool", tool_name, now
        self._observe("tool_start", wf, now, tool_name=tool_name)
        ttl = float(self.manager.current().tool_retention_s(self._ctx, self.workflow_view(wf)))
        if ttl > 0 and wf.last_path and wf.retained is None:
            wf.retained = list(wf.last_path)
            self.cache.pin(wf.retained)
            loop = self._bind_loop()
            wf.retention_timer = loop.call_later(ttl / self.speed, self._release, wf)

    def tool_ended(self, workflow_id: str) -> None:
        """Idempotent: the HTTP layer calls it when the next call arrives, and so does submit."""
        wf = self.workflows.get(workflow_id)
        if wf is None:
            return
        if wf.tool_name is not None:
            self._observe("tool_end", wf, self.now(), tool_name=wf.tool_name)
            wf.tool_name = None
        self._release(wf)

    async def close(self) -> None:
        for live in self.calls.values():
            live.queue.put_nowait(Chunk(finish_reason="abort", usage=Usage(0, 0, 0)))

    # ------------------------------------------------------------------ requests
    def _submit(self, request: GenerationRequest) -> LiveCall:
        now = self.now()
        self._forget_idle(now)
        wf = self.workflows.get(request.workflow_id)
        if wf is None:
            wf = LiveWorkflow(request.workflow_id, request.tenant, request.template, now)
            self.workflows[wf.workflow_id] = wf
        wf.last_seen_s = now
        path = self.prompts.path_for(request.messages, request.workflow_id)
        prompt_tokens = self.prompts.end_tokens(path[-1])
        text, tool_calls, finish, output_tokens = self._plan_output(request)
        answer = Message("assistant", text, tuple((c.name, c.arguments) for c in tool_calls))
        out_seg = self.prompts.extend(path[-1], answer, request.workflow_id)
        write_path = [*path, out_seg]
        sim = SimCall(request.request_id, wf.workflow_id, wf.tenant, wf.template,
                      wf.calls_done, prompt_tokens, output_tokens, write_path,
                      self.prompts.end_tokens(out_seg), now, user=None)
        if not self.engine.fits_alone(sim):
            raise EngineUnavailable(
                f"prompt of {prompt_tokens} tokens plus {output_tokens} output tokens does not "
                f"fit this node's KV cache ({self.info.kv_capacity_tokens} tokens)")
        own = self._own_cached(wf, path, prompt_tokens)
        wf.current_isolated_s = self.cost.isolated_call_seconds(prompt_tokens, own, output_tokens)
        self.tool_ended(wf.workflow_id)
        wf.state = "queued"
        wf.context_tokens = prompt_tokens
        wf.last_path = write_path
        live = LiveCall(request, sim, text, tool_calls, finish, asyncio.Queue())
        self.calls[request.request_id] = live
        cap = (prompt_tokens - 1) // self.bs * self.bs
        cached = self.cache.cached_end(path, cap)
        self._observe("call_start", wf, now, prompt_tokens=prompt_tokens, cached_tokens=cached,
                      prefix_tokens=own)
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

    def _own_cached(self, wf: LiveWorkflow, path: list[int], prompt_tokens: int) -> int:
        """Prefix shared with the workflow's previous call (what running alone would reuse)."""
        if not wf.last_path:
            return 0
        common = self.prompts.tree.common_prefix_tokens(wf.last_path[-1], path[-1])
        return max(0, min(common, prompt_tokens - 1) // self.bs * self.bs)

    def _release(self, wf: LiveWorkflow) -> None:
        if wf.retention_timer is not None:
            wf.retention_timer.cancel()
            wf.retention_timer = None
        if wf.retained is not None:
            self.cache.unpin(wf.retained)
            wf.retained = None
            self.engine.poke(self.now())

    def _forget_idle(self, now: float) -> None:
        stale = [w for w in self.workflows.values()
                 if w.state == "waiting_tool" and now - w.last_seen_s > WORKFLOW_IDLE_S]
        for wf in stale:
            self._release(wf)
            self._observe("workflow_end", wf, now)
            del self.workflows[wf.workflow_id]

    # ------------------------------------------------------------------ EngineHost
    def context(self, now: float) -> _Context:
        return self._ctx

    def workflow_view(self, wf: LiveWorkflow) -> WorkflowView:
        now = self.now()
        waiting = wf.state == "waiting_tool"
        tool_elapsed = now - wf.tool_since_s if waiting else 0.0
        isolated = wf.isolated_done_s + (tool_elapsed if waiting else wf.current_isolated_s)
        return WorkflowView(
            workflow_id=wf.workflow_id, tenant=wf.tenant, template=wf.template, state=wf.state,
            arrival_s=wf.arrival_s, calls_done=wf.calls_done, context_tokens=wf.context_tokens,
            cached_tokens=self.cache.owner_blocks.get(wf.workflow_id, 0) * self.bs,
            home_node=self.node_id, tool_name=wf.tool_name if waiting else None,
            tool_elapsed_s=tool_elapsed, service_s=wf.service_s, isolated_s=max(isolated, 1e-9),
            elapsed_s=now - wf.arrival_s)

    def call_priority(self, ps: Any, ctx: Any, call: SimCall, view: CallView) -> float:
        wf = self.workflows[call.workflow_id]
        tenant = self.tenants.get(call.tenant) or TenantView(name=call.tenant)
        return float(ps.call_priority(ctx, view, self.workflow_view(wf), tenant))

    def entry_views(self, engine: SimEngine, segs: Sequence[int], now: float,
                    oracle: bool) -> list[CacheEntryView]:
        return cache_entry_views(self.cache, segs, self.node_id, self._tenant_of)

    def _tenant_of(self, workflow_id: str) -> str | None:
        wf = self.workflows.get(workflow_id)
        return wf.tenant if wf else None

    def wake(self, engine: SimEngine, time_s: float, version: int) -> None:
        loop = self._bind_loop()
        loop.call_at(self._t0 + time_s / self.speed, self._on_wake, time_s, version)

    def _on_wake(self, time_s: float, version: int) -> None:
        try:
            self.engine.on_wake(time_s, version)
        except Exception as exc:  # a bug must fail the calls in flight, not hang them
            log.exception("simulated engine step failed; failing %d calls", len(self.calls))
            for live in self.calls.values():
                live.queue.put_nowait(exc)
            self.calls.clear()

    def on_admit(self, engine: SimEngine, call: SimCall, now: float) -> None:
        wf = self.workflows.get(call.workflow_id)
        if wf is not None:
            wf.state = "running"
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
        wf = self.workflows.get(call.workflow_id)
        if wf is not None:
            wf.state = "queued"

    def on_finish(self, engine: SimEngine, call: SimCall, now: float) -> None:
        live = self.calls.pop(call.call_id, None)
        self._counters["generation_tokens"] += call.output_tokens
        wf = self.workflows.get(call.workflow_id)
        if wf is not None:
            wf.calls_done += 1
            wf.service_s += call.gpu_s
            wf.isolated_done_s += wf.current_isolated_s
            wf.current_isolated_s = 0.0
            wf.context_tokens = call.prompt_tokens + call.output_tokens
            wf.state = "waiting_tool"  # between calls until the next one (or a tool) arrives
            wf.tool_since_s = now
            wf.last_seen_s = now
            self._observe("call_end", wf, now, output_tokens=call.output_tokens)
        if live is None:
            return
        self._stream_progress(live, final=True)
        live.queue.put_nowait(Chunk(
            finish_reason=live.finish_reason, tool_calls=live.tool_calls,
            usage=Usage(call.prompt_tokens, call.hit_tokens, call.output_tokens)))

    def _stream_progress(self, live: LiveCall, final: bool = False) -> None:
        if live.tool_calls:
            return  # a tool call is delivered whole with the final chunk
        produced = live.sim.output_tokens if final else live.sim.generated
        if produced > live.emitted:
            text = live.text[live.emitted * 4:produced * 4]
            live.emitted = produced
            live.queue.put_nowait(Chunk(text=text))

    # ------------------------------------------------------------------ policies
    def _observe(self, kind: str, wf: LiveWorkflow, now: float, **extra: Any) -> None:
        self.manager.observe(WorkflowEvent(kind=kind, workflow_id=wf.workflow_id,
                                           tenant=wf.tenant, template=wf.template, time_s=now,
                                           **extra), self._ctx)

    def _on_policy_event(self, event: PolicyEvent) -> None:
        if event.type == FAILURE and event.kind is not None:
            self._counters["policy_failures"] += 1
            self._failures.append((event.kind, event.error or event.message))

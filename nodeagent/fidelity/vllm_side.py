"""The real side of ``saga fidelity``: vLLM's engine core, in this process, scheduled by SAGA.

What runs is vLLM's own ``EngineCore`` (model executor, KV cache tensors, block pool, prefix
cache, ``SagaSyncScheduler``) on the model folder given (``saga model tiny`` on a CPU host), built
once and reused for every replay. Only time is not the host's: see :mod:`.replay`. A replay
drives ``EngineCore.step()`` itself; when the scheduler has decided a step, the clock moves by
the cost model's time for that step, so what the step finishes and frees happens at its end, as
in the simulator. Arrivals whose time has come are added before the next step (an idle engine
jumps to the next arrival), tool boundaries reach the scheduler through ``saga_control`` as the
node agent sends them (``tool_start`` when a call ends, ``tool_end`` when the next one arrives,
``workflow_end`` after the last).

Each replay starts from an empty prefix cache and gets its own workflow, tenant and template
names (``tag``), so nothing one replay taught the policies (execution graphs, fair-share
counters) carries into the next: the simulated side starts fresh every time as well.

Importing this module imports vLLM.
"""

from __future__ import annotations

import dataclasses
import heapq
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from vllm.engine.arg_utils import EngineArgs
from vllm.sampling_params import RequestOutputKind, SamplingParams
from vllm.v1.engine import EngineCoreRequest
from vllm.v1.engine.core import EngineCore
from vllm.v1.executor import Executor

from nodeagent.agent import vllm_preflight
from nodeagent.agent.engine_startup import CapturedStartup, one_line
from nodeagent.agent.tiny_model import is_tiny_model
from nodeagent.agent.vllm_preflight import EngineStartError
from nodeagent.fidelity.replay import EngineShape, ReplayResult
from nodeagent.fidelity.trace import TraceTokens
from nodeagent.sim import profiles
from nodeagent.vllm_hooks import compat
from nodeagent.vllm_hooks.config import SagaSchedulerConfig
from nodeagent.vllm_hooks.identity import TEMPLATE_KEY, TENANT_KEY, WORKFLOW_KEY
from nodeagent.workloads.model import Workload

SCHEDULER_CLS = "nodeagent.vllm_hooks.SagaSyncScheduler"
MAX_STEPS = 1_000_000


class VirtualClock:
    """The scheduler's clock during a replay (``SagaScheduler.saga_clock``)."""

    def __init__(self, start_s: float = 0.0) -> None:
        self.now = start_s

    def __call__(self) -> float:
        return self.now


class VllmReplayEngine:
    """vLLM's engine core with SAGA's scheduler, shaped as ``shape`` (see module docstring)."""

    def __init__(self, model: str, shape: EngineShape, *, node_id: str = "fidelity") -> None:
        self.shape = shape
        self.model = model
        started = time.monotonic()
        engine_args: dict[str, Any] = {}
        if is_tiny_model(model):
            engine_args["load_format"] = "dummy"
        if compat.platform_is_cpu():
            engine_args["enforce_eager"] = True
        config = vllm_preflight.model_config(model) or {}
        per_token = vllm_preflight.kv_bytes_per_token(config) or 2 * 1024 * 1024
        pool_bytes = shape.num_blocks * shape.block_size * per_token
        saga: dict[str, Any] = {"node_id": node_id, "policy_set": "baseline"}
        profile = shape.cost_profile()
        if "profile" in {f.name for f in dataclasses.fields(SagaSchedulerConfig)}:
            # The scheduler takes isolated times and queue delays from this cost model, as the
            # simulator does (the engine core runs in this process, so it finds the profile).
            profiles.PROFILES[profile.name] = profile
            saga["profile"] = profile.name
        args = EngineArgs(
            model=model, skip_tokenizer_init=True, enable_prefix_caching=True,
            scheduler_cls=SCHEDULER_CLS, scheduling_policy="priority", async_scheduling=False,
            block_size=shape.block_size, num_gpu_blocks_override=shape.num_blocks,
            kv_cache_memory_bytes=pool_bytes,
            max_num_seqs=shape.max_num_seqs, max_num_batched_tokens=shape.max_num_batched_tokens,
            max_model_len=shape.context_tokens, distributed_executor_backend="uni",
            additional_config={"saga": saga},
            **engine_args)
        vllm_config = args.create_engine_config()
        self.core = EngineCore(vllm_config, Executor.get_class(vllm_config), log_stats=True)
        self.scheduler: Any = self.core.scheduler
        self.start_s = time.monotonic() - started
        pool = self.scheduler.kv_cache_manager.block_pool
        if pool.num_gpu_blocks != shape.num_blocks:
            raise RuntimeError(f"vLLM made {pool.num_gpu_blocks} KV blocks, {shape.num_blocks} "
                               "were asked for")
        self.vocab_size = int(vllm_config.model_config.get_vocab_size())
        self.clock = VirtualClock()
        self.scheduler.saga_clock = self.clock
        self._cost = shape.cost_model()
        self._on_schedule: Callable[[Any], None] | None = None
        original = self.scheduler.schedule

        def schedule(*args: Any, **kwargs: Any) -> Any:
            output = original(*args, **kwargs)
            if self._on_schedule is not None:
                self._on_schedule(output)
            return output

        self.scheduler.schedule = schedule

    @classmethod
    def start(cls, model: str, shape: EngineShape, **kwargs: Any) -> VllmReplayEngine:
        """Build the engine; a failure in vLLM (here or in its worker process) becomes one
        :class:`EngineStartError` line, the full output kept in a log file."""
        capture = CapturedStartup()
        with capture:
            try:
                engine = cls(model, shape, **kwargs)
            except Exception as exc:
                capture.failed()
                cause = capture.root_cause() or one_line(exc)
                where = f" (engine output: {capture.log_path})" if capture.log_path else ""
                raise EngineStartError(f"the vLLM engine did not start: {cause}{where}") from exc
            capture.succeeded()
        return engine

    def describe(self) -> dict[str, Any]:
        return dict(self.scheduler.saga_control("describe", {}))

    def close(self) -> None:
        self.core.shutdown()

    # ------------------------------------------------------------------ one replay
    def replay(self, workload: Workload, policy_set: str, *, tag: str, start_s: float,
               timing: bool = False) -> ReplayResult:
        """Replay ``workload`` (already renamed with ``tag``; its arrivals from ``start_s``)."""
        scheduler = self.scheduler
        if scheduler.has_requests():
            raise RuntimeError("the engine still has requests")
        if not scheduler.reset_prefix_cache():
            raise RuntimeError("vLLM did not reset its prefix cache")
        scheduler.saga_control("activate_set", {"policy_set": policy_set})
        # The trace's tenants, as the control plane sends a node its tenants: their weights and
        # SLOs are what the fairness policies read (the simulator gets the same ones).
        scheduler.saga_control("set_tenants", {"tenants": {
            t.name: {"weight": t.weight, "slo_slowdown": t.slo_slowdown,
                     "slo_percentile": t.slo_percentile} for t in workload.tenants.values()}})
        self.clock.now = max(self.clock.now, start_s)
        run = _Replay(self, workload, policy_set, tag, timing)
        with self._observing(run.scheduled):
            run.run()
        return run.result

    @contextmanager
    def _observing(self, callback: Callable[[Any], None]) -> Iterator[None]:
        self._on_schedule = callback
        try:
            yield
        finally:
            self._on_schedule = None

    def step_seconds(self, output: Any, targets: dict[str, int]) -> float:
        """The cost model's time of one scheduled step, counted as the simulator counts it: a
        request computing tokens below its (re)admission target prefills, others decode."""
        pf = pf_ctx = chunks = nd = d_ctx = 0
        for request_id, q in output.num_scheduled_tokens.items():
            request = self.scheduler.requests[request_id]
            before = request.num_computed_tokens - q
            if before < targets.get(request_id, request.num_prompt_tokens):
                pf += q
                pf_ctx += before
                chunks += 1
            else:
                nd += 1
                d_ctx += before + 1
        return self._cost.step_seconds(pf, pf_ctx, nd, d_ctx, prefill_chunks=max(chunks, 1))


class _Replay:
    """The closed-loop agents of one replay (as ``nodeagent.sim.cluster`` runs them)."""

    def __init__(self, engine: VllmReplayEngine, workload: Workload, policy_set: str, tag: str,
                 timing: bool) -> None:
        self.engine = engine
        self.core = engine.core
        self.scheduler = engine.scheduler
        self.clock = engine.clock
        self.workload = workload
        self.tokens = TraceTokens(workload, engine.vocab_size, seed=sum(map(ord, tag)))
        self.result = ReplayResult(side="vllm", policy_set=policy_set)
        self.timing = timing
        self._arrivals: list[tuple[float, int, str, int]] = []
        self._seq = 0
        self._specs = {wf.workflow_id: wf for wf in workload.workflows}
        self._generated: dict[str, list[int]] = {}
        self._targets: dict[str, int] = {}
        self._live = len(workload.workflows)
        self._step_started = 0.0
        self._step_cost = 0.0
        for wf in workload.workflows:
            self._push(wf.arrival_s, wf.workflow_id, 0)

    def _push(self, at: float, workflow_id: str, seq: int) -> None:
        self._seq += 1
        heapq.heappush(self._arrivals, (at, self._seq, workflow_id, seq))

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        stats = self.result.engine_stats
        for key in ("queries", "hits", "preempted_queries", "preempted_hits"):
            stats[key] = 0
        for _ in range(MAX_STEPS):
            if not self._live:
                while self.scheduler.has_requests():  # finished ones leave at the next step
                    self.core.step()
                return
            if not self.scheduler.has_requests():
                if not self._arrivals:
                    raise RuntimeError("vllm replay: idle with workflows unfinished")
                self.clock.now = max(self.clock.now, self._arrivals[0][0])
            self._arrive_due()
            wall = time.perf_counter()
            outputs, _ = self.core.step()
            if self.timing and self._step_cost > 0:
                self.result.step_timing.append((time.perf_counter() - wall, self._step_cost))
            self._collect(outputs)
        raise RuntimeError(f"vllm replay: not finished after {MAX_STEPS} steps")

    def _arrive_due(self) -> None:
        while self._arrivals and self._arrivals[0][0] <= self.clock.now:
            at, _, workflow_id, seq = heapq.heappop(self._arrivals)
            self._arrive(workflow_id, seq, at)

    def _arrive(self, workflow_id: str, seq: int, at: float) -> None:
        spec = self._specs[workflow_id]
        call = spec.calls[seq]
        params = SamplingParams(
            max_tokens=call.output_tokens, min_tokens=call.output_tokens, ignore_eos=True,
            temperature=0.0, detokenize=False, output_kind=RequestOutputKind.DELTA,
            extra_args={WORKFLOW_KEY: workflow_id, TENANT_KEY: spec.tenant,
                        TEMPLATE_KEY: spec.template})
        request = EngineCoreRequest(
            request_id=f"{workflow_id}#{seq}", prompt_token_ids=self.tokens.prompt(
                call.prompt_segment), mm_features=None, sampling_params=params,
            pooling_params=None, arrival_time=at, lora_request=None, cache_salt=None,
            data_parallel_rank=None)
        req, wave = self.core.preprocess_add_request(request)
        self.core.add_request(req, wave)

    def scheduled(self, output: Any) -> None:
        """Called right after the scheduler decided a step, before the model runs it."""
        result = self.result
        now = self.clock.now
        for request_id in output.preempted_req_ids or ():
            result.events.append((now, "preempt", request_id))
        for new in output.scheduled_new_reqs:
            result.events.append((now, "admit", new.req_id))
            result.admission_order.append(new.req_id)
            result.cached_tokens[new.req_id] = int(new.num_computed_tokens)
            result.hit_tokens += int(new.num_computed_tokens)
            request = self.scheduler.requests[new.req_id]
            self._targets[new.req_id] = request.num_tokens
            result.prompt_tokens += request.num_tokens
        cached = output.scheduled_cached_reqs
        for request_id, computed in zip(cached.req_ids, cached.num_computed_tokens,
                                        strict=True):
            if request_id in cached.resumed_req_ids:
                result.events.append((now, "readmit", request_id))
                request = self.scheduler.requests[request_id]
                self._targets[request_id] = request.num_tokens
                result.hit_tokens += int(computed)
                result.prompt_tokens += request.num_tokens
        result.preemptions += len(output.preempted_req_ids or ())
        if output.total_num_scheduled_tokens:
            result.steps += 1
        self._step_cost = self.engine.step_seconds(output, self._targets)
        self.clock.now += self._step_cost

    def _collect(self, outputs: dict[int, Any]) -> None:
        stats = self.result.engine_stats
        for engine_outputs in outputs.values():
            s = engine_outputs.scheduler_stats
            if s is not None and s.prefix_cache_stats is not None:
                p = s.prefix_cache_stats
                stats["queries"] += p.queries
                stats["hits"] += p.hits
                stats["preempted_queries"] += p.preempted_queries
                stats["preempted_hits"] += p.preempted_hits
            for out in engine_outputs.outputs:
                self._generated.setdefault(out.request_id, []).extend(out.new_token_ids)
                if out.finish_reason is not None:
                    self._finished(out.request_id)

    def _finished(self, request_id: str) -> None:
        now = self.clock.now
        workflow_id, _, seq_text = request_id.rpartition("#")
        seq = int(seq_text)
        spec = self._specs[workflow_id]
        call = spec.calls[seq]
        generated = self._generated.pop(request_id)
        self._targets.pop(request_id, None)
        self.tokens.generated(call.output_segment, generated)
        self.result.finished += 1
        self.result.end_s = now
        self.result.events.append((now, "finish", request_id))
        if seq + 1 >= len(spec.calls):
            self._live -= 1
            self.scheduler.saga_control("workflow_end", {"workflow_id": workflow_id})
            return
        if call.tool is not None:
            self.scheduler.saga_control("tool_start", {"workflow_id": workflow_id,
                                                       "tool_name": call.tool})
        self._push(now + call.gap_after_s, workflow_id, seq + 1)


def default_env() -> None:
    """A CPU host with no hub access (as ``make test-vllm`` runs)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

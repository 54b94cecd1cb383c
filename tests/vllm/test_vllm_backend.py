"""The node agent's vLLM engine (``nodeagent.agent.vllm_backend``), as far as it can run here.

No model can run on this machine (no GPU, no hub access), so ``AsyncLLM`` itself is never
built. What runs for real: vLLM's own objects (``SamplingParams``, ``RequestOutput`` /
``CompletionOutput``, ``AsyncEngineArgs``, the renderer and tokenizer wrapper vLLM builds for a
model folder, the Hermes tool parser, stat records), a tiny local tokenizer with a chat
template, and a real ``SagaScheduler``. The
``AsyncLLM`` is replaced by :class:`StandInLLM`: its control calls go to the scheduler's
``saga_control`` through vLLM's ``EngineCore`` utility (failures re-raised the way vLLM's
client re-raises them), and its ``generate`` admits the request to that scheduler and steps it
with fake model outputs (one token per step), so tags, prefix-cache hits and finish reasons
come from vLLM's scheduler code.
"""

from __future__ import annotations

import pytest

from tests.vllm.fakes import VLLM_MISSING_REASON

pytest.importorskip("vllm", reason=VLLM_MISSING_REASON)

import argparse
import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast
from vllm.config import ModelConfig, VllmConfig
from vllm.outputs import CompletionOutput, RequestOutput
from vllm.renderers.registry import renderer_from_config
from vllm.sampling_params import RequestOutputKind, SamplingParams
from vllm.utils.hashing import sha256
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
from vllm.v1.engine import FinishReason
from vllm.v1.engine.core import EngineCore
from vllm.v1.metrics.loggers import StatLoggerManager
from vllm.v1.metrics.stats import (
    FinishedRequestStats,
    IterationStats,
    PrefixCacheStats,
    SchedulerStats,
)
from vllm.v1.request import Request

from nodeagent.agent import cli
from nodeagent.agent.engine import (
    ContextTooLong,
    EngineUnavailable,
    GenerationRequest,
    Message,
    ToolCallOut,
)
from nodeagent.agent.vllm_backend import (
    SCHEDULER_CLS,
    SYNC_SCHEDULER_CLS,
    StreamAssembler,
    ToolCallExtractor,
    VllmBackend,
    VllmOptions,
    build_engine_args,
    chat_messages,
    check_policy,
    finish_reason,
    render_prompt,
    sampling_params,
)
from nodeagent.vllm_hooks.identity import identify
from plugins.base import Policy, PolicyConfigError
from plugins.hookspecs import hookimpl
from plugins.registry import PolicyRegistry
from plugins.views import TenantView
from tests.vllm.fakes import EOS, write_tiny_llama
from tests.vllm.harness import (
    BLOCK_SIZE,
    fake_output,
    make_request,
    make_scheduler,
    run_until_done,
    tokens,
)

BOS = 0
MAX_MODEL_LEN = 512
WORDS = ["<s>", "</s>", "<unk>", "<tool_call>", "</tool_call>", "<user>", "<assistant>",
         "tok", "<tool>", "<system>", "TOOLS", "CALL", "hello", "world", "fix", "the", "bug"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% if tools %}TOOLS {% for t in tools %}{{ t.function.name }} "
    "{% endfor %}{{ '\\n' }}{% endif %}{% for m in messages %}<{{ m.role }}> {{ m.content }}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %} CALL {{ c.function.name }} "
    "{{ c.function.arguments | tojson }}{% endfor %}{% endif %}"
    "{% if m.tool_call_id %} [{{ m.tool_call_id }}]{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def _tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer built in memory (no download) with a real chat template; BOS is
    added only when special tokens are asked for, as Llama's tokenizer does."""
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                           special_tokens=[("<s>", BOS)])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>",
                                  additional_special_tokens=["<tool_call>", "</tool_call>"])
    tok.chat_template = CHAT_TEMPLATE
    return tok


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return _tiny_tokenizer()


@pytest.fixture(scope="module")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """vLLM's own renderer (and tokenizer wrapper) over the tiny tokenizer saved to disk."""
    folder = write_tiny_llama(tmp_path_factory.mktemp("tiny-tokenizer"))
    _tiny_tokenizer().save_pretrained(folder)
    config = VllmConfig(model_config=ModelConfig(model=str(folder), max_model_len=MAX_MODEL_LEN))
    return renderer_from_config(config)


def gen_request(messages: tuple[Message, ...] = (Message("user", "hello world"),), *,
                request_id: str = "r1", workflow: str = "wf-1", tools: tuple[str, ...] = (),
                max_tokens: int | None = 4, raw_prompt: str | None = None) -> GenerationRequest:
    return GenerationRequest(request_id=request_id, workflow_id=workflow, tenant="gold",
                             template="coder", messages=messages, max_output_tokens=max_tokens,
                             tools=tools, raw_prompt=raw_prompt)


def request_output(text: str, token_ids: list[int], *, finished: bool = False,
                   reason: str | None = None, prompt_len: int = 10,
                   cached: int = 0) -> RequestOutput:
    completion = CompletionOutput(index=0, text=text, token_ids=token_ids,
                                  cumulative_logprob=None, logprobs=None, finish_reason=reason)
    return RequestOutput(request_id="r1", prompt="p", prompt_token_ids=list(range(prompt_len)),
                         prompt_logprobs=None, outputs=[completion], finished=finished,
                         num_cached_tokens=cached)


# ---------------------------------------------------------------------------- prompts


def test_chat_rendering_includes_tools_history_and_generation_prompt(tokenizer) -> None:  # type: ignore[no-untyped-def]
    messages = (
        Message("user", "fix the bug"),
        Message("assistant", "", tool_calls=(("bash", '{"cmd": "ls"}'), ("edit", "not json"))),
        Message("tool", "hello", tool_call_id="call_7"),
    )
    text = render_prompt(tokenizer, gen_request(messages, tools=("bash", "edit")))
    assert text == (
        "<s>TOOLS bash edit \n<user> fix the bug\n"
        '<assistant>  CALL bash {"cmd": "ls"} CALL edit "not json"\n'
        "<tool> hello [call_7]\n<assistant>"
    )


def test_chat_messages_keep_roles_ids_and_parse_arguments() -> None:
    out = chat_messages((Message("assistant", "x", tool_calls=(("bash", '{"a": 1}'),)),
                         Message("tool", "y", tool_call_id="c1")))
    assert out[0]["tool_calls"][0]["function"] == {"name": "bash", "arguments": {"a": 1}}
    assert out[0]["tool_calls"][0]["id"] == "call_0"
    assert out[1] == {"role": "tool", "content": "y", "tool_call_id": "c1"}


def test_a_raw_prompt_skips_the_chat_template(tokenizer) -> None:  # type: ignore[no-untyped-def]
    assert render_prompt(tokenizer, gen_request(raw_prompt="hello hello")) == "hello hello"


def test_sampling_params_stream_deltas_and_carry_the_tags() -> None:
    params = sampling_params(gen_request(max_tokens=12), skip_special_tokens=False)
    assert isinstance(params, SamplingParams)
    assert (params.max_tokens, params.output_kind, params.skip_special_tokens) == (
        12, RequestOutputKind.DELTA, False)
    who = identify(SimpleNamespace(request_id="r1", session_id=None, sampling_params=params))
    assert (who.workflow_id, who.tenant, who.template, who.tagged) == (
        "wf-1", "gold", "coder", True)
    assert sampling_params(gen_request(max_tokens=None)).max_tokens is None


# ---------------------------------------------------------------------------- outputs


def test_deltas_stream_and_the_final_chunk_carries_usage() -> None:
    stream = StreamAssembler()
    assert [c.text for c in stream.feed(request_output("hel", [5, 6], cached=0))] == ["hel"]
    final = stream.feed(request_output("lo", [7], finished=True, reason="length", cached=16))
    assert [c.text for c in final] == ["lo", ""]
    assert final[-1].finish_reason == "length"
    assert final[-1].usage is not None
    assert (final[-1].usage.prompt_tokens, final[-1].usage.cached_tokens,
            final[-1].usage.completion_tokens) == (10, 16, 3)


@pytest.mark.parametrize(("vllm_reason", "tools", "expected"), [
    ("stop", False, "stop"), ("stop", True, "tool_calls"), ("length", True, "length"),
    ("abort", False, "abort"), ("repetition", False, "stop"), (None, False, "abort"),
])
def test_finish_reasons(vllm_reason: str | None, tools: bool, expected: str) -> None:
    assert finish_reason(vllm_reason, tools) == expected


def test_an_engine_error_fails_the_request() -> None:
    with pytest.raises(EngineUnavailable):
        StreamAssembler().feed(request_output("", [], finished=True, reason="error"))


def test_tool_calls_are_parsed_and_held_back_until_the_end(tokenizer) -> None:  # type: ignore[no-untyped-def]
    extractor = ToolCallExtractor("hermes", tokenizer, ("bash",))
    assert extractor.skip_special_tokens is False  # Hermes markup is special tokens
    stream = StreamAssembler(extractor)
    assert stream.feed(request_output("fix <tool_call>", [14, 3])) == []
    final = stream.feed(request_output(
        '{"name": "bash", "arguments": {"cmd": "ls"}}</tool_call>', [7, 4], finished=True,
        reason="stop"))
    assert [c.text for c in final] == ["fix ", ""]
    (call,) = final[-1].tool_calls
    assert (call.name, json.loads(call.arguments), final[-1].finish_reason) == (
        "bash", {"cmd": "ls"}, "tool_calls")
    assert call.call_id


def test_text_without_markup_is_plain_content(tokenizer) -> None:  # type: ignore[no-untyped-def]
    stream = StreamAssembler(ToolCallExtractor("hermes", tokenizer, ("bash",)))
    final = stream.feed(request_output("hello", [12], finished=True, reason="stop"))
    assert [c.text for c in final] == ["hello", ""]
    assert (final[-1].tool_calls, final[-1].finish_reason) == ((), "stop")


# ---------------------------------------------------------------------------- engine args


def test_engine_args_run_saga_scheduler_with_priority_and_prefix_caching(llama_dir: Path) -> None:
    options = VllmOptions(tensor_parallel_size=2, max_model_len=8192,
                          gpu_memory_utilization=0.8, node_id="gpu-3", policy_set="continuum",
                          engine_args={"enforce_eager": True})
    args = build_engine_args(str(llama_dir), options)
    assert (args.model, args.scheduler_cls, args.scheduling_policy) == (
        str(llama_dir), SCHEDULER_CLS, "priority")
    assert args.enable_prefix_caching is True
    assert (args.tensor_parallel_size, args.max_model_len, args.gpu_memory_utilization) == (
        2, 8192, 0.8)
    assert args.additional_config == {"saga": {"node_id": "gpu-3", "policy_set": "continuum"}}
    assert args.enforce_eager is True
    sync = build_engine_args(str(llama_dir), VllmOptions(async_scheduling=False))
    assert (sync.scheduler_cls, sync.async_scheduling) == (SYNC_SCHEDULER_CLS, False)


@pytest.mark.parametrize(("options", "field"), [
    ({"tensor_parallel_size": 0}, "tensor_parallel_size"),
    ({"max_model_len": -1}, "max_model_len"),
    ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
    ({"engine_args": {"scheduler_cls": "x"}}, "engine_args.scheduler_cls"),
    ({"colour": "red"}, "colour"),
    ({"tool_call_parser": "no-such-parser"}, "tool_call_parser"),
])
def test_bad_options_are_refused_before_the_engine_starts(options: dict[str, Any],
                                                          field: str) -> None:
    with pytest.raises(ValueError, match=field):
        VllmBackend("m", llm=_Unbuildable(), **options)


class _Unbuildable:
    """Any attribute access means the backend went past option validation."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"engine touched ({name}) before the options were validated")


def test_cli_passes_vllm_options_and_refuses_bad_ones() -> None:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["node", "--control-plane", "http://cp", "--engine", "vllm",
                              "--model", "m", "--tensor-parallel-size", "0"])
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        cli._build_engine(args)
    args = parser.parse_args(["node", "--control-plane", "http://cp", "--engine", "vllm",
                              "--model", "m", "--tool-call-parser", "nope"])
    with pytest.raises(ValueError, match="tool_call_parser"):
        cli._build_engine(args)


# ---------------------------------------------------------------------------- policies


class _RaisingFairness(Policy):
    """A fairness policy that fails at run time inside the engine."""

    name = "raises-in-engine"
    kind = "fairness"

    @hookimpl
    def saga_call_priority(self, ctx, call, workflow, tenant) -> float:  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    @hookimpl
    def saga_record_service(self, ctx, call, prefill_tokens, decode_tokens, gpu_s) -> None:  # type: ignore[no-untyped-def]
        return None


@pytest.mark.parametrize(("kind", "name", "params", "field"), [
    ("colour", "lru", {}, "kind"),
    ("eviction", "no-such", {}, "name"),
    ("eviction", "ttl", {"ttl_s": -5}, "ttl_s"),
    ("eviction", "belady", {}, "name"),
])
def test_local_policy_check_names_the_field(kind: str, name: str, params: dict[str, Any],
                                            field: str) -> None:
    with pytest.raises(PolicyConfigError) as info:
        check_policy(PolicyRegistry.discover(), kind, name, params)
    assert info.value.field == field


# ---------------------------------------------------------------------------- the backend


class StandInLLM:
    """What VllmBackend uses of ``AsyncLLM``, over a real SagaScheduler and vLLM's real
    renderer (module docstring)."""

    def __init__(self, scheduler: Any, renderer: Any) -> None:
        self.scheduler = scheduler
        self.vllm_config = scheduler.vllm_config
        self.engine_core = SimpleNamespace(call_utility_async=self._utility)
        self.renderer = renderer
        self.utility_calls: list[tuple[str, dict[str, Any]]] = []
        self.prompts: list[dict[str, Any]] = []
        self.submitted: list[SamplingParams] = []
        self.script: list[RequestOutput] | Exception | None = None
        self.shut_down = False
        init_none_hash(sha256)
        self._hasher = get_request_block_hasher(BLOCK_SIZE, sha256)

    def get_tokenizer(self) -> Any:
        return self.renderer.get_tokenizer()

    async def _utility(self, method: str, command: str, payload: dict[str, Any]) -> Any:
        self.utility_calls.append((command, payload))
        await asyncio.sleep(0)
        try:
            return getattr(EngineCore, method)(SimpleNamespace(scheduler=self.scheduler),
                                               command, payload)
        except Exception as exc:  # vLLM's client re-raises engine-side failures like this
            raise Exception(f"Call to {method} method failed: {exc}") from None

    async def generate(self, prompt: Any, params: SamplingParams,
                       request_id: str) -> AsyncIterator[RequestOutput]:
        self.submitted.append(params)
        self.prompts.append(prompt)
        if isinstance(self.script, Exception):
            raise self.script
        if self.script is not None:
            for output in self.script:
                yield output
            return
        for output in self._run(prompt["prompt_token_ids"], params, request_id):
            await asyncio.sleep(0)
            yield output

    def _run(self, prompt_ids: list[int], params: SamplingParams,
             request_id: str) -> Iterator[RequestOutput]:
        params = params.clone()
        params.update_from_generation_config({}, EOS)
        request = Request(request_id=request_id, prompt_token_ids=prompt_ids,
                          sampling_params=params, pooling_params=None,
                          block_hasher=self._hasher)
        self.scheduler.add_request(request)
        cached = 0
        while True:
            output = self.scheduler.schedule()
            engine_outputs = self.scheduler.update_from_output(
                output, fake_output(self.scheduler, output))
            for outs in engine_outputs.values():
                for out in outs.outputs:
                    if out.request_id != request_id:
                        continue
                    reason = out.finish_reason
                    if out.prefill_stats is not None:
                        cached = out.prefill_stats.num_cached_tokens
                    yield RequestOutput(
                        request_id, None, prompt_ids, None,
                        [CompletionOutput(0, self.get_tokenizer().decode(out.new_token_ids) + " ",
                                          out.new_token_ids, None, None,
                                          finish_reason=str(reason) if reason else None)],
                        reason is not None, num_cached_tokens=cached)
                    if reason is not None:
                        return

    def shutdown(self) -> None:
        self.shut_down = True


@pytest.fixture
def scheduler(llama_dir: Path):  # type: ignore[no-untyped-def]
    return make_scheduler(llama_dir, saga={"node_id": "gpu-3"})


@pytest.fixture
def llm(scheduler, renderer) -> StandInLLM:  # type: ignore[no-untyped-def]
    return StandInLLM(scheduler, renderer)


async def collect(backend: VllmBackend, request: GenerationRequest) -> list[Any]:
    return [chunk async for chunk in backend.generate(request)]


LONG = " ".join(["fix the bug"] * 12)  # 36 words: two full KV blocks of the tiny tokenizer


async def test_generate_tags_the_call_and_reuses_the_prefix_cache(llm, scheduler) -> None:  # type: ignore[no-untyped-def]
    backend = VllmBackend("tiny", llm=llm)
    first = await collect(backend, gen_request((Message("user", LONG),), max_tokens=3))
    assert [c.text for c in first[:-1]] == ["tok ", "tok ", "tok "]
    final = first[-1]
    assert final.finish_reason == "length"
    ids = llm.prompts[0]["prompt_token_ids"]
    assert ids[:2] == [BOS, WORDS.index("<user>")]  # one BOS: the chat template's
    assert (final.usage.prompt_tokens, final.usage.cached_tokens,
            final.usage.completion_tokens) == (len(ids), 0, 3)
    assert scheduler.saga_tracker.workflows["wf-1"].tenant == "gold"
    history = (Message("user", LONG), Message("assistant", "tok tok tok"),
               Message("user", "hello"))
    second = await collect(backend, gen_request(history, request_id="r2", max_tokens=2))
    assert second[-1].usage.cached_tokens >= 2 * BLOCK_SIZE
    assert second[-1].usage.cached_tokens % BLOCK_SIZE == 0
    assert backend.info.kv_capacity_tokens == 1000 * BLOCK_SIZE
    assert (backend.info.engine, backend.info.model, backend.info.gpu_count) == ("vllm", "tiny", 1)
    await backend.close()


async def test_completions_add_special_tokens_and_tools_use_the_parser(llm) -> None:  # type: ignore[no-untyped-def]
    backend = VllmBackend("tiny", llm=llm, tool_call_parser="hermes")
    await collect(backend, gen_request(raw_prompt="hello world", tools=()))
    assert llm.prompts[-1]["prompt_token_ids"] == [BOS, WORDS.index("hello"),
                                                   WORDS.index("world")]
    assert llm.submitted[-1].skip_special_tokens is True
    llm.script = [request_output('<tool_call>{"name": "bash", "arguments": {}}</tool_call>',
                                 [3, 7, 4], finished=True, reason="stop")]
    chunks = await collect(backend, gen_request(tools=("bash",)))
    assert llm.prompts[-1]["prompt"].startswith("<s>TOOLS bash")
    assert llm.submitted[-1].skip_special_tokens is False
    assert chunks[-1].finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in chunks[-1].tool_calls] == [("bash", "{}")]
    assert isinstance(chunks[-1].tool_calls[0], ToolCallOut)
    await backend.close()


async def test_a_prompt_longer_than_the_context_is_refused_before_submission(llm) -> None:  # type: ignore[no-untyped-def]
    backend = VllmBackend("tiny", llm=llm)
    too_long = (Message("user", " ".join(["hello"] * MAX_MODEL_LEN)),)
    with pytest.raises(ContextTooLong) as refused:
        await collect(backend, gen_request(too_long))
    assert "maximum context length" in str(refused.value)  # a 400, never a retryable 503
    assert llm.submitted == []
    await backend.close()


async def test_an_engine_failure_is_engine_unavailable(llm) -> None:  # type: ignore[no-untyped-def]
    backend = VllmBackend("tiny", llm=llm)
    llm.script = RuntimeError("engine core died")
    with pytest.raises(EngineUnavailable, match="engine core died"):
        await collect(backend, gen_request())
    await backend.close()


async def test_policy_swap_reaches_the_scheduler(llm, scheduler) -> None:  # type: ignore[no-untyped-def]
    backend = VllmBackend("tiny", llm=llm)
    await backend.link.flush()
    assert backend.active_policies()["eviction"].startswith("aeg@")
    backend.apply_policy("eviction", "ttl", {"ttl_s": 30})
    await backend.link.flush()
    assert backend.active_policies()["eviction"].startswith("ttl@")
    assert scheduler.saga_manager.describe()["eviction"]["params"]["ttl_s"] == 30
    assert backend.drain_policy_failures() == []
    await backend.close()


async def test_a_bad_policy_is_refused_before_anything_is_sent(llm, scheduler) -> None:  # type: ignore[no-untyped-def]
    backend = VllmBackend("tiny", llm=llm)
    await backend.link.flush()
    sent = len(llm.utility_calls)
    before = scheduler.saga_manager.describe()
    with pytest.raises(PolicyConfigError) as info:
        backend.apply_policy("eviction", "ttl", {"ttl_s": -1})
    assert info.value.field == "ttl_s"
    await backend.link.flush()
    assert [c for c, _ in llm.utility_calls[sent:]] == ["describe"]
    assert scheduler.saga_manager.describe() == before
    await backend.close()


async def test_an_engine_refusal_becomes_a_policy_failure(llm, scheduler) -> None:  # type: ignore[no-untyped-def]
    registry = PolicyRegistry.discover()
    registry.add(_RaisingFairness, "node agent only")  # installed here, not in the engine
    backend = VllmBackend("tiny", llm=llm, registry=registry)
    backend.apply_policy("fairness", "raises-in-engine", {})
    await backend.link.flush()
    (refusal,) = backend.drain_policy_failures()
    assert refusal.kind == "fairness" and refusal.hook == ""
    assert "engine refused" in refusal.error and "raises-in-engine" in refusal.error
    assert "Call to saga_control" not in refusal.error
    assert backend.active_policies()["fairness"].startswith("afs@")
    assert backend.counters()["policy_refusals"] == 1.0
    assert backend.drain_policy_failures() == []
    await backend.close()


async def test_run_time_policy_failures_arrive_with_the_heartbeat(llm, scheduler) -> None:  # type: ignore[no-untyped-def]
    registry = PolicyRegistry.discover()
    registry.add(_RaisingFairness, "test")
    scheduler.saga_manager.registry.add(_RaisingFairness, "test")
    backend = VllmBackend("tiny", llm=llm, registry=registry)
    backend.apply_policy("fairness", "raises-in-engine", {})
    await backend.link.flush()
    for i in range(3):  # the engine runs tagged calls under the failing policy
        scheduler.add_request(make_request(f"r{i}", tokens(10 * i, 20), workflow=f"w{i}"))
    run_until_done(scheduler)
    backend.load()  # the heartbeat asks the engine for failures
    await backend.link.flush()
    failures = backend.drain_policy_failures()
    assert failures and failures[0].kind == "fairness" and "boom" in failures[0].error
    assert failures[0].hook.startswith("saga_") and failures[0].replaced_by == "afs"
    assert backend.active_policies()["fairness"].startswith("afs@")
    await backend.close()


async def test_boundaries_and_tenants_go_to_the_scheduler_in_order(llm, scheduler) -> None:  # type: ignore[no-untyped-def]
    backend = VllmBackend("tiny", llm=llm)
    backend.tool_started("wf-1", "bash")
    backend.tool_ended("wf-1")
    backend.set_tenants([TenantView(name="gold", weight=4.0)])
    await backend.link.flush()
    boundaries = scheduler.saga_control_channel.drain()
    assert [(b.kind, b.workflow_id, b.tool_name) for b in boundaries] == [
        ("tool_start", "wf-1", "bash"), ("tool_end", "wf-1", None)]
    assert scheduler.saga_context(0.0).tenant("gold").weight == 4.0
    await backend.close()


def test_boundaries_sent_before_the_loop_runs_wait_for_it(llm, scheduler) -> None:  # type: ignore[no-untyped-def]
    backend = VllmBackend("tiny", llm=llm)  # built outside any loop, as `saga node` does
    backend.tool_started("wf-9", "grep")
    assert llm.utility_calls == []

    async def run() -> None:
        await backend.link.flush()
        await backend.close()

    asyncio.run(run())
    assert [c for c, _ in llm.utility_calls] == ["describe", "tool_start", "describe"]
    assert llm.shut_down


async def test_load_and_counters_come_from_vllm_stat_loggers_and_describe(llm) -> None:  # type: ignore[no-untyped-def]
    backend = VllmBackend("tiny", llm=llm)
    stats = SchedulerStats(num_running_reqs=3, num_waiting_reqs=4, num_skipped_waiting_reqs=1,
                           kv_cache_usage=0.25,
                           prefix_cache_stats=PrefixCacheStats(requests=2, queries=100, hits=40))
    iteration = IterationStats()
    iteration.num_generation_tokens = 9
    iteration.num_preempted_reqs = 1
    iteration.finished_requests.append(FinishedRequestStats(finish_reason=FinishReason.LENGTH,
                                                            queued_time=2.0))
    manager = StatLoggerManager(vllm_config=llm.vllm_config, engine_idxs=[0],
                                custom_stat_loggers=[backend.recorder.factory],
                                enable_default_loggers=False)
    manager.record(scheduler_stats=stats, iteration_stats=iteration, engine_idx=0)
    report = backend.load()
    assert (report.running, report.waiting) == (3, 5)
    assert (report.kv_used_tokens, report.kv_total_tokens) == (4000, 16000)
    assert report.prefix_cache_hit_rate == pytest.approx(0.4)
    assert report.queue_delay_s == pytest.approx(0.4)  # EWMA from 0 towards 2 s
    assert report.load == pytest.approx(0.25 + 5 / 16)
    await backend.link.flush()
    counters = backend.counters()
    assert (counters["prefix_cache_queries"], counters["prefix_cache_hits"],
            counters["generation_tokens"], counters["preemptions"]) == (100, 40, 9, 1)
    assert counters["workflows"] == 0.0 and counters["control_errors"] == 0.0
    await backend.close()

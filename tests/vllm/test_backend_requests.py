"""What the vLLM backend makes of a request's sampling options and forced tools, and where its
heartbeat's load comes from (vLLM's real SamplingParams and RequestOutput objects)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("vllm", reason="tests/vllm run in the vLLM environments (make test-vllm)")

from vllm.outputs import CompletionOutput, RequestOutput  # noqa: E402

from nodeagent.agent.engine import GenerationRequest  # noqa: E402
from nodeagent.agent.vllm_backend import (  # noqa: E402
    LoadRecorder,
    StreamAssembler,
    VllmBackend,
    forced_call,
    forced_tool_schema,
    sampling_params,
)
from nodeagent.openai_api import ChatCompletionRequest, OpenAIError, parse  # noqa: E402

SCHEMA = {"type": "object", "properties": {"command": {"type": "string"}},
          "required": ["command"]}


def chat(**body: Any) -> ChatCompletionRequest:
    return parse(ChatCompletionRequest, json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}).encode())


def request_from(body: ChatCompletionRequest) -> GenerationRequest:
    return GenerationRequest(request_id="r", workflow_id="w", tenant="t", template="a",
                             messages=body.canonical_messages(),
                             max_output_tokens=body.output_limit(), tools=body.tool_names(),
                             tool_choice=body.forced_tool(),
                             tool_parameters=body.tool_parameters(),
                             sampling=body.sampling_options())


TOOLS = [{"type": "function", "function": {"name": "bash", "parameters": SCHEMA}},
         {"type": "function", "function": {"name": "edit"}}]


def test_sampling_options_reach_vllm() -> None:
    body = chat(temperature=0.7, top_p=0.5, seed=7, ignore_eos=True, min_tokens=3,
                max_tokens=9)
    params = sampling_params(request_from(body))
    assert (params.temperature, params.top_p, params.seed, params.ignore_eos,
            params.min_tokens, params.max_tokens) == (0.7, 0.5, 7, True, 3, 9)
    assert params.structured_outputs is None
    assert params.extra_args == {"saga_workflow": "w", "saga_tenant": "t",
                                 "saga_template": "a"}


def test_a_named_tool_choice_constrains_the_answer_to_its_schema() -> None:
    body = chat(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "bash"}})
    request = request_from(body)
    assert request.tool_choice == "bash" and forced_tool_schema(request) == SCHEMA
    structured = sampling_params(request).structured_outputs
    assert structured is not None and structured.json == SCHEMA
    assert structured.disable_any_whitespace  # a random model could pad with spaces forever
    edit = request_from(chat(tools=TOOLS, tool_choice={"type": "function",
                                                       "function": {"name": "edit"}}))
    assert forced_tool_schema(edit) == {"type": "object"}  # no schema declared: any object
    assert request_from(chat(tools=TOOLS, tool_choice="auto")).tool_choice is None
    assert request_from(chat(tools=TOOLS[:1], tool_choice="required")).tool_choice == "bash"


@pytest.mark.parametrize("body, param", [
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "rm"}}},
     "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"temperature": 3}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
])
def test_bad_tool_choice_and_sampling_options_are_400(body: dict[str, Any],
                                                      param: str | None) -> None:
    with pytest.raises(OpenAIError) as refused:
        chat(**body)
    assert refused.value.status == 400
    if param is not None:
        assert (refused.value.param or "").startswith(param)


def _output(text: str, *, finished: bool, reason: str | None = None) -> RequestOutput:
    completion = CompletionOutput(index=0, text=text, token_ids=[5] * len(text),
                                  cumulative_logprob=None, logprobs=None, finish_reason=reason)
    return RequestOutput(request_id="r", prompt="p", prompt_token_ids=[1, 2, 3],
                         prompt_logprobs=None, outputs=[completion], finished=finished,
                         num_cached_tokens=0)


def test_a_forced_tool_answer_is_returned_as_the_call() -> None:
    assembler = StreamAssembler(forced_tool="bash")
    assert assembler.feed(_output('{"comm', finished=False)) == []  # held back
    (final,) = assembler.feed(_output('and": "ls"}', finished=True, reason="stop"))
    assert final.finish_reason == "tool_calls"
    (call,) = final.tool_calls
    assert (call.name, json.loads(call.arguments)) == ("bash", {"command": "ls"})
    assert call.call_id.startswith("call_")
    cut = StreamAssembler(forced_tool="bash")
    chunks = cut.feed(_output('{"command": "l', finished=True, reason="length"))
    assert [c.text for c in chunks[:-1]] == ['{"command": "l']  # cut short: text, no call
    assert chunks[-1].finish_reason == "length" and not chunks[-1].tool_calls
    assert forced_call("bash", "[1, 2]") == ()


def test_the_heartbeat_load_is_the_schedulers_own_node_view() -> None:
    backend = VllmBackend.__new__(VllmBackend)
    backend.recorder = LoadRecorder()
    backend.recorder.prefix_queries, backend.recorder.prefix_hits = 200, 50
    backend.info = SimpleNamespace(kv_capacity_tokens=4096)  # type: ignore[assignment]
    backend.max_num_seqs = 8
    backend._refresh = lambda: None  # type: ignore[method-assign]
    backend._describe = {}
    fallback = backend.load()  # before the scheduler first answered: the stat logger's
    assert (fallback.kv_total_tokens, fallback.prefix_cache_hit_rate) == (4096, 0.25)
    backend._describe = {"node": {"waiting": 3, "running": 2, "kv_free_tokens": 1000,
                                  "kv_total_tokens": 3968, "queue_delay_s": 0.4, "load": 1.5,
                                  "cached_workflows": {"wf-1": 256}}}
    load = backend.load()
    assert (load.waiting, load.running, load.kv_used_tokens, load.kv_total_tokens) == (
        3, 2, 2968, 3968)
    assert (load.queue_delay_s, load.load, dict(load.cached_workflows)) == (
        0.4, 1.5, {"wf-1": 256})
    assert load.prefix_cache_hit_rate == 0.25

"""Conversations as a model sees them: canonical messages through the tokenizer's chat template.

The vLLM engine renders every chat request here before vLLM tokenizes it; a test can render the
same conversation with the model's tokenizer to know which tokens the engine saw. Needs no vLLM
(any Hugging Face tokenizer with a chat template).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from nodeagent.agent.engine import GenerationRequest, Message


class ChatTokenizer(Protocol):
    """The part of a Hugging Face tokenizer that renders a conversation."""

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


def tool_specs(names: Sequence[str]) -> list[dict[str, Any]]:
    """OpenAI tool definitions for the chat template: a request reaches the engine with tool
    names only, so each schema is an open object (a forced tool's own schema constrains the
    answer instead: ``vllm_backend.sampling_params``)."""
    return [{"type": "function",
             "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}
            for name in names]


def _template_arguments(arguments: str) -> Any:
    """Chat templates (Llama 3.1, Qwen, Hermes) expect a call's arguments as a mapping they can
    ``tojson``; the canonical message keeps the JSON string. Invalid JSON stays a string."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return arguments
    return value if isinstance(value, dict) else arguments


def chat_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Canonical messages -> the OpenAI-style dicts ``apply_chat_template`` takes."""
    out: list[dict[str, Any]] = []
    for message in messages:
        item: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            item["tool_calls"] = [
                {"id": f"call_{i}", "type": "function",
                 "function": {"name": name, "arguments": _template_arguments(arguments)}}
                for i, (name, arguments) in enumerate(message.tool_calls)]
        if message.tool_call_id:
            item["tool_call_id"] = message.tool_call_id
        out.append(item)
    return out


def render_prompt(tokenizer: ChatTokenizer, request: GenerationRequest) -> str:
    """The prompt text of ``request``: its raw prompt, or its conversation through the chat
    template with the generation prompt appended (what vLLM's chat endpoint renders)."""
    if request.raw_prompt is not None:
        return request.raw_prompt
    text = tokenizer.apply_chat_template(
        chat_messages(request.messages), tools=tool_specs(request.tools) or None,
        add_generation_prompt=True, tokenize=False)
    if not isinstance(text, str):
        raise TypeError(f"chat template rendered {type(text).__name__}, expected text")
    return text

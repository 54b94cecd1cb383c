"""The OpenAI-compatible request and response shapes shared by the node agent and the gateway.

Only what SAGA reads is typed; every other field an OpenAI client sends (temperature,
top_p, ...) is kept and passed through. Errors follow OpenAI's shape
(``{"error": {"message", "type", "param", "code"}}``) so unmodified SDKs show them properly.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

# Without a tokenizer the simulated engine counts ~4 characters per token (OpenAI's rule of
# thumb for English) plus a few tokens of chat-template overhead per message.
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message in canonical form (what prefix matching hashes)."""

    role: str
    content: str
    tool_calls: tuple[tuple[str, str], ...] = ()  # (function name, arguments)
    tool_call_id: str = ""


@dataclass(frozen=True, slots=True)
class SimScript:
    """How a simulated call should end (replays and demos script their outcomes; a real model
    decides by itself, so the vLLM engine ignores this)."""

    output_tokens: int | None = None
    finish_reason: str | None = None  # "stop" | "tool_calls" | "length"
    tool_name: str | None = None



class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class FunctionCall(_Open):
    name: str
    arguments: str = "{}"


class ToolCallIn(_Open):
    id: str = ""
    type: str = "function"
    function: FunctionCall


class ContentPart(_Open):
    type: str
    text: str | None = None


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None

    def canonical(self) -> Message:
        if isinstance(self.content, list):
            text = "".join(part.text or "" for part in self.content)
        else:
            text = self.content or ""
        calls = tuple((c.function.name, c.function.arguments) for c in self.tool_calls or ())
        return Message(self.role, text, calls, self.tool_call_id or "")


class FunctionSpec(_Open):
    name: str
    parameters: dict[str, Any] | None = None


class ToolSpec(_Open):
    type: str = "function"
    function: FunctionSpec


class NamedToolChoice(_Open):
    type: Literal["function"] = "function"
    function: FunctionSpec


SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty",
                   "frequency_penalty", "repetition_penalty", "min_tokens", "ignore_eos")
"""Sampling options passed to a real engine (OpenAI's, and vLLM's extra ones); the simulated
engine ignores them."""


class StreamOptions(_Open):
    include_usage: bool = False


class SimScriptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    output_tokens: int | None = Field(None, ge=1, le=131_072)
    finish_reason: Literal["stop", "tool_calls", "length"] | None = None
    tool_name: str | None = Field(None, min_length=1, max_length=200)

    def script(self) -> SimScript:
        return SimScript(self.output_tokens, self.finish_reason, self.tool_name)


class _Common(_Open):
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    user: str | None = None
    metadata: dict[str, Any] | None = None
    session_id: str | None = None
    saga_sim: SimScriptIn | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    repetition_penalty: float | None = Field(None, gt=0, le=2)
    min_tokens: int | None = Field(None, ge=0)
    ignore_eos: bool | None = None

    def sampling_options(self) -> tuple[tuple[str, Any], ...]:
        """The sampling options this request sets (``SAMPLING_FIELDS``)."""
        return tuple((name, getattr(self, name)) for name in SAMPLING_FIELDS
                     if getattr(self, name) is not None)

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is supported")
        return value


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None

    @field_validator("tool_choice")
    @classmethod
    def _known_tool(cls, value: Any, info: ValidationInfo) -> Any:
        names = {t.function.name for t in info.data.get("tools") or ()}
        if isinstance(value, NamedToolChoice) and value.function.name not in names:
            raise ValueError(f"names {value.function.name!r}, which is not one of the "
                             "request's tools")
        if value == "required" and not names:
            raise ValueError("'required' needs tools")
        return value

    def forced_tool(self) -> str | None:
        """The tool the answer must call: a named ``tool_choice``, or ``required`` with a single
        tool (None: the model decides)."""
        if isinstance(self.tool_choice, NamedToolChoice):
            return self.tool_choice.function.name
        names = self.tool_names()
        return names[0] if self.tool_choice == "required" and len(names) == 1 else None

    def tool_parameters(self) -> tuple[tuple[str, str], ...]:
        """(name, JSON schema text) of every tool that declares its parameters."""
        return tuple((t.function.name, json.dumps(t.function.parameters, sort_keys=True))
                     for t in self.tools or () if t.function.parameters is not None)

    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def canonical_messages(self) -> tuple[Message, ...]:
        return tuple(m.canonical() for m in self.messages)

    def tool_names(self) -> tuple[str, ...]:
        return tuple(t.function.name for t in self.tools or ())


class CompletionRequest(_Common):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _single_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt per request is supported")
        return value

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def output_limit(self) -> int | None:
        return self.max_tokens


RequestT = TypeVar("RequestT", bound=BaseModel)


class OpenAIError(Exception):
    """An error to return in OpenAI's shape."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 kind: str = "invalid_request_error", code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = (
            status, message, param, kind, code)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


def parse(model: type[RequestT], raw: bytes) -> RequestT:
    """Parse a JSON body; any problem becomes a 400 naming the parameter."""
    try:
        data = json.loads(raw or b"null")
    except ValueError as exc:
        raise OpenAIError(400, f"request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # not a ValueError: deep nesting would otherwise be a 500
        raise OpenAIError(400, "request body is nested too deeply") from exc
    if not isinstance(data, dict):
        raise OpenAIError(400, "request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise OpenAIError(400, f"{param}: {first['msg']}" if param else first["msg"],
                          param) from exc


def count_text_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def count_message_tokens(message: Message) -> int:
    body = message.content + "".join(name + args for name, args in message.tool_calls)
    return TOKENS_PER_MESSAGE + (math.ceil(len(body) / CHARS_PER_TOKEN) if body else 0)


def count_prompt_tokens(messages: Iterable[Message]) -> int:
    return sum(count_message_tokens(m) for m in messages)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage_body(prompt: int, cached: int, completion: int,
               service_s: float | None = None) -> dict[str, Any]:
    """OpenAI's usage object; ``saga_service_s`` (engine seconds the call received) when the
    engine reported it: the gateway reads it into the workflow's ``service_s``."""
    body: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                            "total_tokens": prompt + completion,
                            "prompt_tokens_details": {"cached_tokens": cached}}
    if service_s is not None:
        body[SERVICE_USAGE_FIELD] = round(service_s, 9)
    return body


SERVICE_USAGE_FIELD = "saga_service_s"


def tool_calls_body(calls: Iterable[tuple[str, str, str]]) -> list[dict[str, Any]]:
    return [{"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
            for call_id, name, args in calls]


def now_s() -> int:
    return int(time.time())

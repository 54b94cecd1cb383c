"""What the gateway checks in a ``/v1`` request before it admits the call.

Every rule answers 400 in OpenAI's error shape (``{"error": {"message", "type", "param",
"code"}}``), naming the parameter, before anything is recorded or routed. Why each exists:

- the body is strict JSON (``controlplane.validation.loads_strict``): no ``NaN``/``Infinity``,
  finite numbers, no lone surrogates, nested at most ``MAX_JSON_DEPTH`` deep (deeper used to be
  a ``RecursionError``, a 500);
- fields are validated strictly (a JSON string is not a number, ``1`` is not ``true``), so the
  published schema (``controlplane.api.openapi``) is exactly what is accepted;
- ``max_tokens``/``max_completion_tokens`` are 1..``MAX_OUTPUT_TOKENS``; ``temperature`` 0..2,
  ``top_p`` in (0, 1] (vLLM refuses 0), ``presence_penalty``/``frequency_penalty`` -2..2
  (as OpenAI's API);
- the workflow id (``X-Saga-Workflow``, else ``metadata.saga_workflow``, else ``user``) is
  1..200 characters without control characters (PostgreSQL refuses NUL); Unicode is allowed,
  and a header's bytes are read as UTF-8;
- the template (``X-Saga-Template``, else ``metadata.saga_template``) matches
  ``^[-a-zA-Z0-9_.]{1,100}$``: it is forwarded to the node in an HTTP header, where a newline or
  a non-ASCII character used to fail the call as ``node_lost``;
- a prompt (plus ``max_tokens`` when given) larger than the KV capacity of every node serving
  the model is ``context_length_exceeded``: no node could ever run it, so retrying (the 503 it
  used to get) cannot help.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from controlplane.gateway.calls import Identity
from controlplane.gateway.directory import NodeEntry
from controlplane.validation import (
    JsonProblem,
    integral,
    loads_strict,
    template_name_problem,
    workflow_id_problem,
)
from nodeagent.openai_api import ChatCompletionRequest, OpenAIError

WORKFLOW_HEADER = "X-Saga-Workflow"
TEMPLATE_HEADER = "X-Saga-Template"
DEFAULT_TEMPLATE = "default"
MAX_OUTPUT_TOKENS = 131_072
"""Largest ``max_tokens`` accepted: the longest context of today's open models; OpenAI rejects
absurd values (``10**9``) the same way."""


@dataclass(frozen=True)
class SamplingRange:
    """The accepted values of one sampling option; the published schema is derived from it,
    so what the schema allows is exactly what is accepted."""

    low: float
    high: float
    low_exclusive: bool = False

    def admits(self, value: float) -> bool:
        above = value > self.low if self.low_exclusive else value >= self.low
        return above and value <= self.high and math.isfinite(value)

    def describe(self) -> str:
        return f"{'(' if self.low_exclusive else '['}{self.low:g}, {self.high:g}]"

    def json_schema(self) -> dict[str, float]:
        low_key = "exclusiveMinimum" if self.low_exclusive else "minimum"
        return {low_key: self.low, "maximum": self.high}


SAMPLING_RANGES: dict[str, SamplingRange] = {
    "temperature": SamplingRange(0.0, 2.0),
    "top_p": SamplingRange(0.0, 1.0, low_exclusive=True),
    "presence_penalty": SamplingRange(-2.0, 2.0),
    "frequency_penalty": SamplingRange(-2.0, 2.0),
}

RequestT = TypeVar("RequestT", bound=BaseModel)


def invalid(message: str, param: str | None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param, "invalid_request_error", code)


def method_not_allowed(allowed: str) -> OpenAIError:
    """405 with the ``Allow`` header RFC 9110 requires (the app sends ``error.allow``)."""
    error = invalid(f"use {allowed}", None)
    error.status = 405
    error.allow = allowed  # type: ignore[attr-defined]
    return error


INTEGER_FIELDS = ("max_tokens", "max_completion_tokens", "n")


def _integral_ints(data: dict[str, Any]) -> dict[str, Any]:
    """A copy in which integer fields given as ``16.0`` are ``16`` (JSON Schema calls both
    integers; the strict check would refuse the float)."""
    out = {**data, **{name: integral(data[name]) for name in INTEGER_FIELDS if name in data}}
    sim = out.get("saga_sim")
    if isinstance(sim, dict) and "output_tokens" in sim:
        out["saga_sim"] = {**sim, "output_tokens": integral(sim["output_tokens"])}
    return out


def _check_sampling(data: dict[str, Any]) -> None:
    for name, accepted in SAMPLING_RANGES.items():
        value = data.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise invalid(f"{name}: must be a number", name, "invalid_type")
        if not accepted.admits(value):
            raise invalid(f"{name}: {value} is outside {accepted.describe()}", name,
                          "invalid_value")


def _check_output_limits(data: dict[str, Any]) -> None:
    for name in ("max_tokens", "max_completion_tokens"):
        value = data.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_OUTPUT_TOKENS:
            raise invalid(f"{name}: {value} is greater than the maximum of {MAX_OUTPUT_TOKENS}",
                          name, "invalid_value")


def parse_request(model: type[RequestT], raw: bytes) -> tuple[RequestT, dict[str, Any]]:
    """The validated request and the JSON object to forward to the node (every field the
    client sent, typed or not)."""
    try:
        data = loads_strict(raw or b"null")
    except JsonProblem as exc:
        if exc.syntax:
            raise invalid(f"request body: {exc.message}", None) from exc
        raise invalid(str(exc), exc.path or None) from exc
    if not isinstance(data, dict):
        raise invalid("request body must be a JSON object", None)
    _check_sampling(data)
    normalized = _integral_ints(data)
    _check_output_limits(normalized)
    try:
        body = model.model_validate(normalized, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise invalid(f"{param}: {first['msg']}" if param else first["msg"], param) from exc
    return body, data


def _header_text(value: str | None) -> str | None:
    """A header's text: its bytes as UTF-8 (ASGI hands them over as Latin-1), so that a
    workflow id sent in the header and in ``metadata`` is the same id."""
    if not value:
        return None
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _metadata_text(metadata: dict[str, Any], key: str) -> str | None:
    value = metadata.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise invalid(f"metadata.{key}: must be a string", f"metadata.{key}", "invalid_type")
    return value


def identity(workflow_header: str | None, template_header: str | None, body: Any) -> Identity:
    """Which workflow and template the call belongs to (headers first, then ``metadata``,
    then ``user`` for the workflow), each checked by the rules above."""
    metadata = body.metadata or {}
    external: str | None = None
    for param, value in ((WORKFLOW_HEADER, _header_text(workflow_header)),
                         ("metadata.saga_workflow", _metadata_text(metadata, "saga_workflow")),
                         ("user", body.user or None)):
        if value is not None:
            problem = workflow_id_problem(value)
            if problem:
                raise invalid(f"{param}: workflow id {problem}", param, "invalid_value")
            external = value
            break
    template = DEFAULT_TEMPLATE
    for param, value in ((TEMPLATE_HEADER, _header_text(template_header)),
                         ("metadata.saga_template", _metadata_text(metadata, "saga_template"))):
        if value is not None:
            problem = template_name_problem(value)
            if problem:
                raise invalid(f"{param}: template name {problem}", param, "invalid_value")
            template = value
            break
    return Identity(external, template)


def check_context(body: Any, prompt_tokens: int, nodes: Sequence[NodeEntry]) -> None:
    """400 ``context_length_exceeded`` when the prompt (plus the requested output, when the
    request bounds it) exceeds the largest KV capacity among ``nodes`` (those serving the
    model). Nothing is checked while the directory knows no such node, or none reports its
    capacity: the node itself then refuses the call the same way."""
    capacity = max((n.view.kv_total_tokens for n in nodes), default=0)
    if capacity <= 0:
        return
    output = body.output_limit() or 0
    if prompt_tokens + output <= capacity:
        return
    param = "messages" if isinstance(body, ChatCompletionRequest) else "prompt"
    detail = (f"{prompt_tokens} in the {param} and {output} for the completion" if output
              else f"{prompt_tokens} in the {param}")
    raise invalid(f"This model's maximum context length is {capacity} tokens; the request needs "
                  f"{prompt_tokens + output} tokens ({detail}). Reduce the length of the "
                  f"{param} or of max_tokens.", param, "context_length_exceeded")

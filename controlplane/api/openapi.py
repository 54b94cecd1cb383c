"""The parts of ``/api/openapi.json`` that django-ninja cannot derive: the gateway's ``/v1``
paths (a raw ASGI app, not ninja views) and the recursive ``JsonValue`` schema.

Why hand-written: clients and the schemathesis run in CI read one schema for the whole control
plane, and the gateway's request rules (``controlplane.gateway.validation``) must be stated as
precisely as the REST API's so that what the schema allows is what the gateway accepts. The
shapes follow OpenAI's API (only what SAGA reads is constrained; other fields pass through to
the node).
"""

from __future__ import annotations

import copy
from typing import Any

from controlplane.api.errors import ERROR_STATUSES
from controlplane.gateway.validation import MAX_OUTPUT_TOKENS, SAMPLING_RANGES
from controlplane.validation import (
    JSON_VALUE_MARKER,
    JSON_VALUE_SCHEMA,
    NO_NUL_PATTERN,
    OPTIONAL_WORKFLOW_ID_PATTERN,
)

INFERENCE_SCHEME = "InferenceKey"
EXAMPLE_MODEL = "llama-3-8b"
_TEMPLATE_OR_EMPTY = r"^([-a-zA-Z0-9_.]{1,100})?$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


_TEXT = {"type": "string", "pattern": NO_NUL_PATTERN}
_TOKENS = {"type": "integer", "minimum": 1, "maximum": MAX_OUTPUT_TOKENS}


def _obj(properties: dict[str, Any], required: tuple[str, ...] = (),
         **extra: Any) -> dict[str, Any]:
    """An object whose other members (passed through to the node) are any JSON without NUL,
    which is what the gateway accepts."""
    schema: dict[str, Any] = {"type": "object", "properties": properties,
                              "propertyNames": {"pattern": NO_NUL_PATTERN},
                              "additionalProperties": _ref("JsonValue")}
    if required:
        schema["required"] = list(required)
    return {**schema, **extra}


SCHEMAS: dict[str, Any] = {
    "JsonValue": JSON_VALUE_SCHEMA,
    "OpenAIError": {
        "type": "object", "required": ["error"],
        "description": "OpenAI's error shape (the gateway's); `code` is machine-readable, e.g. "
                       "`context_length_exceeded`, `invalid_api_key`, `model_not_found`, "
                       "`quota_exceeded`, `node_unavailable`.",
        "properties": {"error": {
            "type": "object", "required": ["message", "type", "param", "code"],
            "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                           "param": {"type": ["string", "null"]},
                           "code": {"type": ["string", "null"]}}}},
    },
    "ChatMessage": _obj({
        "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {"anyOf": [_TEXT, {"type": "array", "items": _obj(
            {"type": _TEXT, "text": _nullable(_TEXT)}, ("type",))}, {"type": "null"}]},
        "tool_calls": _nullable({"type": "array", "items": _obj({
            "id": _TEXT, "type": _TEXT,
            "function": _obj({"name": _TEXT, "arguments": _TEXT}, ("name",))},
            ("function",))}),
        "tool_call_id": _nullable(_TEXT),
    }, ("role",)),
    "SagaSim": {
        "type": "object", "additionalProperties": False,
        "description": "The simulated engine's script of how the call ends (sim nodes only).",
        "properties": {
            "output_tokens": _nullable(_TOKENS),
            "finish_reason": _nullable({"enum": ["stop", "tool_calls", "length"]}),
            "tool_name": _nullable({**_TEXT, "minLength": 1, "maxLength": 200}),
        },
    },
}


def _common_properties() -> dict[str, Any]:
    sampling = {name: _nullable({"type": "number", **accepted.json_schema()})
                for name, accepted in SAMPLING_RANGES.items()}
    return {
        "model": {**_TEXT, "minLength": 1, "examples": [EXAMPLE_MODEL]},
        "max_tokens": _nullable(_TOKENS),
        **sampling,
        "stream": {"type": "boolean"},
        "stream_options": _nullable(_obj({"include_usage": {"type": "boolean"}})),
        "n": {"type": "integer", "enum": [1], "description": "Only 1 is supported."},
        "user": _nullable({"type": "string", "pattern": OPTIONAL_WORKFLOW_ID_PATTERN,
                           "description": "The workflow id when neither X-Saga-Workflow nor "
                                          "metadata.saga_workflow gives one."}),
        "metadata": _nullable(_obj({
            "saga_workflow": _nullable({"type": "string",
                                        "pattern": OPTIONAL_WORKFLOW_ID_PATTERN}),
            "saga_template": _nullable({"type": "string", "pattern": _TEMPLATE_OR_EMPTY}),
        })),
        "session_id": _nullable(_TEXT),
        "saga_sim": _nullable(_ref("SagaSim")),
    }


def _request(kind: str) -> dict[str, Any]:
    properties = _common_properties()
    if kind == "chat":
        properties.update({
            "messages": {"type": "array", "minItems": 1, "items": _ref("ChatMessage")},
            "max_completion_tokens": _nullable(_TOKENS),
            "tools": _nullable({"type": "array", "items": _obj(
                {"type": _TEXT, "function": _obj({"name": _TEXT}, ("name",))}, ("function",))}),
        })
        required = ["model", "messages"]
        example = {"model": EXAMPLE_MODEL, "messages": [{"role": "user", "content": "Hello"}],
                   "max_tokens": 16}
    else:
        properties["prompt"] = {"anyOf": [_TEXT, {"type": "array", "items": _TEXT,
                                                  "minItems": 1, "maxItems": 1}]}
        required = ["model", "prompt"]
        example = {"model": EXAMPLE_MODEL, "prompt": "Hello", "max_tokens": 16}
    return _obj(properties, tuple(required), example=example)


def _errors(*statuses: int) -> dict[str, Any]:
    text = {400: "Invalid request (the body, a parameter, or a prompt longer than the model's "
                 "context: `context_length_exceeded`)",
            401: "Missing, revoked or expired API key (inference scope needed)",
            404: "No node serving this model is up (`model_not_found`)",
            409: "The workflow is finished (`workflow_finished`) or cannot take a call",
            413: "The body is larger than GATEWAY_MAX_BODY_BYTES",
            429: "A quota is exhausted; see Retry-After",
            500: "The gateway failed during the call (recorded as failed)",
            503: "Retryable: no node, a node lost during the call, or a store unavailable; see "
                 "Retry-After"}
    return {str(s): {"description": text[s], "content": {
        "application/json": {"schema": _ref("OpenAIError")}}} for s in statuses}


_WORKFLOW_HEADERS = [
    {"name": "X-Saga-Workflow", "in": "header", "required": False,
     "description": "The workflow (agent task) this call belongs to; empty: none.",
     "schema": {"type": "string", "pattern": OPTIONAL_WORKFLOW_ID_PATTERN}},
    {"name": "X-Saga-Template", "in": "header", "required": False,
     "description": "The kind of agent (its execution graph is learned per template); "
                    "empty: `default`.",
     "schema": {"type": "string", "pattern": _TEMPLATE_OR_EMPTY}},
]


_SSE_EVENT = {
    "type": "object", "required": ["data"],
    "description": "One server-sent event: `data` is a JSON chunk (`chat.completion.chunk` or "
                   "`text_completion`), an error object, or `[DONE]` at the end.",
    "properties": {"data": {"type": "string"}, "event": {"type": "string"},
                   "id": {"type": "string"}, "retry": {"type": "integer"}},
}


def _completion_operation(kind: str, summary: str, operation_id: str) -> dict[str, Any]:
    obj = "chat.completion" if kind == "chat" else "text_completion"
    body = {"type": "object", "required": ["id", "object", "created", "model", "choices"],
            "properties": {"id": {"type": "string"}, "object": {"const": obj},
                           "created": {"type": "integer"}, "model": {"type": "string"},
                           "choices": {"type": "array", "items": {"type": "object"}},
                           "usage": {"type": "object"}}}
    return {
        "operationId": operation_id, "summary": summary, "tags": ["gateway (OpenAI-compatible)"],
        "security": [{INFERENCE_SCHEME: []}],
        "parameters": copy.deepcopy(_WORKFLOW_HEADERS),
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": _request(kind)}}},
        "responses": {
            "200": {"description": "The completion; with `stream: true`, server-sent events "
                                   "ending with `data: [DONE]`",
                    "content": {"application/json": {"schema": body},
                                "text/event-stream": {"itemSchema": _SSE_EVENT}}},
            **_errors(400, 401, 404, 409, 413, 429, 500, 503),
        },
    }


def gateway_paths() -> dict[str, Any]:
    models = {"type": "object", "required": ["object", "data"], "properties": {
        "object": {"const": "list"},
        "data": {"type": "array", "items": {
            "type": "object", "required": ["id", "object", "created", "owned_by"],
            "properties": {"id": {"type": "string"}, "object": {"const": "model"},
                           "created": {"type": "integer"}, "owned_by": {"type": "string"}}}}}}
    return {
        "/v1/chat/completions": {"post": _completion_operation(
            "chat", "Chat completion, routed to the workflow's home node", "gateway_chat")},
        "/v1/completions": {"post": _completion_operation(
            "text", "Text completion, routed to the workflow's home node",
            "gateway_completions")},
        "/v1/models": {"get": {
            "operationId": "gateway_models", "summary": "Models served by nodes that are up",
            "tags": ["gateway (OpenAI-compatible)"], "security": [{INFERENCE_SCHEME: []}],
            "responses": {"200": {"description": "The models",
                                  "content": {"application/json": {"schema": models}}},
                          **_errors(401, 503)}}},
    }


def _resolve_markers(node: Any) -> Any:
    if isinstance(node, dict):
        if node == JSON_VALUE_MARKER:
            return _ref("JsonValue")
        return {key: _resolve_markers(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolve_markers(value) for value in node]
    return node


# Which operations a created object's response leads to (OpenAPI links: they document the
# object's lifecycle, and schemathesis's stateful phase follows them).
LINKS: list[tuple[str, str, str, str, str, list[tuple[str, str]]]] = [
    # (path, method, status, parameter, response body pointer, [(target path, method)])
    ("/api/workflows", "post", "201", "workflow_id", "/id", [
        ("/api/workflows/{workflow_id}", "get"), ("/api/workflows/{workflow_id}/calls", "get"),
        ("/api/workflows/{workflow_id}/events", "post"),
        ("/api/workflows/{workflow_id}/cancel", "post"),
        ("/api/workflows/{workflow_id}/complete", "post")]),
    ("/api/admin/tenants", "post", "201", "slug", "/slug", [
        ("/api/admin/tenants/{slug}", "get"), ("/api/admin/tenants/{slug}", "patch"),
        ("/api/admin/tenants/{slug}/keys", "get"), ("/api/admin/tenants/{slug}/keys", "post")]),
    ("/api/admin/tenants/{slug}/keys", "post", "201", "key_id", "/id", [
        ("/api/admin/keys/{key_id}/revoke", "post")]),
    ("/api/admin/nodes", "post", "201", "name", "/name", [
        ("/api/admin/nodes/{name}", "get"), ("/api/admin/nodes/{name}/rotate-token", "post"),
        ("/api/admin/nodes/{name}/drain", "post"), ("/api/admin/nodes/{name}/undrain", "post"),
        ("/api/admin/nodes/{name}/revoke-token", "post")]),
]


def _add_links(paths: dict[str, Any]) -> None:
    for path, method, status, parameter, pointer, targets in LINKS:
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        links = response.setdefault("links", {})
        for target_path, target_method in targets:
            target = paths.get(target_path, {}).get(target_method)
            if target is None:
                continue
            links[target["operationId"]] = {
                "operationId": target["operationId"],
                "parameters": {parameter: f"$response.body#{pointer}"}}


def _describe_errors(paths: dict[str, Any]) -> None:
    """Say what each REST error status means (ninja writes only the HTTP reason phrase)."""
    error = _ref("ErrorOut")
    for item in paths.values():
        for operation in item.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {}).get("application/json", {})
                if content.get("schema") == error and int(status) in ERROR_STATUSES:
                    response["description"] = ERROR_STATUSES[int(status)]


def extend(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the gateway's paths, their schemas and security scheme to ninja's schema."""
    for key in ("paths", "components"):
        if key in schema:
            schema[key] = _resolve_markers(schema[key])
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {}).update(copy.deepcopy(SCHEMAS))
    components.setdefault("securitySchemes", {})[INFERENCE_SCHEME] = {
        "type": "http", "scheme": "bearer",
        "description": "A tenant API key with the `inference` scope."}
    _describe_errors(schema.setdefault("paths", {}))
    schema["paths"].update(gateway_paths())
    _add_links(schema["paths"])
    return schema

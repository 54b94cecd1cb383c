"""The node agent's OpenAI-compatible HTTP API.

``/v1/chat/completions`` and ``/v1/completions`` (streaming SSE or not), ``/v1/models``,
``/health`` and ``/metrics``. Workflow identity comes from ``X-Saga-Workflow`` (or vLLM's
``session_id``), the tenant and template from ``X-Saga-Tenant`` / ``X-Saga-Template`` (the
gateway sets them); a request without a workflow is a single-call workflow.

Requests need ``Authorization: Bearer <node API key>`` when the agent has one (the gateway
holds it). While the control connection re-syncs policies, new requests wait for the sync (up
to ``sync_wait_s``), then get 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from nodeagent.agent.engine import (
    Chunk,
    ContextTooLong,
    Engine,
    EngineUnavailable,
    GenerationRequest,
    Message,
    ToolCallOut,
)
from nodeagent.agent.metrics import NodeMetrics
from nodeagent.openai_api import (
    ChatCompletionRequest,
    CompletionRequest,
    OpenAIError,
    new_id,
    now_s,
    parse,
    tool_calls_body,
    usage_body,
)

WORKFLOW_HEADER = "x-saga-workflow"
TENANT_HEADER = "x-saga-tenant"
TEMPLATE_HEADER = "x-saga-template"


class NodeServer:
    """State shared by the routes: the engine, tool boundaries, metrics, readiness."""

    def __init__(self, engine: Engine, *, api_key: str | None, model_name: str,
                 ready: Callable[[], bool] = lambda: True,
                 wait_ready: Callable[[], Any] | None = None,
                 connected: Callable[[], bool] = lambda: False, sync_wait_s: float = 10.0,
                 unavailable: Callable[[], str | None] = lambda: None) -> None:
        self.engine = engine
        self.unavailable = unavailable
        """Why the engine cannot serve now (it died and is being restarted), else None."""
        self.api_key = api_key
        self.model_name = model_name
        self.ready = ready
        self.wait_ready = wait_ready
        self.sync_wait_s = sync_wait_s
        self.metrics = NodeMetrics(engine, connected)
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.metrics_endpoint, methods=["GET"]),
        ])

    # ------------------------------------------------------------------ helpers
    def _authorize(self, request: Request) -> None:
        if self.api_key is None:
            return
        header = request.headers.get("authorization", "")
        presented = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(presented.encode(), self.api_key.encode()):
            raise OpenAIError(401, "missing or wrong node API key", "Authorization",
                              "authentication_error", "invalid_api_key")

    async def _await_sync(self) -> None:
        reason = self.unavailable()
        if reason:
            raise OpenAIError(503, f"node engine unavailable: {reason}", None, "server_error",
                              "unavailable")
        if self.ready():
            return
        if self.wait_ready is not None:
            try:
                await asyncio.wait_for(self.wait_ready(), self.sync_wait_s)
                return
            except TimeoutError:
                pass
        raise OpenAIError(503, "node is re-syncing policies with the control plane",
                          None, "server_error", "syncing")

    def _identity(self, request: Request, session_id: str | None) -> tuple[str, str, str]:
        workflow = request.headers.get(WORKFLOW_HEADER) or session_id or new_id("single")
        tenant = request.headers.get(TENANT_HEADER) or "default"
        template = request.headers.get(TEMPLATE_HEADER) or "default"
        return workflow, tenant, template

    def _check_model(self, model: str) -> None:
        if model != self.model_name:
            raise OpenAIError(404, f"model {model!r} is not served here; this node serves "
                              f"{self.model_name!r}", "model", "invalid_request_error",
                              "model_not_found")

    @staticmethod
    def _too_long(exc: ContextTooLong, chat: bool) -> OpenAIError:
        return OpenAIError(400, f"This model's maximum context length is exceeded: {exc}",
                           "messages" if chat else "prompt", "invalid_request_error",
                           "context_length_exceeded")

    @staticmethod
    def _error(exc: OpenAIError) -> JSONResponse:
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    # ------------------------------------------------------------------ routes
    async def chat_completions(self, request: Request) -> Response:
        try:
            self._authorize(request)
            body = parse(ChatCompletionRequest, await request.body())
            self._check_model(body.model)
            await self._await_sync()
        except OpenAIError as exc:
            return self._error(exc)
        workflow, tenant, template = self._identity(request, body.session_id)
        gen = GenerationRequest(
            request_id=new_id("chatcmpl"), workflow_id=workflow, tenant=tenant,
            template=template, messages=body.canonical_messages(),
            max_output_tokens=body.output_limit(), tools=body.tool_names(),
            script=body.saga_sim.script() if body.saga_sim else None,
            tool_choice=body.forced_tool(), tool_parameters=body.tool_parameters(),
            sampling=body.sampling_options(),
        )
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await self._serve(gen, body.stream, include_usage, chat=True)

    async def completions(self, request: Request) -> Response:
        try:
            self._authorize(request)
            body = parse(CompletionRequest, await request.body())
            self._check_model(body.model)
            await self._await_sync()
        except OpenAIError as exc:
            return self._error(exc)
        workflow, tenant, template = self._identity(request, body.session_id)
        text = body.prompt_text()
        gen = GenerationRequest(
            request_id=new_id("cmpl"), workflow_id=workflow, tenant=tenant, template=template,
            messages=(Message("user", text),), max_output_tokens=body.output_limit(),
            script=body.saga_sim.script() if body.saga_sim else None, raw_prompt=text,
            sampling=body.sampling_options(),
        )
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await self._serve(gen, body.stream, include_usage, chat=False)

    async def models(self, request: Request) -> Response:
        try:
            self._authorize(request)
        except OpenAIError as exc:
            return self._error(exc)
        return JSONResponse({"object": "list", "data": [
            {"id": self.model_name, "object": "model", "created": now_s(), "owned_by": "saga",
             "max_model_len": (self.engine.info.max_model_len
                               or self.engine.info.kv_capacity_tokens)}]})

    async def health(self, request: Request) -> Response:
        unavailable = self.unavailable()
        status = "restarting" if unavailable else "ok" if self.ready() else "syncing"
        body: dict[str, Any] = {"status": status, "engine": self.engine.info.engine,
                                "policies": self.engine.active_policies()}
        describe = getattr(self.engine, "describe", None)
        if callable(describe):  # what the engine's scheduler last said about itself
            body["scheduler"] = describe()
        if unavailable:
            body["reason"] = unavailable
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4")

    # ------------------------------------------------------------------ generation
    def _end(self, gen: GenerationRequest, final: Chunk, started: float,
             first_token: float | None) -> None:
        if first_token is not None:
            self.metrics.ttft.observe(first_token - started)
        self.metrics.e2e.labels(final.finish_reason or "abort").observe(
            time.monotonic() - started)

    async def _serve(self, gen: GenerationRequest, stream: bool, include_usage: bool,
                     chat: bool) -> Response:
        started = time.monotonic()
        try:
            chunks = self.engine.generate(gen)
        except ContextTooLong as exc:
            return self._error(self._too_long(exc, chat))
        if stream:
            # An engine may find out only once the request runs that it can never take it
            # (vLLM tokenizes first): the first chunk decides between 400, 503 and a stream.
            iterator = aiter(chunks)
            try:
                first = await anext(iterator)
            except ContextTooLong as exc:
                return self._error(self._too_long(exc, chat))
            except EngineUnavailable as exc:
                return self._error(OpenAIError(503, str(exc), None, "server_error",
                                               "unavailable"))
            except StopAsyncIteration:
                first = None
            return StreamingResponse(
                self._sse(gen, _prepend(first, iterator), include_usage, chat, started),
                media_type="text/event-stream", headers={"Cache-Control": "no-cache"},
            )
        text: list[str] = []
        final: Chunk | None = None
        first_token: float | None = None
        try:
            async for chunk in chunks:
                if first_token is None and (chunk.text or chunk.finish_reason):
                    first_token = time.monotonic()
                text.append(chunk.text)
                if chunk.finish_reason is not None:
                    final = chunk
        except ContextTooLong as exc:  # an engine that finds out only once it runs
            return self._error(self._too_long(exc, chat))
        except EngineUnavailable as exc:
            return self._error(OpenAIError(503, str(exc), None, "server_error", "unavailable"))
        assert final is not None and final.usage is not None
        self._end(gen, final, started, first_token)
        return JSONResponse(self._full_body(gen, "".join(text), final, chat))

    def _full_body(self, gen: GenerationRequest, text: str, final: Chunk,
                   chat: bool) -> dict[str, Any]:
        usage = final.usage
        assert usage is not None
        body: dict[str, Any] = {
            "id": gen.request_id, "created": now_s(), "model": self.model_name,
            "usage": usage_body(usage.prompt_tokens, usage.cached_tokens,
                                usage.completion_tokens, usage.service_s),
        }
        if chat:
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if final.tool_calls:
                message["tool_calls"] = tool_calls_body(_triples(final.tool_calls))
            body.update(object="chat.completion", choices=[
                {"index": 0, "message": message, "finish_reason": final.finish_reason}])
        else:
            body.update(object="text_completion", choices=[
                {"index": 0, "text": text, "finish_reason": final.finish_reason}])
        return body

    async def _sse(self, gen: GenerationRequest, chunks: AsyncIterator[Chunk],
                   include_usage: bool, chat: bool, started: float) -> AsyncIterator[bytes]:
        kind = "chat.completion.chunk" if chat else "text_completion"
        first_token: float | None = None

        def frame(choice: dict[str, Any], usage: dict[str, Any] | None = None) -> bytes:
            payload: dict[str, Any] = {"id": gen.request_id, "object": kind,
                                       "created": now_s(), "model": self.model_name,
                                       "choices": [choice] if choice else []}
            if usage is not None:
                payload["usage"] = usage
            return f"data: {json.dumps(payload)}\n\n".encode()

        if chat:
            yield frame({"index": 0, "delta": {"role": "assistant", "content": ""},
                         "finish_reason": None})
        try:
            async for chunk in chunks:
                if first_token is None and (chunk.text or chunk.finish_reason):
                    first_token = time.monotonic()
                if chunk.text:
                    delta = {"content": chunk.text} if chat else None
                    yield frame({"index": 0, "delta": delta, "finish_reason": None} if chat
                                else {"index": 0, "text": chunk.text, "finish_reason": None})
                if chunk.finish_reason is not None:
                    if chat and chunk.tool_calls:
                        calls = [{"index": i, **c} for i, c in
                                 enumerate(tool_calls_body(_triples(chunk.tool_calls)))]
                        yield frame({"index": 0, "delta": {"tool_calls": calls},
                                     "finish_reason": None})
                    yield frame({"index": 0, "delta": {}, "finish_reason": chunk.finish_reason}
                                if chat else {"index": 0, "text": "",
                                              "finish_reason": chunk.finish_reason})
                    self._end(gen, chunk, started, first_token)
                    if include_usage and chunk.usage is not None:
                        u = chunk.usage
                        yield frame({}, usage_body(u.prompt_tokens, u.cached_tokens,
                                                   u.completion_tokens, u.service_s))
        except EngineUnavailable as exc:
            error = OpenAIError(503, str(exc), None, "server_error", "unavailable")
            yield f"data: {json.dumps(error.body())}\n\n".encode()
        yield b"data: [DONE]\n\n"


async def _prepend(first: Chunk | None, rest: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    if first is not None:
        yield first
    async for chunk in rest:
        yield chunk


def _triples(calls: tuple[ToolCallOut, ...]) -> list[tuple[str, str, str]]:
    return [(c.call_id, c.name, c.arguments) for c in calls]

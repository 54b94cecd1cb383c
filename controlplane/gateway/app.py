"""The OpenAI-compatible gateway (``/v1/``) as a raw ASGI application.

``/v1/chat/completions`` and ``/v1/completions`` (streaming or not) and ``/v1/models``, for
tenant API keys. Every call that is admitted is recorded once with exactly one outcome:

- ``completed``: the node's answer was relayed; recorded (committed, ``synchronous_commit``
  on) before the last byte is sent to the client (a client that reads its workflow right after
  the answer sees the record), and turned into ``cancelled`` if the client left before that
  byte was handed to the server; when the record cannot be written the client gets a retryable
  503 instead of the answer, and the call is recorded ``failed`` once PostgreSQL is back;
- ``cancelled``: the client went away first (the node request is closed, so the node stops);
- ``node_lost``: the node failed or vanished (the client gets a retryable 503);
- ``failed``: the node refused the call, or the gateway itself failed (500);
- ``interrupted``: this gateway process stopped first (closed by reconciliation).

While PostgreSQL or Redis is down, new calls get a fast retryable 503 and nothing is recorded.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from controlplane.gateway import ledger, nodeclient, runtime, validation
from controlplane.gateway.calls import (
    STORE_DOWN,
    Identity,
    Outcome,
    Ticket,
    begin_call,
    correct_to_cancelled,
)
from controlplane.gateway.exchange import BodyTooLarge, ClientGone, Exchange
from controlplane.gateway.keys import Caller
from controlplane.gateway.nodeclient import NodeHTTPError
from controlplane.gateway.upstream import Observed, node_headers, parse_sse_data
from controlplane.quotas import QuotaExceeded
from controlplane.stores import StoreUnavailable, in_db_thread
from controlplane.whatif.recording import record_prompt_soon
from controlplane.workflows.models import CallOutcome
from controlplane.workflows.states import IllegalTransition
from nodeagent.openai_api import (
    ChatCompletionRequest,
    CompletionRequest,
    OpenAIError,
    count_prompt_tokens,
    count_text_tokens,
    now_s,
)

WORKFLOW_HEADER = "X-Saga-Workflow"
TEMPLATE_HEADER = "X-Saga-Template"
DEFAULT_TEMPLATE = "default"
PREFIX = "/v1/"

log = logging.getLogger("saga.gateway")


def _error_headers(exc: OpenAIError) -> dict[str, str]:
    headers: dict[str, str] = {}
    if exc.status == 405:
        headers["Allow"] = getattr(exc, "allow", "")
    if exc.status in (429, 503):
        headers["Retry-After"] = str(getattr(exc, "retry_after_s", 1))
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="saga"'
    return headers


async def _send_error(ex: Exchange, exc: OpenAIError) -> None:
    await ex.respond_json(exc.status, exc.body(), _error_headers(exc))


def _unavailable(exc: Exception) -> OpenAIError:
    return OpenAIError(503, f"the control plane's store is unavailable ({exc}); retry the call",
                       None, "server_error", "store_unavailable")


async def _caller(ex: Exchange) -> Caller:
    header = ex.header("authorization") or ""
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    caller = None
    if token:
        try:
            caller = (runtime.keys.cached(token)
                      or await in_db_thread(runtime.keys.authenticate)(token))
        except STORE_DOWN as exc:
            raise _unavailable(exc) from exc
    if caller is None:
        raise OpenAIError(401, "missing, revoked or expired API key (inference scope needed)",
                          "Authorization", "authentication_error", "invalid_api_key")
    return caller


def _identity(ex: Exchange, body: Any) -> Identity:
    """The call's workflow and template, checked (``controlplane.gateway.validation``)."""
    return validation.identity(ex.header(WORKFLOW_HEADER), ex.header(TEMPLATE_HEADER), body)


class Call:
    """One admitted call: relays the node's answer and records its outcome exactly once."""

    def __init__(self, ex: Exchange, ticket: Ticket) -> None:
        self.ex = ex
        self.ticket = ticket
        self.seen = Observed()
        self.first_token: datetime | None = None
        self.recording: asyncio.Future[bool] | None = None

    async def record(self, outcome: str, error: str = "") -> bool:
        """Record the outcome once; shielded, so a cancellation cannot lose it half-way. True
        once it is durably recorded; False when PostgreSQL did not answer (the client must then
        not get the answer: ``GatewayProcess.record``)."""
        if self.recording is not None:
            return await asyncio.shield(self.recording)
        seen = self.seen
        result = Outcome(outcome=outcome, finish_reason=seen.finish_reason,
                         prompt_tokens=seen.prompt_tokens, cached_tokens=seen.cached_tokens,
                         completion_tokens=seen.completion_tokens,
                         tool_names=tuple(seen.tool_names), first_token_at=self.first_token,
                         error=error or seen.error, service_s=seen.service_s)
        self.recording = asyncio.ensure_future(_record(self.ticket, result))
        return await asyncio.shield(self.recording)

    async def run(self, path: str, raw: dict[str, Any], stream: bool,
                  wants_usage: bool) -> None:
        try:
            await self._relay(path, raw, stream, wants_usage)
        except asyncio.CancelledError:
            await self._client_left()
            raise
        except Exception as exc:
            log.exception("gateway failed during call %s", self.ticket.call_pk)
            await self.record(CallOutcome.FAILED, f"gateway error: {type(exc).__name__}: {exc}")
            if not self.ex.started:
                await _send_error(self.ex, OpenAIError(
                    500, "the gateway failed during the call; it is recorded as failed", None,
                    "server_error", "gateway_error"))

    async def _client_left(self) -> None:
        if self.recording is None:
            if self.ex.gone.is_set():
                await self.record(CallOutcome.CANCELLED,
                                  "client went away before the response ended")
            else:  # cancelled by the server itself: this process is shutting down
                await self.record(CallOutcome.INTERRUPTED,
                                  "gateway process shut down during the call")
        elif not self.ex.finished:
            await asyncio.shield(self.recording)
            await in_db_thread(correct_to_cancelled)(
                self.ticket, "client went away before the last byte of the response")

    def _node_lost(self, exc: Exception) -> OpenAIError:
        return OpenAIError(503, f"node {self.ticket.node.name} failed during the call "
                           f"({type(exc).__name__}); retry the call", None, "server_error",
                           "node_unavailable")

    async def _engine_failed(self, error: Any) -> None:
        """The node's engine failed in the middle of the stream (the node sent an error
        event): the call is lost as when the node itself dies, and the client gets the same
        retryable error."""
        message = str(error.get("message") if isinstance(error, dict) else error)
        await self.record(CallOutcome.NODE_LOST, f"node reported: {message}")
        failure = OpenAIError(503, f"node {self.ticket.node.name} failed during the call "
                              f"({message}); retry the call", None, "server_error",
                              "node_unavailable")
        await self.ex.body(f"data: {json.dumps(failure.body())}\n\n".encode(), more=True)
        await self.ex.body(b"data: [DONE]\n\n", more=False)

    async def _relay(self, path: str, raw: dict[str, Any], stream: bool,
                     wants_usage: bool) -> None:
        ticket = self.ticket
        if stream:
            raw = {**raw, "stream_options": {**(raw.get("stream_options") or {}),
                                             "include_usage": True}}
        headers = node_headers(str(ticket.workflow_pk), ticket.tenant, ticket.template)
        try:
            upstream = await nodeclient.client().post(f"{ticket.node.address}{path}",
                                                      json.dumps(raw).encode(), headers)
        except NodeHTTPError as exc:
            await self.record(CallOutcome.NODE_LOST, repr(exc))
            await _send_error(self.ex, self._node_lost(exc))
            return
        try:
            if upstream.status_code != 200:
                await self._refused(upstream)
            elif stream:
                await self._stream(upstream, wants_usage)
            else:
                await self._whole(upstream)
        finally:
            await upstream.aclose()

    async def _refused(self, upstream: nodeclient.Response) -> None:
        try:
            content = await upstream.read()
        except NodeHTTPError as exc:
            await self.record(CallOutcome.NODE_LOST, repr(exc))
            await _send_error(self.ex, self._node_lost(exc))
            return
        await self.record(CallOutcome.FAILED,
                          f"node answered {upstream.status_code}: {content[:500]!r}")
        await self.ex.respond(upstream.status_code, content,
                              upstream.headers.get("content-type", "application/json"))

    async def _whole(self, upstream: nodeclient.Response) -> None:
        try:
            content = await upstream.read()
        except NodeHTTPError as exc:
            await self.record(CallOutcome.NODE_LOST, repr(exc))
            await _send_error(self.ex, self._node_lost(exc))
            return
        self.seen.read_body(json.loads(content))
        self.first_token = timezone.now()
        if not await self.record(CallOutcome.COMPLETED):
            await _send_error(self.ex, _unrecorded())
            return
        if self.ex.gone.is_set():
            raise asyncio.CancelledError  # left while we recorded: _client_left corrects it
        await self.ex.respond(200, content)

    async def _stream(self, upstream: nodeclient.Response, wants_usage: bool) -> None:
        """Relay the node's SSE stream line by line (awaiting the client before reading more:
        back-pressure); the call is recorded before the client sees ``[DONE]``."""
        ex = self.ex
        await ex.start(200, "text/event-stream", {"Cache-Control": "no-cache"})
        try:
            async for line in upstream.iter_lines():
                payload = parse_sse_data(line)
                if payload is not None:
                    if "error" in payload and not self.seen.finish_reason:
                        await self._engine_failed(payload["error"])
                        return
                    if self.first_token is None:
                        self.first_token = timezone.now()
                    for choice in payload.get("choices") or ():
                        self.seen.read_choice(choice)
                    if payload.get("usage"):
                        self.seen.read_usage(payload["usage"])
                        if not payload.get("choices") and not wants_usage:
                            continue  # the usage chunk the gateway asked for on its own behalf
                elif line.strip() == "data: [DONE]":
                    recorded = await self.record(
                        CallOutcome.COMPLETED if self.seen.finish_reason
                        else CallOutcome.NODE_LOST,
                        "" if self.seen.finish_reason
                        else "node ended the stream without a finish reason")
                    if not recorded:
                        failure = _unrecorded()
                        await ex.body(f"data: {json.dumps(failure.body())}\n\n".encode(),
                                      more=True)
                    await ex.body(b"data: [DONE]\n\n", more=False)
                    return
                await ex.body((line + "\n").encode() if line else b"\n", more=True)
        except NodeHTTPError as exc:
            await self.record(CallOutcome.NODE_LOST, repr(exc))
            failure = self._node_lost(exc)
            await ex.body(f"data: {json.dumps(failure.body())}\n\n".encode(), more=True)
            await ex.body(b"data: [DONE]\n\n", more=False)
            return
        await self.record(CallOutcome.NODE_LOST, "node closed the stream before [DONE]")
        await ex.body(b"", more=False)


def _fast(ticket_or_identity: Ticket | Identity) -> bool:
    """Whether the call takes the ledger's path: a workflow's call on PostgreSQL."""
    if isinstance(ticket_or_identity, Ticket):
        return runtime.fast_path() and not ticket_or_identity.single_call
    return runtime.fast_path() and ticket_or_identity.external_id is not None


async def _record(ticket: Ticket, result: Outcome) -> bool:
    return await runtime.process.record(ticket, result, runtime.async_routing_state(),
                                        _fast(ticket))


def _unrecorded() -> OpenAIError:
    return OpenAIError(503, "the call's record could not be written (the control plane's store "
                       "did not answer), so its answer is withheld; retry the call", None,
                       "server_error", "store_unavailable")


async def _begin(ex: Exchange, caller: Caller, identity: Identity, model: str,
                 prompt_tokens: int) -> Ticket:
    """Admit and route; shielded, so a client leaving mid-admission cannot leave a pending call
    behind (it is recorded ``cancelled`` as soon as admission returns)."""
    process = runtime.process

    def admit() -> Ticket:
        process.ensure_alive()
        ticket = begin_call(caller, identity, model, prompt_tokens, runtime.directory,
                            runtime.routing_state(), process.id)
        process.hold(ticket)
        return ticket

    async def admit_fast() -> Ticket:
        await process.stay_alive()
        ticket = await ledger.begin(caller, identity, model, prompt_tokens, runtime.directory,
                                    runtime.async_routing_state(), process.id)
        process.hold(ticket)
        return ticket

    task = asyncio.ensure_future(admit_fast() if _fast(identity) else in_db_thread(admit)())
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_cancel_admitted)
        raise
    except QuotaExceeded as exc:
        error = OpenAIError(429, str(exc), exc.quota, "rate_limit_error", "quota_exceeded")
        error.retry_after_s = exc.retry_after_s  # type: ignore[attr-defined]
        raise error from exc
    except IllegalTransition as exc:
        raise OpenAIError(409, str(exc), WORKFLOW_HEADER, code="illegal_transition") from exc
    except StoreUnavailable as exc:
        raise _unavailable(exc) from exc


def _cancel_admitted(task: asyncio.Future[Ticket]) -> None:
    if task.cancelled() or task.exception() is not None:
        return
    ticket = task.result()
    outcome = Outcome(CallOutcome.CANCELLED,
                      error="client went away while the call was being admitted")
    asyncio.ensure_future(_record(ticket, outcome))


async def _completion(ex: Exchange, model: type[Any], path: str,
                      prompt_tokens: Callable[[Any], int]) -> None:
    body_bytes = await ex.read_body(settings.GATEWAY_MAX_BODY_BYTES)
    handler = asyncio.current_task()
    assert handler is not None
    watcher = asyncio.ensure_future(ex.watch(handler))
    try:
        caller = await _caller(ex)
        body, raw = validation.parse_request(model, body_bytes)
        tokens = prompt_tokens(body)
        try:
            await runtime.fresh_directory()
        except (StoreUnavailable, *STORE_DOWN) as exc:
            raise _unavailable(exc) from exc
        validation.check_context(body, tokens, runtime.directory.nodes_for(body.model))
        ticket = await _begin(ex, caller, _identity(ex, body), body.model, tokens)
        record_prompt_soon(ticket.call_pk, body, tokens)  # what a what-if replay needs (no text)
        wants_usage = bool(body.stream_options and body.stream_options.include_usage)
        await Call(ex, ticket).run(path, raw, bool(body.stream), wants_usage)
    finally:
        watcher.cancel()


async def _models(ex: Exchange) -> None:
    await _caller(ex)
    try:
        await in_db_thread(runtime.directory.refresh)()
    except (StoreUnavailable, *STORE_DOWN) as exc:
        raise _unavailable(exc) from exc
    await ex.respond_json(200, {"object": "list", "data": [
        {"id": model, "object": "model", "created": now_s(), "owned_by": "saga"}
        for model in runtime.directory.models()]})


def _chat_tokens(body: ChatCompletionRequest) -> int:
    return count_prompt_tokens(body.canonical_messages())


def _completion_tokens(body: CompletionRequest) -> int:
    return count_text_tokens(body.prompt_text())


async def _dispatch(ex: Exchange) -> None:
    if ex.path == "/v1/chat/completions":
        if ex.method != "POST":
            raise validation.method_not_allowed("POST")
        await _completion(ex, ChatCompletionRequest, "/v1/chat/completions", _chat_tokens)
    elif ex.path == "/v1/completions":
        if ex.method != "POST":
            raise validation.method_not_allowed("POST")
        await _completion(ex, CompletionRequest, "/v1/completions", _completion_tokens)
    elif ex.path == "/v1/models":
        if ex.method != "GET":
            raise validation.method_not_allowed("GET")
        await _models(ex)
    else:
        raise OpenAIError(404, f"unknown endpoint {ex.method} {ex.path}; this gateway serves "
                          "/v1/chat/completions, /v1/completions and /v1/models", None,
                          "invalid_request_error", "unknown_url")


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """ASGI entry point for ``/v1/`` requests."""
    runtime.process.start()
    ex = Exchange(scope, receive, send)
    if not ex.host_allowed():
        await _send_error(ex, OpenAIError(400, "invalid Host header", "Host"))
        return
    if settings.SECURE_SSL_REDIRECT and not ex.secure:
        host = ex.header("host") or ""
        query = scope.get("query_string", b"").decode("latin1")
        location = f"https://{host}{ex.path}" + (f"?{query}" if query else "")
        await ex.respond(301, b"", "text/plain", {"Location": location})
        return
    try:
        await _dispatch(ex)
    except OpenAIError as exc:
        if not ex.started:
            await _send_error(ex, exc)
    except BodyTooLarge:
        await _send_error(ex, OpenAIError(
            413, f"request body larger than {settings.GATEWAY_MAX_BODY_BYTES} bytes", None,
            "invalid_request_error", "request_too_large"))
    except ClientGone:
        return
    except asyncio.CancelledError:
        if ex.gone.is_set():
            return  # the client left; what was admitted is recorded
        raise
    except Exception:
        # A bug, not bad input: an admitted call has recorded its outcome already
        # (Call.run); the client gets the JSON envelope rather than the server's bare 500.
        log.exception("gateway failed on %s %s", ex.method, ex.path)
        if not ex.started:
            await _send_error(ex, OpenAIError(500, "the gateway failed on this request", None,
                                              "server_error", "gateway_error"))

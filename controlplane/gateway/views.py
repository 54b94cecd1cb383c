"""``/v1/chat/completions``, ``/v1/completions`` and ``/v1/models`` for tenant API keys."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import lru_cache
from typing import Any, ParamSpec, TypeVar

import httpx
from channels.db import database_sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from controlplane.gateway.calls import Identity, Outcome, Ticket, begin_call, finish_call
from controlplane.gateway.directory import ClusterDirectory
from controlplane.gateway.keys import Caller, KeyCache
from controlplane.gateway.routing_state import LocalRoutingState, RedisRoutingState, RoutingState
from controlplane.gateway.upstream import Observed, client, node_headers, parse_sse_data
from controlplane.quotas import QuotaExceeded
from controlplane.workflows.models import CallOutcome
from controlplane.workflows.states import IllegalTransition
from nodeagent.openai_api import (
    ChatCompletionRequest,
    CompletionRequest,
    OpenAIError,
    count_prompt_tokens,
    count_text_tokens,
    now_s,
    parse,
)

WORKFLOW_HEADER = "X-Saga-Workflow"
TEMPLATE_HEADER = "X-Saga-Template"
DEFAULT_TEMPLATE = "default"

P = ParamSpec("P")
R = TypeVar("R")

keys = KeyCache()
directory = ClusterDirectory()


@lru_cache(maxsize=1)
def routing_state() -> RoutingState:
    return RedisRoutingState(settings.REDIS_URL) if settings.REDIS_URL else LocalRoutingState()


def _in_thread(work: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """Run ORM/Redis work in the loop's worker threads (not one thread per request), giving the
    database connection back to the pool when it is done rather than holding it for the rest of
    the call (the upstream wait included)."""
    return database_sync_to_async(work, thread_sensitive=False)  # type: ignore[no-any-return]


def _error(exc: OpenAIError) -> JsonResponse:
    response = JsonResponse(exc.body(), status=exc.status)
    if exc.status in (429, 503):
        response["Retry-After"] = str(getattr(exc, "retry_after_s", 1))
    if exc.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="saga"'
    return response


async def _caller(request: HttpRequest) -> Caller:
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    caller = (keys.cached(token) or await _in_thread(keys.authenticate)(token)) if token else None
    if caller is None:
        raise OpenAIError(401, "missing, revoked or expired API key (inference scope needed)",
                          "Authorization", "authentication_error", "invalid_api_key")
    return caller


def _identity(request: HttpRequest, body: Any) -> Identity:
    metadata = body.metadata or {}
    external = (request.headers.get(WORKFLOW_HEADER) or metadata.get("saga_workflow")
                or body.user or None)
    template = (request.headers.get(TEMPLATE_HEADER) or metadata.get("saga_template")
                or DEFAULT_TEMPLATE)
    if external is not None and len(str(external)) > 200:
        raise OpenAIError(400, "workflow id longer than 200 characters", WORKFLOW_HEADER)
    return Identity(str(external) if external is not None else None, str(template)[:100])


async def _begin(caller: Caller, identity: Identity, model: str, prompt_tokens: int) -> Ticket:
    try:
        return await _in_thread(begin_call)(caller, identity, model, prompt_tokens, directory,
                                            routing_state())
    except QuotaExceeded as exc:
        error = OpenAIError(429, str(exc), exc.quota, "rate_limit_error", "quota_exceeded")
        error.retry_after_s = exc.retry_after_s  # type: ignore[attr-defined]
        raise error from exc
    except IllegalTransition as exc:
        raise OpenAIError(409, str(exc), WORKFLOW_HEADER, code="illegal_transition") from exc


async def _finish(ticket: Ticket, outcome: str, seen: Observed, first_token: Any,
                  error: str = "") -> None:
    await _in_thread(finish_call)(ticket, Outcome(
        outcome=outcome, finish_reason=seen.finish_reason, prompt_tokens=seen.prompt_tokens,
        cached_tokens=seen.cached_tokens, completion_tokens=seen.completion_tokens,
        tool_names=tuple(seen.tool_names), first_token_at=first_token, error=error or seen.error,
    ), routing_state())


def _node_lost(ticket: Ticket, exc: Exception) -> OpenAIError:
    return OpenAIError(503, f"node {ticket.node.name} failed during the call "
                       f"({type(exc).__name__}); retry the call", None, "server_error",
                       "node_unavailable")


async def _relay(path: str, request: HttpRequest, body: Any, raw: dict[str, Any],
                 prompt_tokens: int) -> HttpResponse:
    caller = await _caller(request)
    ticket = await _begin(caller, _identity(request, body), body.model, prompt_tokens)
    wants_usage = bool(body.stream_options and body.stream_options.include_usage)
    if body.stream:
        raw = {**raw, "stream_options": {**(raw.get("stream_options") or {}),
                                         "include_usage": True}}
    url = f"{ticket.node.address}{path}"
    headers = node_headers(str(ticket.workflow_pk), ticket.tenant, ticket.template)
    seen = Observed()
    try:
        upstream = await client().send(
            client().build_request("POST", url, content=json.dumps(raw), headers=headers),
            stream=True)
    except httpx.HTTPError as exc:
        await _finish(ticket, CallOutcome.NODE_LOST, seen, None, repr(exc))
        raise _node_lost(ticket, exc) from exc
    if upstream.status_code != 200:
        content = await upstream.aread()
        await upstream.aclose()
        await _finish(ticket, CallOutcome.FAILED, seen, None,
                      f"node answered {upstream.status_code}: {content[:500]!r}")
        return HttpResponse(content, status=upstream.status_code,
                            content_type=upstream.headers.get("content-type", "application/json"))
    if not body.stream:
        try:
            content = await upstream.aread()
        except httpx.HTTPError as exc:
            await _finish(ticket, CallOutcome.NODE_LOST, seen, None, repr(exc))
            raise _node_lost(ticket, exc) from exc
        finally:
            await upstream.aclose()
        seen.read_body(json.loads(content))
        await _finish(ticket, CallOutcome.COMPLETED, seen, timezone.now())
        return HttpResponse(content, content_type="application/json")
    return StreamingHttpResponse(_stream(ticket, upstream, seen, wants_usage),
                                 content_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})


async def _stream(ticket: Ticket, upstream: httpx.Response, seen: Observed,
                  wants_usage: bool) -> AsyncIterator[bytes]:
    """Relay the node's SSE stream; the call is recorded before the client sees ``[DONE]``
    (so a client that reads the workflow right after gets the final record), or, when the
    client goes away or the node fails, on the way out."""
    first_token = None
    recorded = False

    async def record(outcome: str, error: str = "") -> None:
        nonlocal recorded
        if not recorded:
            recorded = True
            await _finish(ticket, outcome, seen, first_token, error)

    try:
        async for line in upstream.aiter_lines():
            payload = parse_sse_data(line)
            if payload is not None:
                if first_token is None:
                    first_token = timezone.now()
                for choice in payload.get("choices") or ():
                    seen.read_choice(choice)
                if payload.get("usage"):
                    seen.read_usage(payload["usage"])
                    if not payload.get("choices") and not wants_usage:
                        continue  # the usage chunk the gateway asked for on its own behalf
            elif line.strip() == "data: [DONE]":
                await record(CallOutcome.COMPLETED if seen.finish_reason
                             else CallOutcome.NODE_LOST)
            yield (line + "\n").encode() if line else b"\n"
    except httpx.HTTPError as exc:
        await record(CallOutcome.NODE_LOST, repr(exc))
        failure = _node_lost(ticket, exc)
        yield f"data: {json.dumps(failure.body())}\n\n".encode()
        yield b"data: [DONE]\n\n"
    finally:
        await upstream.aclose()
        await record(CallOutcome.CANCELLED, "client went away before the end of the stream")


async def _openai_endpoint(request: HttpRequest, model: type[Any], path: str,
                          prompt_tokens: Callable[[Any], int]) -> HttpResponse:
    if request.method != "POST":
        return _error(OpenAIError(405, "use POST", None))
    try:
        body = parse(model, request.body)
        return await _relay(path, request, body, json.loads(request.body), prompt_tokens(body))
    except OpenAIError as exc:
        return _error(exc)


@csrf_exempt
async def chat_completions(request: HttpRequest) -> HttpResponse:
    return await _openai_endpoint(request, ChatCompletionRequest, "/v1/chat/completions",
                                  lambda body: count_prompt_tokens(body.canonical_messages()))


@csrf_exempt
async def completions(request: HttpRequest) -> HttpResponse:
    return await _openai_endpoint(request, CompletionRequest, "/v1/completions",
                                  lambda body: count_text_tokens(body.prompt_text()))


async def models(request: HttpRequest) -> HttpResponse:
    try:
        await _caller(request)
    except OpenAIError as exc:
        return _error(exc)
    await _in_thread(directory.refresh)()
    return JsonResponse({"object": "list", "data": [
        {"id": model, "object": "model", "created": now_s(), "owned_by": "saga"}
        for model in directory.models()]})

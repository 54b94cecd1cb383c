"""The ASGI application ``saga serve`` runs: ``/v1/`` (the gateway) through a lean Django handler,
everything else through ``controlplane.asgi`` unchanged.

Why: one sync-only middleware (WhiteNoise) makes Django run the whole middleware chain, and so
every gateway call, in a thread of its own that is held for the call's full length, upstream wait
included. On ``/v1/`` only the middleware that acts on its responses is kept (security headers,
SSL redirect, APPEND_SLASH, X-Frame-Options), run inline on the event loop: it is pure request
and header work, no I/O. The rest does nothing there: static files are not under ``/v1/``, the
views are CSRF-exempt and authenticate with tenant API keys, never sessions, users or messages.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import markcoroutinefunction

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings.dev")

from django.conf import settings  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.core.handlers.exception import convert_exception_to_response  # noqa: E402
from django.http import HttpRequest, HttpResponseBase  # noqa: E402
from django.utils.module_loading import import_string  # noqa: E402

from controlplane.asgi import application as full_application  # noqa: E402  (sets Django up)

GATEWAY_PREFIX = "/v1/"
# Middleware of settings.MIDDLEWARE that acts on /v1/ responses and does no I/O; kept, in the
# settings' order, only when the settings list it.
INLINE_MIDDLEWARE = frozenset({
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
})

Handler = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


def _inline(middleware_path: str, get_response: Handler) -> Handler:
    """Run a MiddlewareMixin's process_request/process_response on the loop, no thread hop."""
    middleware = import_string(middleware_path)(get_response)
    process_request = getattr(middleware, "process_request", None)
    process_response = getattr(middleware, "process_response", None)

    async def call(request: HttpRequest) -> HttpResponseBase:
        response = process_request(request) if process_request is not None else None
        if response is None:
            response = await get_response(request)
        if process_response is not None:
            response = process_response(request, response)
        return response

    return markcoroutinefunction(call)  # type: ignore[no-any-return]


class GatewayHandler(ASGIHandler):
    """Django's ASGI handler with the inline middleware chain above (no view middleware)."""

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list[Any] = []
        self._template_response_middleware: list[Any] = []
        self._exception_middleware: list[Any] = []
        handler: Handler = convert_exception_to_response(self._get_response_async)
        for path in reversed([p for p in settings.MIDDLEWARE if p in INLINE_MIDDLEWARE]):
            handler = convert_exception_to_response(_inline(path, handler))
        self._middleware_chain = handler


gateway_application = GatewayHandler()


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"].startswith(GATEWAY_PREFIX):
        await gateway_application(scope, receive, send)
    else:
        await full_application(scope, receive, send)

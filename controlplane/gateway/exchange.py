"""One HTTP request/response on the gateway's raw ASGI path, and whether its client is still
there.

Why not Django's handler: the gateway must know exactly which bytes reached the client (a call
is recorded ``completed`` before its last byte is sent, and ``cancelled`` if the client goes
away first), and must see a client leave while it waits on a node. An ``Exchange`` reads the
body (with a size limit), sends responses, and watches ``receive()`` for ``http.disconnect``
from the moment the body is read; the request's task is cancelled when the client goes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from django.conf import settings
from django.http.request import split_domain_port, validate_host

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BodyTooLarge(Exception):
    """The request body is larger than the gateway accepts."""


class ClientGone(Exception):
    """The client disconnected before the request was read."""


class Exchange:
    def __init__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.headers: dict[str, str] = {}
        for name, value in scope.get("headers", ()):
            key = name.decode("latin1").lower()
            text = value.decode("latin1")
            self.headers[key] = f"{self.headers[key]},{text}" if key in self.headers else text
        self.started = False
        self.finished = False
        self.gone = asyncio.Event()

    # ------------------------------------------------------------------ request
    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def secure(self) -> bool:
        if self.scope.get("scheme") == "https":
            return True
        proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
        if proxy:
            name, expected = proxy
            header = name.removeprefix("HTTP_").replace("_", "-").lower()
            value = self.headers.get(header, "")
            return value.split(",")[0].strip() == expected
        return False

    def host_allowed(self) -> bool:
        """Django's ALLOWED_HOSTS rule, applied to the Host header."""
        host = self.headers.get("host", "")
        domain, _port = split_domain_port(host)
        allowed = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not allowed:
            allowed = [".localhost", "127.0.0.1", "[::1]"]
        return bool(domain) and validate_host(domain, allowed)

    async def read_body(self, limit: int) -> bytes:
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge
        parts: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    async def watch(self, task: asyncio.Task[Any]) -> None:
        """After the body: wait for the client to leave, then cancel ``task`` (unless done)."""
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.gone.set()
                if not task.done():
                    task.cancel()
                return

    # ------------------------------------------------------------------ response
    def _security_headers(self) -> list[tuple[bytes, bytes]]:
        """What Django's SecurityMiddleware and XFrameOptionsMiddleware add to a response."""
        headers: list[tuple[bytes, bytes]] = []
        frame = getattr(settings, "X_FRAME_OPTIONS", "DENY")
        if frame:
            headers.append((b"x-frame-options", frame.encode()))
        if getattr(settings, "SECURE_CONTENT_TYPE_NOSNIFF", True):
            headers.append((b"x-content-type-options", b"nosniff"))
        referrer = getattr(settings, "SECURE_REFERRER_POLICY", "same-origin")
        if referrer:
            value = referrer if isinstance(referrer, str) else ",".join(referrer)
            headers.append((b"referrer-policy", value.encode()))
        coop = getattr(settings, "SECURE_CROSS_ORIGIN_OPENER_POLICY", "same-origin")
        if coop:
            headers.append((b"cross-origin-opener-policy", coop.encode()))
        hsts = getattr(settings, "SECURE_HSTS_SECONDS", 0)
        if hsts and self.secure:
            value = f"max-age={hsts}"
            if getattr(settings, "SECURE_HSTS_INCLUDE_SUBDOMAINS", False):
                value += "; includeSubDomains"
            if getattr(settings, "SECURE_HSTS_PRELOAD", False):
                value += "; preload"
            headers.append((b"strict-transport-security", value.encode()))
        return headers

    async def start(self, status: int, content_type: str,
                    extra: Mapping[str, str] | None = None, length: int | None = None) -> None:
        headers = [(b"content-type", content_type.encode())]
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        for name, value in (extra or {}).items():
            headers.append((name.lower().encode("latin1"), value.encode("latin1")))
        headers += self._security_headers()
        self.started = True
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, chunk: bytes, *, more: bool) -> None:
        await self._send({"type": "http.response.body", "body": chunk, "more_body": more})
        if not more:
            self.finished = True

    async def respond(self, status: int, content: bytes, content_type: str = "application/json",
                      extra: Mapping[str, str] | None = None) -> None:
        await self.start(status, content_type, extra, len(content))
        await self.body(content, more=False)

    async def respond_json(self, status: int, payload: Any,
                           extra: Mapping[str, str] | None = None) -> None:
        await self.respond(status, json.dumps(payload).encode(), extra=extra)

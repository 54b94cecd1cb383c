"""A lean HTTP/1.1 client for the gateway's calls to node agents: keep-alive connections per
node, on asyncio protocols with httptools' C parser (the one uvicorn serves with).

Why not httpx: at hundreds of calls per second its request machinery (httpcore's pool, anyio
streams, header models) cost more CPU than everything else the gateway does for a call. This
client does only what the relay needs: POST a JSON body, read the status and headers, then the
body whole or chunk by chunk (SSE streams, with back-pressure: reading from the node pauses
while the relayed client is slower), and give the connection back for the next call when the
response was read to its end. A response left half-read closes its connection, so a node sees
its client leave.

Errors are ``NodeHTTPError`` (a broken connection, a malformed response) and its subclasses
``ConnectError`` and ``NodeTimeout``; all mean the node failed the call.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit
from weakref import WeakKeyDictionary

import httptools

IDLE_EXPIRY_S = 2.0
"""Idle connections are dropped after this long, well before the node's own keep-alive
timeout (``nodeagent.agent.cli.NODE_KEEP_ALIVE_S``): reusing one the node is closing fails."""
MAX_IDLE_PER_NODE = 128
HIGH_WATER = 256 * 1024
"""Buffered response bytes at which reading from the node pauses (back-pressure)."""


class NodeHTTPError(Exception):
    """The node could not be reached, or broke its response."""


class ConnectError(NodeHTTPError):
    """No connection to the node (refused, unreachable)."""


class NodeTimeout(NodeHTTPError):
    """The node did not connect, or did not send anything, within the timeout."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: a request at a time, its response parsed as it arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.error: Exception | None = None
        self.idle_since = 0.0
        self._begin_response()

    def _begin_response(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.answered = False
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(NodeHTTPError(f"malformed response from the node: {exc}"))
            return
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self._fail(NodeHTTPError("the node closed the connection"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(NodeHTTPError(f"the connection to the node was lost ({exc})" if exc else
                                 "the node closed the connection"))

    # ------------------------------------------------------------------ parser callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin1").lower()
        text = value.decode("latin1")
        self.headers[key] = f"{self.headers[key]},{text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # ------------------------------------------------------------------ waiting
    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self.error is None and not self.complete:
            self.error = error
        self.closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout_s: float) -> None:
        """Until the parser has more for us (or the connection failed)."""
        if self.error is not None:
            raise self.error
        waiter = self.waiter = self.loop.create_future()
        timer = self.loop.call_later(timeout_s, self._time_out, waiter, timeout_s)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None
        if self.error is not None and not (self.complete or self.chunks):
            raise self.error

    def _time_out(self, waiter: asyncio.Future[None], timeout_s: float) -> None:
        if not waiter.done():
            self._fail(NodeTimeout(f"the node sent nothing for {timeout_s:g} s"))
            self.close()

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()
        return data

    def reusable(self) -> bool:
        return (self.complete and not self.closed and self.error is None
                and self.parser.should_keep_alive())

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Response:
    """A node's answer: status and headers at once, the body as it arrives."""

    def __init__(self, client: NodeClient, key: tuple[str, int], conn: _Connection,
                 read_timeout_s: float) -> None:
        self._client = client
        self._key = key
        self._conn = conn
        self._read_timeout_s = read_timeout_s
        self.status_code = conn.status
        self.headers: Mapping[str, str] = conn.headers
        self._done = False

    async def read(self) -> bytes:
        """The whole body."""
        parts = [chunk async for chunk in self.iter_bytes()]
        return b"".join(parts)

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            if conn.chunks:
                yield conn.take()
                continue
            if conn.complete:
                return
            await conn.wait(self._read_timeout_s)

    async def iter_lines(self) -> AsyncIterator[str]:
        """The body's lines, without their line ends (``\\n`` or ``\\r\\n``)."""
        pending = ""
        async for chunk in self.iter_bytes():
            pending += chunk.decode("utf-8", errors="replace")
            if "\n" not in pending:
                continue
            *lines, pending = pending.split("\n")
            for line in lines:
                yield line[:-1] if line.endswith("\r") else line
        if pending:
            yield pending[:-1] if pending.endswith("\r") else pending

    async def aclose(self) -> None:
        """Give the connection back when the response was read to its end, else close it (the
        node sees the request go)."""
        if self._done:
            return
        self._done = True
        self._client._release(self._key, self._conn)


class NodeClient:
    """Keep-alive connections to node agents, for one event loop."""

    def __init__(self, connect_timeout_s: float, read_timeout_s: float) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def _connect(self, key: tuple[str, int]) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _transport, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(loop), key[0], key[1]),
                self.connect_timeout_s)
        except TimeoutError as exc:
            raise NodeTimeout(f"no connection to {key[0]}:{key[1]} within "
                              f"{self.connect_timeout_s:g} s") from exc
        except OSError as exc:
            raise ConnectError(f"cannot connect to {key[0]}:{key[1]}: {exc}") from exc
        return conn

    def _idle_connection(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_EXPIRY_S:
                return conn
            conn.close()
        return None

    def _release(self, key: tuple[str, int], conn: _Connection) -> None:
        if not conn.reusable():
            conn.close()
            return
        idle = self._idle.setdefault(key, [])
        if len(idle) >= MAX_IDLE_PER_NODE:
            conn.close()
            return
        conn._begin_response()
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        """Send the request; returns once the response's status and headers are in."""
        parts = urlsplit(url)
        key = (parts.hostname or "127.0.0.1", parts.port or 80)
        path = parts.path or "/"
        if parts.query:
            path += f"?{parts.query}"
        head = [f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                f"Content-Length: {len(body)}\r\n"]
        head += [f"{name}: {value}\r\n" for name, value in headers.items()]
        request = "".join(head).encode("latin1") + b"\r\n" + body
        conn = self._idle_connection(key)
        reused = conn is not None
        if conn is None:
            conn = await self._connect(key)
        try:
            return await self._exchange(key, conn, request)
        except NodeTimeout:
            raise
        except NodeHTTPError:
            if not reused or conn.answered:
                raise
        # A kept-alive connection the node closed just before our request reached it: nothing
        # was answered, so the node never saw the call; send it once more on a new connection.
        conn = await self._connect(key)
        return await self._exchange(key, conn, request)

    async def _exchange(self, key: tuple[str, int], conn: _Connection,
                        request: bytes) -> Response:
        assert conn.transport is not None
        try:
            conn.transport.write(request)
            while not conn.headers_done:
                await conn.wait(self.read_timeout_s)
        except BaseException:
            conn.close()
            raise
        return Response(self, key, conn, self.read_timeout_s)

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


_clients: WeakKeyDictionary[asyncio.AbstractEventLoop, NodeClient] = WeakKeyDictionary()


def client() -> NodeClient:
    """This event loop's client (its connections belong to the loop)."""
    from django.conf import settings

    loop = asyncio.get_running_loop()
    existing = _clients.get(loop)
    if existing is None:
        existing = _clients[loop] = NodeClient(
            3.0, float(settings.GATEWAY_UPSTREAM_READ_TIMEOUT_S))
    return existing


def close_client() -> None:
    with contextlib.suppress(RuntimeError):
        existing = _clients.pop(asyncio.get_running_loop(), None)
        if existing is not None:
            existing.close()


__all__ = ["ConnectError", "NodeClient", "NodeHTTPError", "NodeTimeout", "Response", "client",
           "close_client"]

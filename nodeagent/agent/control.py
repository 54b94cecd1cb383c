"""The node agent's control connection to the control plane.

One websocket (``/ws/node/``, bearer token) carries registration, heartbeats with load, the
active policies on (re)connect (``policy.sync``), live activations (``policy``) and this node's
acknowledgements (``policy.ack``). The connection is re-established with exponential backoff and
jitter; each new session re-syncs the policies, and ``synced`` is clear until that sync has been
applied, so the HTTP server admits no new request under policies the cluster has moved past.
A token the control plane refuses is fatal: a revoked node must stop, not retry forever.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

from nodeagent.agent.engine import Engine
from plugins.base import PolicyConfigError
from plugins.views import TenantView

log = logging.getLogger("saga.node.control")


class ControlPlaneRefused(Exception):
    """The control plane refused this node's token (unknown or revoked)."""


def websocket_url(control_plane: str) -> str:
    """``http(s)://host:port`` or ``ws(s)://host:port`` -> the node socket's ``ws(s)`` URL."""
    parts = urlsplit(control_plane)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(
            f"--control-plane must be an http(s):// or ws(s):// URL, got {control_plane!r}"
        )
    return urlunsplit((scheme, parts.netloc, "/ws/node/", "", ""))


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: initial * 2^attempt, capped, with +-jitter so nodes don't stampede."""

    initial_s: float = 0.5
    max_s: float = 30.0
    jitter: float = 0.2

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.max_s, self.initial_s * (2 ** min(attempt, 16)))
        return base * (1 + rng.uniform(-self.jitter, self.jitter))


class ControlChannel:
    def __init__(self, control_plane: str, token: str, engine: Engine,
                 backoff: Backoff | None = None, seed: int | None = None,
                 address: str = "") -> None:
        self.url = websocket_url(control_plane)
        self.address = address
        self.token = token
        self.engine = engine
        self.backoff = backoff or Backoff()
        self.synced = asyncio.Event()
        self.connected = asyncio.Event()
        self.sessions = 0
        self.applied: dict[str, int] = {}  # kind -> activation id running on this node
        self._rng = random.Random(seed)
        self._heartbeat_s = 5.0

    async def run_forever(self) -> None:
        """Keep a session up until cancelled; raises ControlPlaneRefused on a refused token."""
        attempt = 0
        while True:
            try:
                async with connect(
                    self.url, additional_headers={"Authorization": f"Bearer {self.token}"},
                    open_timeout=10, ping_interval=20, max_size=2**22,
                ) as ws:
                    attempt = 0
                    await self._session(ws)
            except InvalidStatus as exc:
                if exc.response.status_code in (401, 403):
                    raise ControlPlaneRefused(
                        f"control plane at {self.url} refused this node's token "
                        f"(HTTP {exc.response.status_code}): is it revoked or mistyped?"
                    ) from exc
                log.warning("control plane answered HTTP %s", exc.response.status_code)
            except InvalidURI as exc:
                raise ValueError(str(exc)) from exc
            except (OSError, ConnectionClosed, TimeoutError) as exc:
                log.warning("control connection lost: %s", exc or type(exc).__name__)
            finally:
                self.connected.clear()
            delay = self.backoff.delay(attempt, self._rng)
            attempt += 1
            log.info("reconnecting to %s in %.1fs", self.url, delay)
            await asyncio.sleep(delay)

    async def _session(self, ws: ClientConnection) -> None:
        self.synced.clear()
        self.sessions += 1
        info = self.engine.info
        await ws.send(json.dumps({
            "type": "register", "engine": info.engine, "model": info.model,
            "gpu_model": info.gpu_model, "gpu_count": info.gpu_count,
            "kv_capacity_tokens": info.kv_capacity_tokens, "address": self.address,
        }))
        self.connected.set()
        heartbeat = asyncio.create_task(self._heartbeats(ws))
        try:
            async for raw in ws:
                await self._handle(ws, json.loads(raw))
        finally:
            heartbeat.cancel()

    async def _handle(self, ws: ClientConnection, frame: Mapping[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "registered":
            self._heartbeat_s = float(frame.get("heartbeat_interval_s", self._heartbeat_s))
            self.engine.set_tenants([TenantView(**t) for t in frame.get("tenants", [])])
            self._load_graphs(frame.get("execution_graphs", []))
        elif kind == "policy.sync":
            for policy in frame.get("policies", []):
                await self._apply(ws, policy)
            self.synced.set()
        elif kind == "policy":
            await self._apply(ws, frame["policy"])
        elif kind == "tenants":
            self.engine.set_tenants([TenantView(**t) for t in frame.get("tenants", [])])
        elif kind == "execution_graphs":
            self._load_graphs(frame.get("graphs", []))
        elif kind == "error":
            log.error("control plane rejected a frame: %s: %s", frame.get("field"),
                      frame.get("message"))

    def _load_graphs(self, graphs: list[Mapping[str, Any]]) -> None:
        """Install the cluster's learned execution graphs; a malformed one is logged, not fatal
        (the node keeps learning that template online)."""
        for graph in graphs:
            try:
                self.engine.load_execution_graphs([graph])
            except ValueError as exc:
                log.error("execution graph %r refused: %s", graph.get("template"), exc)

    async def _apply(self, ws: ClientConnection, policy: Mapping[str, Any]) -> None:
        """Apply one activation and acknowledge it; an invalid one leaves the old policy."""
        ack: dict[str, Any] = {"type": "policy.ack", "activation_id": policy["activation_id"],
                               "kind": policy["kind"], "applied": True, "error": ""}
        try:
            self.engine.apply_policy(policy["kind"], policy["name"], policy.get("params") or {})
        except PolicyConfigError as exc:
            ack.update(applied=False, error=str(exc))
            log.error("policy %s:%s refused, keeping the previous one: %s",
                      policy["kind"], policy["name"], exc)
        else:
            self.applied[policy["kind"]] = int(policy["activation_id"])
            log.info("policy %s:%s applied (activation %s)", policy["kind"], policy["name"],
                     policy["activation_id"])
        await ws.send(json.dumps(ack))

    async def _heartbeats(self, ws: ClientConnection) -> None:
        while True:
            await ws.send(json.dumps(self.engine.load().as_message()))
            for kind, error in self.engine.drain_policy_failures():
                activation = self.applied.get(kind)
                if activation is not None:
                    await ws.send(json.dumps({
                        "type": "policy.ack", "activation_id": activation, "kind": kind,
                        "applied": False, "error": f"failed at run time, fell back: {error}",
                    }))
            await asyncio.sleep(self._heartbeat_s)

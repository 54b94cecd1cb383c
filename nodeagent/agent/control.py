"""The node agent's control connection to the control plane.

One websocket (``/ws/node/``, bearer token) carries registration, heartbeats with load, the
active policies on (re)connect (``policy.sync``), live activations (``policy``) and this node's
acknowledgements (``policy.ack``). The connection is re-established with exponential backoff and
jitter; each new session re-syncs the policies, and ``synced`` is clear until that sync has been
applied, so the HTTP server admits no new request under policies the cluster has moved past.
A token the control plane refuses is fatal: a revoked node must stop, not retry forever. So is
being replaced by a newer agent connected with the same token (close code 4409): two agents
must not take turns at one node's identity.

Reconnecting is prompt whatever the outage length: delays grow from ``initial_s`` but are capped
at ``max_s`` (3 s), so a node is back within about 4 s of the control plane answering again,
and they start over from ``initial_s`` whenever the control plane answered at all (an HTTP
error during start-up means it is about to be ready).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from nodeagent import wire
from nodeagent.agent.engine import Engine
from plugins.base import PolicyConfigError
from plugins.views import TenantView

log = logging.getLogger("saga.node.control")


CLOSE_REVOKED = 4401
CLOSE_REPLACED = 4409


class ControlPlaneRefused(Exception):
    """The control plane refused this node's token (unknown, revoked or rotated), or another
    agent took this node over."""


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
    max_s: float = 3.0
    jitter: float = 0.2

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.max_s, self.initial_s * (2 ** min(attempt, 16)))
        return base * (1 + rng.uniform(-self.jitter, self.jitter))


class ControlPlaneLink:
    """The node agent's link to the control plane over its websocket: registration, heartbeats,
    policy sync and acknowledgements, workflow boundaries, reconnection with backoff (not to be
    confused with ``nodeagent.vllm_hooks.control.SchedulerControl``, the commands a vLLM engine
    core's scheduler takes)."""

    def __init__(self, control_plane: str, token: str, engine: Engine,
                 backoff: Backoff | None = None, seed: int | None = None,
                 address: str = "",
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 connector: Callable[..., Any] = connect) -> None:
        self.url = websocket_url(control_plane)
        self.address = address
        self.token = token
        self.engine = engine
        self.backoff = backoff or Backoff()
        self.synced = asyncio.Event()
        self.connected = asyncio.Event()
        self.sessions = 0
        self.applied: dict[str, int] = {}  # kind -> activation id running on this node
        self.boundaries_received = 0
        self._rng = random.Random(seed)
        self._heartbeat_s = 5.0
        self._sleep = sleep
        self._connect = connector
        self._enabled = asyncio.Event()
        self._enabled.set()
        self._ws: ClientConnection | None = None

    async def suspend(self, reason: str) -> None:
        """Leave the control plane until :meth:`resume` (the engine is being restarted): the
        connection closes, so the control plane marks this node down and routes elsewhere."""
        self._enabled.clear()
        self.synced.clear()
        ws = self._ws
        if ws is not None:
            await ws.close(code=1001, reason=reason[:120])

    def resume(self) -> None:
        """Connect again: the new session registers the (new) engine and re-syncs policies."""
        self._enabled.set()

    async def run_forever(self) -> None:
        """Keep a session up until cancelled; raises ControlPlaneRefused on a refused token."""
        attempt = 0
        while True:
            await self._enabled.wait()
            try:
                async with self._connect(
                    self.url, additional_headers={"Authorization": f"Bearer {self.token}"},
                    open_timeout=10, ping_interval=20, max_size=2**22,
                ) as ws:
                    attempt = 0
                    self._ws = ws
                    if self._enabled.is_set():
                        await self._session(ws)
            except InvalidStatus as exc:
                if exc.response.status_code in (401, 403):
                    raise ControlPlaneRefused(
                        f"control plane at {self.url} refused this node's token "
                        f"(HTTP {exc.response.status_code}): is it revoked or mistyped?"
                    ) from exc
                log.warning("control plane answered HTTP %s", exc.response.status_code)
                attempt = 0  # it answers: it will be ready soon
            except InvalidURI as exc:
                raise ValueError(str(exc)) from exc
            except InvalidHandshake as exc:  # e.g. the control plane stopping mid-handshake
                log.warning("control plane handshake failed: %s", exc)
            except ConnectionClosed as exc:
                self._raise_if_fatal(exc)
                log.warning("control connection lost: %s", exc)
            except (OSError, TimeoutError) as exc:
                log.warning("control connection lost: %s", exc or type(exc).__name__)
            finally:
                self._ws = None
                self.connected.clear()
            if not self._enabled.is_set():
                continue  # suspended: wait for resume(), then connect at once
            delay = self.backoff.delay(attempt, self._rng)
            attempt += 1
            log.info("reconnecting to %s in %.1fs", self.url, delay)
            await self._sleep(delay)

    def _raise_if_fatal(self, exc: ConnectionClosed) -> None:
        code = exc.rcvd.code if exc.rcvd is not None else None
        reason = exc.rcvd.reason if exc.rcvd is not None else ""
        if code == CLOSE_REVOKED:
            raise ControlPlaneRefused(
                f"control plane closed this node's connection: {reason or 'token revoked'}; "
                "start the agent with the node's current token") from exc
        if code == CLOSE_REPLACED:
            raise ControlPlaneRefused(
                f"control plane closed this node's connection: {reason or 'replaced'}; another "
                "agent is running with this node's token") from exc

    async def _session(self, ws: ClientConnection) -> None:
        self.synced.clear()
        self.sessions += 1
        info = self.engine.info
        await ws.send(json.dumps(wire.Register(
            engine=info.engine, model=info.model, gpu_model=info.gpu_model,  # type: ignore[arg-type]
            gpu_count=info.gpu_count, kv_capacity_tokens=info.kv_capacity_tokens,
            max_num_seqs=info.max_num_seqs, profile=info.profile,
            address=self.address).frame()))
        self.connected.set()
        heartbeat = asyncio.create_task(self._heartbeats(ws))
        try:
            async for raw in ws:
                await self._handle(ws, json.loads(raw))
        finally:
            heartbeat.cancel()

    async def _handle(self, ws: ClientConnection, raw: Mapping[str, Any]) -> None:
        try:
            frame = wire.plane_frames.validate_python(raw)
        except ValidationError as exc:
            log.error("control plane sent a frame this agent cannot read: %s", exc)
            return
        if isinstance(frame, wire.Registered):
            self._heartbeat_s = frame.heartbeat_interval_s
            self.engine.set_tenants([_tenant(t) for t in frame.tenants])
            self._load_graphs(frame.execution_graphs)
        elif isinstance(frame, wire.PolicySync):
            for policy in frame.policies:
                await self._apply(ws, policy)
            self.synced.set()
        elif isinstance(frame, wire.PolicyPush):
            await self._apply(ws, frame.policy)
        elif isinstance(frame, wire.Tenants):
            self.engine.set_tenants([_tenant(t) for t in frame.tenants])
        elif isinstance(frame, wire.ExecutionGraphs):
            self._load_graphs(frame.graphs)
        elif isinstance(frame, wire.WorkflowBoundary):
            self._boundary(frame)
        elif isinstance(frame, wire.Closing):
            log.error("control plane is closing this connection (%s): %s", frame.code,
                      frame.reason)
        elif isinstance(frame, wire.Error):
            log.error("control plane rejected a frame: %s: %s", frame.field, frame.message)

    def _boundary(self, frame: wire.WorkflowBoundary) -> None:
        """A tool or workflow boundary the control plane recorded: the engine applies it."""
        self.boundaries_received += 1
        if frame.event == "tool_start":
            self.engine.tool_started(frame.workflow_id, frame.tool_name or "tool")
        elif frame.event == "tool_end":
            self.engine.tool_ended(frame.workflow_id)
        else:
            self.engine.workflow_ended(frame.workflow_id)

    def _load_graphs(self, graphs: list[Mapping[str, Any]]) -> None:
        """Install the cluster's learned execution graphs; a malformed one is logged, not fatal
        (the node keeps learning that template online)."""
        for graph in graphs:
            try:
                self.engine.load_execution_graphs([graph])
            except ValueError as exc:
                log.error("execution graph %r refused: %s", graph.get("template"), exc)

    async def _apply(self, ws: ClientConnection, policy: wire.PolicyWire) -> None:
        """Apply one activation and acknowledge it; an invalid one leaves the old policy."""
        applied, error = True, ""
        try:
            self.engine.apply_policy(policy.kind, policy.name, policy.params)
        except PolicyConfigError as exc:
            applied, error = False, str(exc)
            log.error("policy %s:%s refused, keeping the previous one: %s",
                      policy.kind, policy.name, exc)
        else:
            self.applied[policy.kind] = policy.activation_id
            log.info("policy %s:%s applied (activation %s)", policy.kind, policy.name,
                     policy.activation_id)
        await ws.send(json.dumps(wire.PolicyAck(
            activation_id=policy.activation_id, kind=policy.kind, applied=applied,
            error=error[:2000]).frame()))

    async def _heartbeats(self, ws: ClientConnection) -> None:
        while True:
            await ws.send(json.dumps(self.engine.load().heartbeat().frame()))
            for failure in self.engine.drain_policy_failures():
                activation = self.applied.get(failure.kind)
                if activation is not None:
                    fell_back = (f"fell back to {failure.replaced_by}" if failure.replaced_by
                                 else "fell back")
                    await ws.send(json.dumps(wire.PolicyAck(
                        activation_id=activation, kind=failure.kind, applied=False,
                        error=f"failed at run time, {fell_back}: {failure.error}"[:2000],
                        run_time=True, hook=failure.hook[:64],
                        replaced_by=failure.replaced_by[:100]).frame()))
            await asyncio.sleep(self._heartbeat_s)


def _tenant(t: wire.TenantWire) -> TenantView:
    return TenantView(name=t.name, weight=t.weight, slo_slowdown=t.slo_slowdown,
                      slo_percentile=t.slo_percentile)

"""Keep a node's engine alive: notice when it dies, restart it a bounded number of times.

A vLLM engine runs its engine core in a child process; if that process dies (killed, out of
memory, a CUDA fault) every request in flight fails and the engine never serves again. The
node agent must not keep advertising a dead engine. :class:`SupervisedEngine` is the Engine
protocol over a replaceable engine:

* a watch task polls ``engine.failure()``; when it reports a reason the node becomes
  *unavailable*: new requests get a retryable 503, ``/health`` says ``restarting``, and the
  control connection is closed (``on_down``), so the control plane marks the node down and
  routes elsewhere (the calls that were in flight got their error from the engine);
* the dead engine is closed and a new one built (in a thread: a vLLM start takes a minute, and
  the event loop keeps answering meanwhile), up to ``max_restarts`` attempts with growing
  pauses; when one starts the node is available again and reconnects (``on_up``): it
  registers anew (capacity, limits) and the control plane's policy sync reaches the new engine;
* when every attempt failed, :meth:`watch` raises :class:`EngineRestartsExhausted`, whose one
  line ``saga node`` prints before it exits with status 1.

Engines without a ``failure()`` (the simulated one) are never restarted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from nodeagent.agent.engine import (
    Chunk,
    Engine,
    EngineInfo,
    EngineUnavailable,
    GenerationRequest,
    LoadReport,
    PolicyFailureReport,
)
from nodeagent.agent.engine_startup import one_line
from plugins.views import TenantView

log = logging.getLogger("saga.node.supervisor")

DEFAULT_MAX_RESTARTS = 3
POLL_S = 0.5
BACKOFF_S = (0.0, 2.0, 5.0, 10.0)
"""Pause before each restart attempt (the last repeats)."""


class EngineRestartsExhausted(Exception):
    """The engine died and could not be started again."""


Hook = Callable[[], Awaitable[None] | None]


async def _call(hook: Hook | None) -> None:
    if hook is not None:
        result = hook()
        if asyncio.iscoroutine(result):
            await result


class SupervisedEngine:
    """The Engine protocol over ``engine``, replaced by ``factory()`` when it dies."""

    def __init__(self, engine: Engine, factory: Callable[[], Engine], *,
                 max_restarts: int = DEFAULT_MAX_RESTARTS, poll_s: float = POLL_S,
                 backoff_s: Sequence[float] = BACKOFF_S) -> None:
        if max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {max_restarts}")
        self.engine = engine
        self.factory = factory
        self.max_restarts = max_restarts
        self.poll_s = poll_s
        self.backoff_s = tuple(backoff_s) or (0.0,)
        self.on_down: Hook | None = None
        self.on_up: Hook | None = None
        self.restarts = 0
        self._down: str | None = None

    # ------------------------------------------------------------------ supervision
    def unavailable(self) -> str | None:
        """Why the node cannot serve now (its engine died and is being restarted), else None."""
        return self._down

    async def watch(self) -> None:
        """Run until cancelled; raises EngineRestartsExhausted when the engine stays dead."""
        while True:
            await asyncio.sleep(self.poll_s)
            failure = getattr(self.engine, "failure", None)
            reason = failure() if callable(failure) else None
            if reason:
                await self._restart(reason)

    async def _restart(self, reason: str) -> None:
        self._down = reason
        log.error("%s: the node is unavailable while the engine restarts", reason)
        await _call(self.on_down)
        try:
            await self.engine.close()
        except Exception as exc:  # a dead engine may fail to close cleanly
            log.warning("closing the dead engine: %s", one_line(exc))
        last = ""
        for attempt in range(self.max_restarts):
            pause = self.backoff_s[min(attempt, len(self.backoff_s) - 1)]
            if pause:
                await asyncio.sleep(pause)
            log.warning("restarting the engine (attempt %d of %d)", attempt + 1,
                        self.max_restarts)
            try:
                engine = await asyncio.to_thread(self.factory)
            except Exception as exc:
                last = one_line(exc)
                log.error("engine restart %d of %d failed: %s", attempt + 1, self.max_restarts,
                          last)
                continue
            self.engine = engine
            self.restarts += 1
            self._down = None
            log.warning("engine restarted (attempt %d); the node is available again",
                        attempt + 1)
            await _call(self.on_up)
            return
        attempts = (f"{self.max_restarts} restart{'s' if self.max_restarts != 1 else ''} failed"
                    if self.max_restarts else "restarts are off (--engine-restarts 0)")
        raise EngineRestartsExhausted(
            f"{reason} and {attempts}" + (f"; last: {last}" if last else ""))

    # ------------------------------------------------------------------ Engine protocol
    @property
    def info(self) -> EngineInfo:
        return self.engine.info

    def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        if self._down:
            raise EngineUnavailable(f"node engine unavailable: {self._down}")
        return self.engine.generate(request)

    def load(self) -> LoadReport:
        return self.engine.load()

    def tool_started(self, workflow_id: str, tool_name: str) -> None:
        self.engine.tool_started(workflow_id, tool_name)

    def tool_ended(self, workflow_id: str) -> None:
        self.engine.tool_ended(workflow_id)

    def workflow_ended(self, workflow_id: str) -> None:
        self.engine.workflow_ended(workflow_id)

    def apply_policy(self, kind: str, name: str, params: Mapping[str, Any]) -> None:
        self.engine.apply_policy(kind, name, params)

    def drain_policy_failures(self) -> list[PolicyFailureReport]:
        return self.engine.drain_policy_failures()

    def active_policies(self) -> dict[str, str]:
        return self.engine.active_policies()

    def set_tenants(self, tenants: Sequence[TenantView]) -> None:
        self.engine.set_tenants(tenants)

    def load_execution_graphs(self, graphs: Sequence[Mapping[str, Any]]) -> None:
        self.engine.load_execution_graphs(graphs)

    def counters(self) -> dict[str, float]:
        return {**self.engine.counters(), "engine_restarts": float(self.restarts)}

    def describe(self) -> dict[str, Any]:
        describe = getattr(self.engine, "describe", None)
        return describe() if callable(describe) else {}

    async def close(self) -> None:
        await self.engine.close()

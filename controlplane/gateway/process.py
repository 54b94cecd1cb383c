"""This gateway process: its identity, the calls it holds, and its housekeeping loop.

Every call the process records as pending carries the process's id; the process proves it is
alive with a lease in the routing state and renews its calls' in-flight leases, every
``RENEW_S``, from a background task on its event loop. The same loop retries outcomes it could
not record while PostgreSQL was down (the outbox) and reconciles the calls of processes that
died. On a clean shutdown the process closes the calls it still holds as ``interrupted``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from controlplane.gateway import ledger
from controlplane.gateway.calls import Outcome, Ticket, finish_call
from controlplane.gateway.directory import ClusterDirectory
from controlplane.gateway.reconcile import reconcile
from controlplane.gateway.routing_state import LEASE_TTL_S, RENEW_S, AsyncRoutingState, RoutingState
from controlplane.stores import StoreUnavailable, in_db_thread
from controlplane.workflows.models import CallOutcome

log = logging.getLogger("saga.gateway.process")

RECONCILE_EVERY = 3
"""Housekeeping ticks between two reconciliation rounds (about 6 s)."""


class GatewayProcess:
    def __init__(self, state: Callable[[], RoutingState], directory: ClusterDirectory) -> None:
        self.id = f"{socket.gethostname()[:32]}-{os.getpid()}-{secrets.token_hex(4)}"
        self._state = state
        self._directory = directory
        self._held: dict[int, Ticket] = {}
        self._outbox: list[tuple[Ticket, Outcome]] = []
        self._lock = threading.Lock()
        self._alive_until = 0.0
        self._beat_at = -1e9
        self._ticks = 0
        self._beats = 0
        self._task: asyncio.Task[None] | None = None
        self._task_loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ calls
    def ensure_alive(self) -> None:
        """Renew this process's liveness lease if it is due (sync; before recording a call, so
        no reconciler can take a call of ours for a dead process's)."""
        now = time.monotonic()
        if now >= self._alive_until:
            self._heartbeat(self._state())

    def _heartbeat(self, state: RoutingState) -> None:
        renewed = state.heartbeat(self.id)
        if not renewed and self._beats:
            # Our lease was gone: Redis restarted (or was unreachable past the TTL) and the
            # in-flight leases went with it; put back those of the calls we still hold.
            held = self.held()
            for ticket in held:
                state.acquire(*ticket.lease, ticket.prompt_tokens)
            if held:
                log.warning("routing state was lost; re-acquired %d in-flight leases", len(held))
        self._beats += 1
        self._beat_at = time.monotonic()
        self._alive_until = self._beat_at + RENEW_S

    async def stay_alive(self) -> None:
        """The hot path's ``ensure_alive``: housekeeping renews the liveness lease every
        ``RENEW_S``, so a call hops to a store thread to renew it only when housekeeping has
        fallen behind far enough that the lease could lapse while the call is admitted."""
        if time.monotonic() - self._beat_at > LEASE_TTL_S - RENEW_S:
            await in_db_thread(self.ensure_alive)()

    def hold(self, ticket: Ticket) -> None:
        with self._lock:
            self._held[ticket.call_pk] = ticket

    def drop(self, ticket: Ticket) -> None:
        with self._lock:
            self._held.pop(ticket.call_pk, None)
        ledger.forget(ticket)

    def held(self) -> list[Ticket]:
        with self._lock:
            return list(self._held.values())

    async def record(self, ticket: Ticket, outcome: Outcome, state: AsyncRoutingState,
                     fast: bool) -> bool:
        """Record the call's outcome from the event loop: through the ledger's group commit
        (``fast``: PostgreSQL, a workflow's call) or the ORM path in a store thread. True once it
        is durably recorded (or the call already had an outcome); False when PostgreSQL did not
        answer: the outcome waits in the outbox, and since the client will not get the answer
        (it goes out only after its record), a ``completed`` waits there as ``failed``; also False
        when the database refused the outcome itself and the call was recorded ``failed``
        instead (``_finish_orm``): its answer must not go out either."""
        delivered = True
        try:
            if fast:
                try:
                    recorded = await ledger.finish(ticket, outcome, state)
                except ledger.OrmFallback:
                    recorded, delivered = await self._finish_orm(ticket, outcome)
            else:
                recorded, delivered = await self._finish_orm(ticket, outcome)
        except StoreUnavailable as exc:
            if outcome.outcome == CallOutcome.COMPLETED:
                outcome = replace(outcome, outcome=CallOutcome.FAILED, error=(
                    f"the answer was not delivered: its record could not be written ({exc})"))
            log.warning("call %s: outcome %s not recorded yet (%s); will retry",
                        ticket.call_pk, outcome.outcome, exc)
            with self._lock:
                self._outbox.append((ticket, outcome))
            return False
        self.drop(ticket)
        if recorded and delivered:
            self._learn(ticket, outcome)
        return delivered

    async def _finish_orm(self, ticket: Ticket, outcome: Outcome) -> tuple[bool, bool]:
        """The ORM path, in a store thread: (recorded, the outcome as given). An outcome the
        database refuses (a node reported usage its constraints reject: negative or
        out-of-range tokens) must not leave the call pending for the life of this process (no
        reconciler closes a live process's calls) nor escape as a bare 500: the call is
        recorded ``failed`` without that usage, and a ``completed`` answer is then withheld."""
        try:
            return await in_db_thread(self._finish_now)(ticket, outcome), True
        except StoreUnavailable:
            raise
        except Exception as exc:
            log.exception("call %s: outcome %s could not be recorded; recording it failed",
                          ticket.call_pk, outcome.outcome)
            substitute = Outcome(CallOutcome.FAILED, first_token_at=outcome.first_token_at,
                                 error=(f"the call's outcome ({outcome.outcome}) could not be "
                                        f"recorded: {type(exc).__name__}: {exc}"))
            recorded = await in_db_thread(self._finish_now)(ticket, substitute)
            return recorded, outcome.outcome != CallOutcome.COMPLETED

    def _learn(self, ticket: Ticket, outcome: Outcome) -> None:
        """A completed call's output length teaches its template's expected output (the AEG
        the routing view's isolated-time estimates read)."""
        if outcome.outcome == CallOutcome.COMPLETED:
            self._directory.manager.aeg.learn_output(ticket.template, outcome.completion_tokens)

    def _finish_now(self, ticket: Ticket, outcome: Outcome) -> bool:
        return finish_call(ticket, outcome, self._state())

    def finish(self, ticket: Ticket, outcome: Outcome) -> bool:
        """Record the call's outcome (sync). While PostgreSQL is down the outcome waits in the
        outbox and is retried by housekeeping; the call's lease is released either way."""
        try:
            recorded = finish_call(ticket, outcome, self._state())
            if recorded:
                self._learn(ticket, outcome)
        except StoreUnavailable as exc:
            log.warning("call %s: outcome %s not recorded yet (%s); will retry",
                        ticket.call_pk, outcome.outcome, exc)
            with self._lock:
                self._outbox.append((ticket, outcome))
            return True
        self.drop(ticket)
        return recorded

    # ------------------------------------------------------------------ housekeeping
    def start(self) -> None:
        """Start the housekeeping loop on the running event loop (idempotent)."""
        loop = asyncio.get_running_loop()
        if self._task is not None and self._task_loop is loop and not self._task.done():
            return
        self._task_loop = loop
        self._task = loop.create_task(self._housekeeping(), name="saga-gateway-housekeeping")

    async def _housekeeping(self) -> None:
        while True:
            try:
                await in_db_thread(self.tick)()
            except Exception:  # a failed round (a store is down) is retried next tick
                log.exception("gateway housekeeping round failed")
            await asyncio.sleep(RENEW_S)

    def tick(self) -> None:
        state = self._state()
        self._ticks += 1
        self._heartbeat(state)
        state.renew(t.lease for t in self.held())
        self._flush_outbox()
        self._record_policy_failures()
        if self._ticks % RECONCILE_EVERY == 1:
            reconcile(state, own=self.id)

    def _record_policy_failures(self) -> None:
        from controlplane.policies.failures import record_events

        directory = self._directory
        failures = directory.take_failures()
        if failures:
            try:
                record_events("gateway", self.id, failures)
            except Exception:
                directory.put_back_failures(failures)
                raise

    def _flush_outbox(self) -> None:
        with self._lock:
            waiting, self._outbox = self._outbox, []
        for ticket, outcome in waiting:
            try:
                self.finish(ticket, outcome)
            except Exception:  # not an outage (finish keeps those): one bad entry, not all
                log.exception("call %s: outcome %s from the outbox could not be recorded; "
                              "dropped", ticket.call_pk, outcome.outcome)
                self.drop(ticket)

    def shutdown(self) -> int:
        """Close the calls this process still holds as interrupted and retire its lease."""
        self._flush_outbox()
        closed = 0
        for ticket in self.held():
            try:
                if finish_call(ticket, Outcome(CallOutcome.INTERRUPTED,
                                               error="gateway process shut down"), self._state()):
                    closed += 1
            except StoreUnavailable:
                pass  # reconciliation closes it once the lease expires
            self.drop(ticket)
        with contextlib.suppress(StoreUnavailable):
            self._state().retire(self.id)
        if self._task is not None:
            self._task.cancel()
        return closed

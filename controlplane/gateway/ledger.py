"""The gateway's call ledger on PostgreSQL, from the event loop: admit, route and record a
workflow's call (``begin``), then record how it ended (``finish``), with group commit.

What is written is what the ORM path (``controlplane.gateway.calls``) writes, on the same rows
and with the same rules (``services``' state machine via ``states.check_transition``, the
routing decision from ``calls._route`` through the policy layer, the finish's columns and the
workflow's accumulators from ``finish_changes``); ``tests/gateway/test_ledger.py`` runs both
paths on the same calls and compares every column. How it is written differs:

- **begin**: two statements, each its own transaction (autocommit, prepared), no row lock
  held across the routing decision. The first reads everything routing needs (the row, its
  template, its home node's name, its next call's ``seq``, the call's id from the sequence)
  while Redis answers the candidates' in-flight counts and the tenant's tokens this minute (one
  script); the policy layer routes; the second is one statement that moves the workflow (state,
  home; the tool's end) *only if it is still as read* and inserts the call, while Redis takes the
  call's lease. When a concurrent writer changed the workflow in between (another call of it, the
  reaper, work stealing) or took the same ``seq``, nothing is written and the call is admitted
  again from a fresh read (``ADMIT_ATTEMPTS``; then a retryable 503). The commit is asynchronous
  (``synchronous_commit off``): the pending record becomes durable with the next synchronous
  commit of this server's WAL, at the latest the call's own finish, before its answer's last byte
  reaches the client. A workflow's first call creates it through ``services.create_workflow``
  (quota, template) in a store thread, as before.
- **finish**: finishes that arrive while a batch is committing wait for the next batch, and a
  batch is one transaction (``synchronous_commit on``): lock its workflows, then each call's
  conditional UPDATE with its workflow's accumulators and tool start (one statement per call,
  a CTE), and one COMMIT, in two round trips whatever the batch's size. Nobody's answer is
  released before the commit that holds its record has returned.

Single calls (no workflow id: their workflow ends with the call, with its isolated time and SLO
evaluated by the ORM's ``transition_to``) and SQLite (the demo) take the ORM path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any
from weakref import WeakKeyDictionary

import psycopg
from django.utils import timezone

from controlplane import quotas
from controlplane.console.events import workflow_committed
from controlplane.gateway import pg, rows
from controlplane.gateway.calls import (
    Identity,
    Outcome,
    Ticket,
    _admit_workflow,
    _isolated_s,
    _route,
)
from controlplane.gateway.directory import ClusterDirectory, NodeEntry
from controlplane.gateway.keys import Caller
from controlplane.gateway.routing_state import AsyncRoutingState, InFlight
from controlplane.nodes.models import Node
from controlplane.stores import StoreUnavailable, in_db_thread
from controlplane.tenants.models import Tenant
from controlplane.workflows import boundaries
from controlplane.workflows.models import AgentTemplate, Call, CallOutcome, ToolCall, Workflow
from controlplane.workflows.states import TERMINAL_STATES, WorkflowState, check_transition
from nodeagent.openai_api import OpenAIError

log = logging.getLogger("saga.gateway.ledger")
WORKFLOW_HEADER = "X-Saga-Workflow"

MAX_BATCH = 256
"""Finishes in one group commit at most."""
BATCHES_IN_FLIGHT = 2
"""Group commits at a time: while one waits for its WAL flush the next one is being sent."""


# ---------------------------------------------------------------------- statements
@dataclass(frozen=True, slots=True)
class _Sql:
    read: str
    admit: str
    insert_call: rows.Insert


@cache
def _sql() -> _Sql:
    wf, call, tpl, node, tool = (rows.table(m) for m in (Workflow, Call, AgentTemplate, Node,
                                                         ToolCall))
    c = rows.column
    read = (
        f"SELECT {rows.select_list(Workflow, 'w')}, t.{c(AgentTemplate, 'name')}, "
        f"n.{c(Node, 'name')}, "
        f"(SELECT COALESCE(MAX(x.{c(Call, 'seq')}) + 1, 0) FROM {call} x "
        f"WHERE x.{c(Call, 'workflow_id')} = w.{c(Workflow, 'id')}), "
        f"nextval('{_sequence_of(Call)}') "
        f"FROM {wf} w JOIN {tpl} t ON t.{c(AgentTemplate, 'id')} = w.{c(Workflow, 'template_id')} "
        f"LEFT JOIN {node} n ON n.{c(Node, 'id')} = w.{c(Workflow, 'home_node_id')} "
        f"WHERE w.{c(Workflow, 'tenant_id')} = %s AND w.{c(Workflow, 'external_id')} = %s")
    home_type = rows.sql_type(Workflow, "home_node_id")
    insert_call = rows.insert(Call, ("id", "workflow_id", "seq", "prompt_tokens", "node_id",
                                     "queued_at", "started_at", "gateway"))
    # The workflow row is updated (its state, its home; or to itself) only if it is still as
    # read: that UPDATE takes the row's lock, so a concurrent writer (another call of the
    # workflow, the reaper, work stealing) either went first, and then nothing here happens and
    # the call is admitted again from a fresh read, or waits for this statement's commit.
    admit = (
        f"WITH w AS (UPDATE {wf} SET {rows.assignments(Workflow, _ADMIT_COLUMNS)} "
        f"WHERE {c(Workflow, 'id')} = %s AND {c(Workflow, 'state')} = %s "
        f"AND {c(Workflow, 'home_node_id')} IS NOT DISTINCT FROM %s::{home_type} "
        f"RETURNING {c(Workflow, 'id')} AS id), "
        f"t AS (UPDATE {tool} SET {c(ToolCall, 'ended_at')} = %s::timestamptz "
        f"WHERE %s::boolean AND EXISTS (SELECT 1 FROM w) AND {c(ToolCall, 'id')} = "
        f"(SELECT {c(ToolCall, 'id')} FROM {tool} WHERE {c(ToolCall, 'workflow_id')} = %s "
        f"AND {c(ToolCall, 'ended_at')} IS NULL ORDER BY {c(ToolCall, 'started_at')} DESC "
        f"LIMIT 1) RETURNING 1), "
        f"c AS (INSERT INTO {call} ({insert_call.sql_columns}) "
        f"SELECT {insert_call.placeholders} FROM w RETURNING 1) "
        f"SELECT count(*) FROM c")
    return _Sql(read, admit, insert_call)


_ADMIT_COLUMNS = ("state", "state_changed_at", "started_at", "home_node_id")
ADMIT_ATTEMPTS = 5
"""Admissions of one call that may find its workflow changed under them before one holds."""


def _sequence_of(model: type[Any]) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_serial_sequence(%s, %s)",
                       [model._meta.db_table, model._meta.pk.column])
        (name,) = cursor.fetchone()
    return str(name)


_ready = False


async def _prepared() -> _Sql:
    """The statements, built on first use in a store thread (reading the call id's sequence
    name is a query of the ORM's)."""
    global _ready
    if not _ready:
        await in_db_thread(_sql)()
        _ready = True
    return _sql()


# ---------------------------------------------------------------------- begin
class _Prefetched:
    """The in-flight counts Redis returned, as the RoutingState ``calls._route`` reads."""

    def __init__(self, inflight: dict[str, InFlight]) -> None:
        self._inflight = inflight

    def inflight(self, nodes: Sequence[str]) -> dict[str, InFlight]:
        return {n: self._inflight.get(n, InFlight()) for n in nodes}


_snapshots: dict[int, Workflow] = {}
"""Each call in flight's workflow as its admission read it: its finish computes the call's
isolated time and the workflow's accumulators from it (``finish_changes``) without reading the
row again. ``forget`` drops it when the call is done, whichever path recorded it."""


def forget(ticket: Ticket) -> None:
    _snapshots.pop(ticket.call_pk, None)


async def begin(caller: Caller, identity: Identity, model: str, prompt_tokens: int,
                directory: ClusterDirectory, state: AsyncRoutingState, gateway: str) -> Ticket:
    """Admit, route and record a workflow's call; raises OpenAIError (4xx/429/503) with nothing
    left pending, or StoreUnavailable when PostgreSQL or Redis does not answer."""
    assert identity.external_id is not None
    arrived = timezone.now()
    candidates = directory.nodes_for(model)
    if not candidates:
        if model not in directory.models():
            raise OpenAIError(404, f"model {model!r} is not served by any node that is up; "
                              f"served: {', '.join(directory.models()) or 'none'}", "model",
                              code="model_not_found")
        raise OpenAIError(503, "no node is up for this model", None, "server_error",
                          "no_nodes")
    sql = await _prepared()
    limit = caller.tokens_per_minute
    tokens_key = (quotas.tokens_key(caller.tenant_id, quotas.minute_window(time.time())[0])
                  if limit is not None else None)
    names = [n.name for n in candidates]
    read = asyncio.ensure_future(state.read(names, tokens_key))
    admitted = False
    try:
        async with pg.connection(pg.ADMIT) as conn:
            for _attempt in range(ADMIT_ATTEMPTS):
                row = await (await conn.execute(sql.read, (caller.tenant_id,
                                                           identity.external_id))).fetchone()
                if row is None:
                    if admitted:  # deleted right after its admission (its tenant was)
                        raise OpenAIError(409, f"workflow {identity.external_id!r} was removed "
                                          "while its call was admitted", WORKFLOW_HEADER,
                                          code="workflow_removed")
                    # A new workflow: admitted (quota, template) by services in a store thread.
                    await in_db_thread(_admit_workflow)(caller, identity)
                    admitted = True
                    continue
                routing = await read
                if limit is not None and routing.tokens_used >= limit:
                    raise await in_db_thread(quotas.tokens_refused)(caller.tenant_id, limit,
                                                                     time.time())
                ticket = await _admit(conn, sql, row, caller, identity, prompt_tokens,
                                      candidates, directory, state, gateway, arrived,
                                      routing.inflight)
                if ticket is not None:
                    return ticket
                read = asyncio.ensure_future(state.read(names, tokens_key))
            # Other calls of the workflow (or the reaper, work stealing) kept changing it: the
            # agent is sending many calls of one workflow at once. Nothing is pending; retry.
            busy = OpenAIError(503, f"workflow {identity.external_id!r} changed under each of "
                               f"{ADMIT_ATTEMPTS} admissions of this call (concurrent calls of "
                               "one workflow); retry the call", WORKFLOW_HEADER, "server_error",
                               "workflow_busy")
            busy.retry_after_s = 1  # type: ignore[attr-defined]
            raise busy
    finally:
        if not read.done():
            read.cancel()
        elif not read.cancelled():
            read.exception()  # retrieved, whether or not anyone awaited it


async def _admit(conn: psycopg.AsyncConnection[Any], sql: _Sql, row: tuple[Any, ...],
                 caller: Caller, identity: Identity, prompt_tokens: int,
                 candidates: list[NodeEntry], directory: ClusterDirectory,
                 state: AsyncRoutingState, gateway: str, arrived: datetime,
                 inflight: dict[str, InFlight]) -> Ticket | None:
    """Route the call and record it if the workflow is still as ``row`` says (None: it was not;
    read it again)."""
    workflow, seq, call_pk = _workflow_of(row, caller)
    if workflow.state in TERMINAL_STATES:
        raise OpenAIError(409, f"workflow {identity.external_id!r} is {workflow.state}; "
                          "use a new X-Saga-Workflow id", "X-Saga-Workflow",
                          code="workflow_finished")
    seen_state, seen_home = workflow.state, workflow.home_node_id
    if seen_state != WorkflowState.RUNNING:
        check_transition(workflow, seen_state, WorkflowState.RUNNING)
    node = _route(workflow, str(workflow.pk), seq, prompt_tokens, candidates, directory,
                  _Prefetched(inflight))
    lease = asyncio.ensure_future(state.acquire(node.name, str(call_pk), prompt_tokens))
    now = timezone.now()
    changed = seen_state != WorkflowState.RUNNING
    params = [WorkflowState.RUNNING, now if changed else workflow.state_changed_at,
              workflow.started_at or now, node.pk, workflow.pk, seen_state, seen_home,
              now, seen_state == WorkflowState.WAITING_TOOL, workflow.pk]
    params += sql.insert_call.params({
        "id": call_pk, "workflow_id": workflow.pk, "seq": seq, "prompt_tokens": prompt_tokens,
        "node_id": node.pk, "queued_at": arrived, "started_at": now, "gateway": gateway})
    try:
        (count,) = await (await conn.execute(sql.admit, params)).fetchone()  # type: ignore[misc]
    except psycopg.errors.UniqueViolation:
        count = 0  # another call of the workflow took this seq first
    except BaseException:
        await _drop_lease(lease, state, node.name, str(call_pk))
        raise
    if not count:
        await _drop_lease(lease, state, node.name, str(call_pk))
        return None
    ticket = Ticket(call_pk, workflow.pk, caller.tenant, caller.tenant_id,
                    workflow.template.name, node, False, prompt_tokens, queued_at=arrived)
    workflow.state = WorkflowState.RUNNING
    _snapshots[call_pk] = workflow
    workflow_committed(workflow.pk)
    if seen_state == WorkflowState.WAITING_TOOL:
        _background(boundaries.push(seen_home, workflow.pk, "tool_end"))
    try:
        await lease
    except StoreUnavailable as exc:
        await finish(ticket, Outcome(CallOutcome.FAILED, error=f"not dispatched: {exc}"),
                     state)
        raise
    return ticket


async def _drop_lease(lease: asyncio.Future[None], state: AsyncRoutingState, node: str,
                      call: str) -> None:
    """The call was not recorded: its lease must not count (or it expires by itself)."""
    with contextlib.suppress(Exception):
        await lease
        await state.release(node, call, None)


def _workflow_of(row: tuple[Any, ...], caller: Caller) -> tuple[Workflow, int, int]:
    """The workflow as routing reads it, with its tenant, template and home node loaded (only
    the fields routing reads: ids and names)."""
    n = len(rows.attnames(Workflow))
    workflow: Workflow = rows.from_row(Workflow, row[:n])
    template_name, home_name, seq, call_pk = row[n:]
    related: dict[str, Any] = {
        "tenant": rows.instance(Tenant, {"id": caller.tenant_id, "slug": caller.tenant}),
        "template": rows.instance(AgentTemplate, {"id": workflow.template_id,
                                                  "name": template_name}),
        "home_node": (rows.instance(Node, {"id": workflow.home_node_id, "name": home_name})
                      if workflow.home_node_id is not None else None)}
    workflow._state.fields_cache.update(related)
    return workflow, int(seq), int(call_pk)


# ---------------------------------------------------------------------- finish
WORKFLOW_ADDED = ("calls_wall_s", "service_s", "calls_isolated_s")
"""Workflow accumulators a finish adds to (``workflow_views``)."""
WORKFLOW_SET = ("context_tokens",)
"""Workflow columns a finish sets (None: left as they are)."""


@dataclass(slots=True)
class FinishChanges:
    """What recording a call's end writes: the call's columns, what it adds to its workflow's
    accumulators and the columns it sets there (None: unchanged), and the tool the call
    started (None: none; it starts only if the workflow is still running)."""

    call: dict[str, Any]
    workflow_add: dict[str, float]
    workflow_set: dict[str, Any]
    tool: str | None = None


def finish_changes(workflow: Workflow, ticket: Ticket, result: Outcome,
                   now: datetime) -> FinishChanges:
    """The ORM path's ``_record``/``_accumulate``/``_advance_workflow`` (tool starts), as data.

    ``workflow`` is updated in memory as the ORM path would leave it."""
    prompt = result.prompt_tokens if result.prompt_tokens is not None else ticket.prompt_tokens
    cached = min(result.cached_tokens, prompt)
    isolated = _isolated_s(ticket.node, workflow, prompt, cached, result)
    wall = max((now - ticket.queued_at).total_seconds(), 0.0) if ticket.queued_at else 0.0
    changes = FinishChanges(
        call={"outcome": result.outcome, "finish_reason": result.finish_reason[:32],
              "prompt_tokens": prompt, "cached_tokens": cached,
              "output_tokens": result.completion_tokens,
              "first_token_at": result.first_token_at, "finished_at": now,
              "error": result.error[:2000], "gateway": "", "service_s": result.service_s,
              "isolated_s": isolated},
        workflow_add={"calls_wall_s": wall, "service_s": result.service_s or 0.0,
                      "calls_isolated_s": isolated or 0.0},
        workflow_set={"context_tokens": (prompt + result.completion_tokens
                                         if isolated is not None else None)})
    workflow.calls_wall_s += wall
    workflow.service_s += result.service_s or 0.0
    if isolated is not None:
        workflow.calls_isolated_s += isolated
        workflow.context_tokens = prompt + result.completion_tokens
    if result.outcome == CallOutcome.COMPLETED and result.finish_reason == "tool_calls":
        check_transition(workflow, WorkflowState.RUNNING, WorkflowState.WAITING_TOOL)
        changes.tool = (",".join(sorted(set(result.tool_names))) or "tool")[:200]
    return changes


@cache
def _finish_sql(call_columns: tuple[str, ...]) -> tuple[str, rows.Insert]:
    """A batch of finishes as one statement (one transaction, one commit): the calls'
    conditional UPDATEs (``c``); for the workflows of the calls recorded, their accumulators and
    the first tool started, if the workflow is still running (``a``, ``w``); the ToolCalls
    (``t``). Returns, per finish in order: whether it was recorded, whether the call's row
    exists at all, the workflow's home node and whether a tool started."""
    wf, call, tc = rows.table(Workflow), rows.table(Call), rows.table(ToolCall)
    c = rows.column
    arrays = [("id", "bigint"), ("wf", "bigint"), ("ord", "integer"),
              ("keep_interrupted", "boolean"), ("tool", "text")]
    arrays += [(f"c_{name}", rows.sql_type(Call, name)) for name in call_columns]
    arrays += [(f"a_{name}", "double precision") for name in WORKFLOW_ADDED]
    arrays += [(f"s_{name}", rows.sql_type(Workflow, name)) for name in WORKFLOW_SET]
    unnest = ", ".join(f"%s::{kind}[]" for _name, kind in arrays)
    columns = ", ".join(name for name, _kind in arrays)
    call_sets = ", ".join(f"{c(Call, name)} = v.c_{name}" for name in call_columns)
    sums = ", ".join(f"sum(v.a_{name}) AS a_{name}" for name in WORKFLOW_ADDED)
    lasts = ", ".join(f"(array_agg(v.s_{name} ORDER BY v.ord DESC) FILTER "
                      f"(WHERE v.s_{name} IS NOT NULL))[1] AS s_{name}" for name in WORKFLOW_SET)
    adds = ", ".join(f"{c(Workflow, name)} = {c(Workflow, name)} + a.a_{name}"
                     for name in WORKFLOW_ADDED)
    sets = ", ".join(f"{c(Workflow, name)} = COALESCE(a.s_{name}, {wf}.{c(Workflow, name)})"
                     for name in WORKFLOW_SET)
    starts = f"a.tool IS NOT NULL AND {wf}.{c(Workflow, 'state')} = 'running'"
    after = (f"(SELECT x.{c(Call, 'id')} FROM {call} x WHERE x.{c(Call, 'workflow_id')} = w.id "
             f"ORDER BY x.{c(Call, 'seq')} DESC LIMIT 1)")
    tool_insert = rows.insert(ToolCall, (), {"workflow_id": "w.id", "after_call_id": after,
                                             "name": "w.tool", "started_at": "w.at"})
    outcome = c(Call, "outcome")
    return (
        f"WITH v AS (SELECT * FROM unnest({unnest}) AS v({columns})), "
        f"c AS (UPDATE {call} SET {call_sets} FROM v WHERE {call}.{c(Call, 'id')} = v.id AND "
        f"({call}.{outcome} = 'pending' OR ({call}.{outcome} = 'interrupted' AND NOT "
        f"v.keep_interrupted)) RETURNING {call}.{c(Call, 'id')} AS id), "
        f"a AS (SELECT v.wf, {sums}, {lasts}, (array_agg(v.tool ORDER BY v.ord) FILTER "
        f"(WHERE v.tool IS NOT NULL))[1] AS tool FROM v JOIN c ON c.id = v.id GROUP BY v.wf), "
        f"w AS (UPDATE {wf} SET {adds}, {sets}, "
        f"{c(Workflow, 'state')} = CASE WHEN {starts} THEN 'waiting_tool' "
        f"ELSE {wf}.{c(Workflow, 'state')} END, "
        f"{c(Workflow, 'state_changed_at')} = CASE WHEN {starts} THEN %s::timestamptz "
        f"ELSE {wf}.{c(Workflow, 'state_changed_at')} END "
        f"FROM a WHERE {wf}.{c(Workflow, 'id')} = a.wf RETURNING {wf}.{c(Workflow, 'id')} AS id, "
        f"{wf}.{c(Workflow, 'home_node_id')} AS home, a.tool AS tool, "
        f"{wf}.{c(Workflow, 'state_changed_at')} AS at, "
        f"(a.tool IS NOT NULL AND {wf}.{c(Workflow, 'state')} = 'waiting_tool' AND "
        f"{wf}.{c(Workflow, 'state_changed_at')} = %s::timestamptz) AS started), "
        f"t AS (INSERT INTO {tc} ({tool_insert.sql_columns}) SELECT {tool_insert.placeholders} "
        f"FROM w WHERE w.started RETURNING 1) "
        f"SELECT c.id IS NOT NULL, EXISTS (SELECT 1 FROM {call} x WHERE x.{c(Call, 'id')} = "
        f"v.id), w.home, COALESCE(w.started, false) FROM v LEFT JOIN c ON c.id = v.id "
        f"LEFT JOIN w ON w.id = v.wf ORDER BY v.ord"), tool_insert


class RecordMissing(StoreUnavailable):
    """The call's pending record is gone (PostgreSQL lost its asynchronously committed admission
    in a crash): nothing durable says the call happened, so its answer is not released."""


class OrmFallback(Exception):
    """The fast path failed on something other than the store being down (logged): the caller
    records the call through the ORM path instead (``calls.finish_call``)."""


@dataclass(slots=True)
class _Finish:
    ticket: Ticket
    result: Outcome
    done: asyncio.Future[bool]


class GroupCommit:
    """The finishes of one event loop, committed in batches (``MAX_BATCH``, at most
    ``BATCHES_IN_FLIGHT`` at once). A finish never waits for a timer: when a batch slot is free
    it starts at once, so an unloaded gateway commits each call as it ends, and under load the
    finishes that arrive during a commit share the next one."""

    def __init__(self) -> None:
        self._waiting: list[_Finish] = []
        self._in_flight = 0
        self.batches = 0
        self.finishes = 0

    def submit(self, ticket: Ticket, result: Outcome) -> asyncio.Future[bool]:
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Finish(ticket, result, done))
        self._start()
        return done

    def _start(self) -> None:
        while self._waiting and self._in_flight < BATCHES_IN_FLIGHT:
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            self._in_flight += 1
            asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[_Finish]) -> None:
        try:
            await self._commit(batch)
        finally:
            self._in_flight -= 1
            self._start()

    async def _commit(self, batch: list[_Finish]) -> None:
        self.batches += 1
        self.finishes += len(batch)
        try:
            outcomes = await _commit_batch(batch)
        except StoreUnavailable as exc:
            for item in batch:
                _settle(item.done, exc)
            return
        except Exception:
            if len(batch) == 1:
                log.exception("call %s: the fast path could not record its outcome; using the "
                              "ORM path", batch[0].ticket.call_pk)
                _settle(batch[0].done, OrmFallback())
                return
            # One bad finish must not fail the others: each alone, in its own transaction.
            for item in batch:
                await self._commit([item])
            return
        for item, (recorded, exists, home, started) in zip(batch, outcomes, strict=True):
            if not exists:
                _settle(item.done, RecordMissing(
                    f"call {item.ticket.call_pk} has no record (PostgreSQL lost it)"))
                continue
            _settle(item.done, bool(recorded))
            if recorded:
                workflow_committed(item.ticket.workflow_pk)
            if started:
                _background(boundaries.push(home, item.ticket.workflow_pk, "tool_start",
                                            _tool_of(batch, item.ticket.workflow_pk)))


def _tool_of(batch: list[_Finish], workflow_pk: int) -> str | None:
    for item in batch:
        if item.ticket.workflow_pk == workflow_pk and item.result.finish_reason == "tool_calls":
            return (",".join(sorted(set(item.result.tool_names))) or "tool")[:200]
    return None


def _settle(done: asyncio.Future[bool], value: bool | BaseException) -> None:
    if done.done():
        return
    if isinstance(value, BaseException):
        done.set_exception(value)
    else:
        done.set_result(value)


async def _commit_batch(batch: list[_Finish]) -> list[tuple[Any, ...]]:
    await _prepared()
    now = timezone.now()
    columns: dict[str, list[Any]] = {}
    call_columns: tuple[str, ...] = ()
    keys = ("id", "wf", "ord", "keep_interrupted", "tool")
    for key in keys:
        columns[key] = []
    for order, item in enumerate(batch):
        ticket = item.ticket
        workflow = _snapshots.get(ticket.call_pk) or _unknown_workflow(ticket)
        changes = finish_changes(workflow, ticket, item.result, now)
        call_columns = tuple(changes.call)
        for key, value in (("id", ticket.call_pk), ("wf", ticket.workflow_pk), ("ord", order),
                           ("keep_interrupted",
                            item.result.outcome == CallOutcome.INTERRUPTED),
                           ("tool", changes.tool)):
            columns[key].append(value)
        for name, value in changes.call.items():
            columns.setdefault(f"c_{name}", []).append(value)
        for name in WORKFLOW_ADDED:
            columns.setdefault(f"a_{name}", []).append(changes.workflow_add[name])
        for name in WORKFLOW_SET:
            columns.setdefault(f"s_{name}", []).append(changes.workflow_set[name])
    statement, tool_insert = _finish_sql(call_columns)
    params = [columns[key] for key in keys]
    params += [[rows.prep(field, value) for value in columns[f"c_{field.attname}"]]
               for field in _fields(Call, call_columns)]
    params += [columns[f"a_{name}"] for name in WORKFLOW_ADDED]
    params += [columns[f"s_{name}"] for name in WORKFLOW_SET]
    params += [now, now, *tool_insert.params({})]
    # Two batches in flight (or two gateway processes) may lock the same workflows in different
    # orders; PostgreSQL then aborts one of them, which wrote nothing: it is sent again.
    for attempt in range(DEADLOCK_RETRIES + 1):
        try:
            async with pg.connection(pg.COMMIT) as conn:
                cursor = await conn.execute(statement, params)
                return list(await cursor.fetchall())
        except psycopg.errors.DeadlockDetected:
            if attempt == DEADLOCK_RETRIES:
                raise
            log.info("group commit of %d finishes hit a deadlock; retrying", len(batch))
    raise AssertionError("unreachable")


DEADLOCK_RETRIES = 3
"""Times a group commit PostgreSQL aborted as a deadlock victim is sent again."""


@cache
def _fields(model: type[Any], names: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(rows.field_of(model, name) for name in names)


def _unknown_workflow(ticket: Ticket) -> Workflow:
    """A call whose admission this process did not read (an outbox retry after a restart of
    the loop): its isolated time is computed as for a workflow with no context yet."""
    return Workflow(pk=ticket.workflow_pk)


_commits: WeakKeyDictionary[asyncio.AbstractEventLoop, GroupCommit] = WeakKeyDictionary()


def group_commit() -> GroupCommit:
    loop = asyncio.get_running_loop()
    existing = _commits.get(loop)
    if existing is None:
        existing = _commits[loop] = GroupCommit()
    return existing


async def finish(ticket: Ticket, result: Outcome, state: AsyncRoutingState) -> bool:
    """Record how a workflow's call ended (durably: this returns after its commit), release its
    lease and charge its tokens. Returns False when it already had an outcome; raises
    StoreUnavailable when PostgreSQL did not answer (nothing was recorded)."""
    prompt = result.prompt_tokens if result.prompt_tokens is not None else ticket.prompt_tokens
    charge = (quotas.tokens_key(ticket.tenant_id, quotas.minute_window(time.time())[0]),
              prompt + result.completion_tokens)
    # The lease goes and the tokens are charged while the commit runs; a call that turns out
    # not to be recorded gets its tokens back.
    released = asyncio.ensure_future(state.release(*ticket.lease, charge))
    try:
        recorded = await group_commit().submit(ticket, result)
    except (OrmFallback, StoreUnavailable):
        await _refund(released, state, charge)
        raise
    if not recorded:
        await _refund(released, state, charge)
        return False
    forget(ticket)
    with contextlib.suppress(StoreUnavailable):
        await released  # a Redis outage only loses this call's charge (the lease expires)
    return True


async def _refund(released: asyncio.Future[bool], state: AsyncRoutingState,
                  charge: tuple[str, int]) -> None:
    with contextlib.suppress(StoreUnavailable):
        await released
        await state.refund(*charge)


_tasks: set[asyncio.Task[Any]] = set()


def _background(work: Any) -> None:
    """Run ``work`` without waiting for it (kept referenced until done; failures logged)."""
    task = asyncio.ensure_future(work)
    _tasks.add(task)
    task.add_done_callback(_finished)


def _finished(task: asyncio.Task[Any]) -> None:
    _tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("gateway background work failed: %r", task.exception())

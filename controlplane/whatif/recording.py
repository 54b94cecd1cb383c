"""The gateway's side of replay: each admitted call's prompt structure, recorded off the hot
path (after the call row exists; a failure is logged, never the call's).

Why batched: recording each call's structure on its own (an ORM ``create`` in a store thread)
cost the gateway a thread hop, the SQL compiler and one transaction per call, about a fifth of
its CPU at 300 calls/s (``saga bench-gateway`` under a profiler). The structures of one event
loop now go in batches, as the ledger's group commit does for outcomes: a structure that arrives
while a batch is being written waits for the next one, and each batch costs one statement
(asynchronous commit: no answer waits for it). SQLite (the demo) writes each batch with the
ORM's ``bulk_create``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import cache
from typing import Any
from weakref import WeakKeyDictionary

from controlplane.whatif.digests import BLOCK_TOKENS, block_chain, deployment_key

log = logging.getLogger("saga.whatif")

MAX_BATCH = 512
"""Structures in one statement at most."""
INLINE_TOKENS = 16_384
"""A batch whose prompts hold fewer tokens than this (by the gateway's count) has its digests
computed on the event loop (about 1 ms per 1,000 blocks: shorter than the thread hop); a larger
one in a thread, so a 100k-token prompt never stalls the loop."""


def stand_in_tokens(body: Any) -> list[str]:
    """The request's prompt as the stand-in tokens the nodes and the gateway count."""
    from nodeagent.agent.prompt_blocks import chat_tokens, text_tokens

    if hasattr(body, "canonical_messages"):
        return chat_tokens(body.canonical_messages())
    return text_tokens(body.prompt_text())


@dataclass(frozen=True, slots=True)
class Structure:
    call_id: int
    tokens: int
    digests: bytes


def structure_of(call_pk: int, body: Any) -> Structure:
    tokens = stand_in_tokens(body)
    return Structure(call_pk, len(tokens), block_chain(tokens, deployment_key()))


def record_prompt(call_pk: int, body: Any) -> None:
    """Record one call's structure now (synchronous; tests and tools that write calls)."""
    _write_orm([structure_of(call_pk, body)])


def _write_orm(structures: list[Structure]) -> None:
    from controlplane.whatif.models import PromptStructure

    PromptStructure.objects.bulk_create(
        [PromptStructure(call_id=s.call_id, block_tokens=BLOCK_TOKENS, tokens=s.tokens,
                         digests=s.digests) for s in structures], ignore_conflicts=True)


@cache
def _insert_sql() -> str:
    from controlplane.gateway import rows
    from controlplane.whatif.models import PromptStructure

    c = rows.column
    names = ("call_id", "block_tokens", "tokens", "digests")
    kinds = ("bigint", "smallint", "integer", "bytea")
    columns = ", ".join(c(PromptStructure, name) for name in names)
    unnest = ", ".join(f"%s::{kind}[]" for kind in kinds)
    return (f"INSERT INTO {rows.table(PromptStructure)} ({columns}) "
            f"SELECT * FROM unnest({unnest}) ON CONFLICT DO NOTHING")


async def _write_pg(structures: list[Structure]) -> None:
    from controlplane.gateway import pg

    params = [[s.call_id for s in structures], [BLOCK_TOKENS] * len(structures),
              [s.tokens for s in structures], [s.digests for s in structures]]
    async with pg.connection(pg.RECORD) as conn:
        await conn.execute(_insert_sql(), params)


class PromptRecorder:
    """One event loop's prompt structures, written one batch at a time (``MAX_BATCH``). A
    structure never waits for a timer: when no batch is being written it starts at once."""

    def __init__(self) -> None:
        self._waiting: list[tuple[int, Any, int]] = []
        self._writing: asyncio.Task[None] | None = None
        self.batches = 0
        self.recorded = 0

    def add(self, call_pk: int, body: Any, prompt_tokens: int) -> None:
        self._waiting.append((call_pk, body, prompt_tokens))
        if self._writing is None:
            self._writing = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                await self._write(batch)
        finally:
            self._writing = None

    async def _write(self, batch: list[tuple[int, Any, int]]) -> None:
        from controlplane.gateway import pg
        from controlplane.stores import in_db_thread

        self.batches += 1
        try:
            def structures_of() -> list[Structure]:
                return [structure_of(call_pk, body) for call_pk, body, _tokens in batch]

            if sum(tokens for _pk, _body, tokens in batch) < INLINE_TOKENS:
                structures = structures_of()
            else:
                structures = await asyncio.to_thread(structures_of)
            if pg.is_postgres():
                await _write_pg(structures)
            else:
                await in_db_thread(_write_orm)(structures)
        except Exception as exc:  # a replay misses these calls' structures; the calls are fine
            log.warning("prompt structures of %d calls (%s...) not recorded: %s", len(batch),
                        batch[0][0], exc)
            return
        self.recorded += len(batch)

    async def flush(self) -> None:
        """Wait until everything added so far is written (tests; the lifespan's shutdown)."""
        while self._writing is not None:
            await asyncio.shield(self._writing)


_recorders: WeakKeyDictionary[asyncio.AbstractEventLoop, PromptRecorder] = WeakKeyDictionary()


def recorder() -> PromptRecorder:
    loop = asyncio.get_running_loop()
    existing = _recorders.get(loop)
    if existing is None:
        existing = _recorders[loop] = PromptRecorder()
    return existing


def record_prompt_soon(call_pk: int, body: Any, prompt_tokens: int) -> None:
    """Fire and forget from the gateway's event loop."""
    recorder().add(call_pk, body, prompt_tokens)

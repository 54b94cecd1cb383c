"""The gateway's own asynchronous PostgreSQL connections (psycopg 3 ``AsyncConnectionPool``).

Why not Django's connections: the ORM is synchronous, so every call used to cost two thread
hops and the SQL compiler's Python on each of its nine statements. The hot path
(``controlplane.gateway.ledger``) runs three fixed statements per call on these connections
straight from the event loop, each a transaction of its own (autocommit: one round trip each),
prepared server-side from their first use. Measured here (psycopg 3.3, uvloop): a statement
costs the client about 0.1 ms of CPU, a BEGIN/statements/COMMIT transaction about 0.8 ms whether
or not it is pipelined, so the ledger puts each phase of a call in one statement.

Two pools per event loop (the test suite serves the gateway on a loop of its own per test), built
from the database Django is configured with (``connection.settings_dict``: the test database
under pytest). A failure to reach PostgreSQL is a ``StoreUnavailable`` and opens the same
breaker the ORM path uses (``controlplane.stores.postgres``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from weakref import WeakKeyDictionary

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from controlplane import stores
from controlplane.env import get_int
from controlplane.stores import StoreUnavailable

DOWN = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)
"""Errors that mean PostgreSQL is unreachable (any other database error is a bug)."""

POOL_SIZE = get_int("GATEWAY_DB_POOL", 6)
"""Connections per gateway process for admissions (each holds one for its two statements)."""
COMMIT_POOL_SIZE = 2
"""Connections for group commits (``ledger.BATCHES_IN_FLIGHT``)."""
RECORD_POOL_SIZE = 1
"""Connections for what-if prompt structures (one batch at a time, off the answer's path)."""
POOL_TIMEOUT_S = float(get_int("DATABASE_POOL_TIMEOUT_S", 3))

ADMIT = "admit"
COMMIT = "commit"
RECORD = "record"
_SIZES = {ADMIT: POOL_SIZE, COMMIT: COMMIT_POOL_SIZE, RECORD: RECORD_POOL_SIZE}

_pools: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, AsyncConnectionPool]] = \
    WeakKeyDictionary()


def is_postgres() -> bool:
    from django.db import connection

    return connection.vendor == "postgresql"


def conninfo() -> dict[str, Any]:
    """psycopg connection keywords for the database Django uses now."""
    from django.db import connection

    db = connection.settings_dict
    params: dict[str, Any] = {"dbname": db["NAME"], "connect_timeout":
                              int((db.get("OPTIONS") or {}).get("connect_timeout", 3))}
    for key, name in (("USER", "user"), ("PASSWORD", "password"), ("HOST", "host"),
                      ("PORT", "port")):
        if db.get(key):
            params[name] = str(db[key])
    return params


def _configure(synchronous: bool) -> Any:
    async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
        # Every statement of the hot path is a transaction of its own (autocommit): one round
        # trip, no BEGIN/COMMIT. Statements are prepared from their first use: the hot path
        # runs the same few over and over, each with a fixed text whatever its parameters.
        await conn.set_autocommit(True)
        conn.prepare_threshold = 0
        await conn.execute("SET TIME ZONE 'UTC'")
        await conn.execute(f"SET synchronous_commit TO {'on' if synchronous else 'off'}")
    return configure


async def pool(kind: str) -> AsyncConnectionPool:
    """This event loop's pool of ``kind``: ``ADMIT`` (asynchronous commit: a pending record),
    ``COMMIT`` (``synchronous_commit`` on: outcomes, before their answers are released) or
    ``RECORD`` (asynchronous commit: what-if prompt structures, which no answer waits for)."""
    loop = asyncio.get_running_loop()
    pools = _pools.get(loop)
    if pools is None:
        pools = _pools[loop] = {}
    existing = pools.get(kind)
    if existing is None:
        existing = AsyncConnectionPool(
            kwargs=conninfo(), min_size=1,
            max_size=_SIZES[kind], timeout=POOL_TIMEOUT_S,
            configure=_configure(kind == COMMIT), open=False, name=f"saga-gateway-{kind}")
        pools[kind] = existing
        await existing.open(wait=False)
    return existing


async def close() -> None:
    """Close this loop's pools (the lifespan's shutdown)."""
    for existing in (_pools.pop(asyncio.get_running_loop(), None) or {}).values():
        await existing.close()


def unavailable(exc: BaseException) -> StoreUnavailable:
    stores.postgres.failed(exc)
    return StoreUnavailable(f"PostgreSQL: {exc}")


@contextlib.asynccontextmanager
async def connection(kind: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A pooled connection; StoreUnavailable (breaker opened) when PostgreSQL does not answer.

    The breaker is checked first, so while PostgreSQL is known to be down a call fails at once
    instead of waiting ``POOL_TIMEOUT_S`` for a connection."""
    stores.postgres.check()
    the_pool = await pool(kind)
    try:
        conn = await the_pool.getconn()
    except DOWN as exc:
        raise unavailable(exc) from exc
    try:
        yield conn
    except (psycopg.errors.TransactionRollback, psycopg.errors.DeadlockDetected):
        raise  # a deadlock or serialization victim: the server is fine, the caller retries
    except DOWN as exc:
        raise unavailable(exc) from exc
    finally:
        await the_pool.putconn(conn)

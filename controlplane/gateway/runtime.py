"""The gateway's per-process singletons: the key cache, the cluster directory, the routing state
and this process's identity. The ASGI app, the rebalancer and the reconciler share them."""

from __future__ import annotations

import asyncio
from functools import lru_cache
from weakref import WeakKeyDictionary

from django.conf import settings

from controlplane.gateway import pg
from controlplane.gateway.directory import ClusterDirectory
from controlplane.gateway.keys import KeyCache
from controlplane.gateway.process import GatewayProcess
from controlplane.gateway.routing_state import (
    AsyncLocalRoutingState,
    AsyncRedisRoutingState,
    AsyncRoutingState,
    LocalRoutingState,
    RedisRoutingState,
    RoutingState,
)
from controlplane.stores import in_db_thread

keys = KeyCache()
directory = ClusterDirectory()


@lru_cache(maxsize=1)
def routing_state() -> RoutingState:
    return RedisRoutingState(settings.REDIS_URL) if settings.REDIS_URL else LocalRoutingState()


process = GatewayProcess(routing_state, directory)

_async_states: WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncRoutingState] = \
    WeakKeyDictionary()


def async_routing_state() -> AsyncRoutingState:
    """The same routing state for this event loop's hot path (its own Redis connections)."""
    loop = asyncio.get_running_loop()
    existing = _async_states.get(loop)
    if existing is None:
        if settings.REDIS_URL:
            existing = AsyncRedisRoutingState(settings.REDIS_URL)
        else:
            from controlplane.quotas import token_counter

            local = routing_state()
            assert isinstance(local, LocalRoutingState)
            existing = AsyncLocalRoutingState(local, token_counter())
        _async_states[loop] = existing
    return existing


@lru_cache(maxsize=1)
def fast_path() -> bool:
    """Whether workflows' calls take the ledger's path (PostgreSQL) or the ORM's (SQLite)."""
    return pg.is_postgres()


_refreshing: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = \
    WeakKeyDictionary()


async def fresh_directory() -> None:
    """Keep the directory within its refresh interval without making a call wait for it: a
    stale directory is refreshed in a store thread while calls go on with the last one; only
    the very first call waits for the first read."""
    if directory.loaded():
        if directory.stale():
            loop = asyncio.get_running_loop()
            task = _refreshing.get(loop)
            if task is None or task.done():
                _refreshing[loop] = loop.create_task(_refresh())
        return
    await in_db_thread(directory.refresh)()


async def _refresh() -> None:
    import contextlib

    with contextlib.suppress(Exception):  # the next call tries again; calls use the last read
        await in_db_thread(directory.refresh)()


async def shutdown() -> None:
    """The end of the process's lifespan: close the calls it still holds and write the prompt
    structures still queued, then close its event loop's connections (PostgreSQL, Redis,
    nodes)."""
    import contextlib

    from controlplane.gateway import nodeclient
    from controlplane.whatif.recording import recorder

    await in_db_thread(process.shutdown)()
    await recorder().flush()  # the prompt structures still queued (failures are logged)
    nodeclient.close_client()
    state = _async_states.pop(asyncio.get_running_loop(), None)
    with contextlib.suppress(Exception):
        if state is not None:
            await state.close()
        await pg.close()

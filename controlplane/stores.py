"""The control plane's shared stores (PostgreSQL, Redis) as the hot path sees them.

The gateway must answer fast while a store is down: a Redis client here has a short socket
timeout and no retries, and every store failure surfaces as one exception type,
``StoreUnavailable``, which the gateway turns into a retryable 503 with nothing recorded twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

R = TypeVar("R")

REDIS_TIMEOUT_S = 1.0
"""Socket (connect and read) timeout of the hot path's Redis clients."""


class StoreUnavailable(Exception):
    """PostgreSQL or Redis did not answer."""


def fast_redis(url: str, *, decode_responses: bool = True) -> Any:
    """A Redis client that fails within ``REDIS_TIMEOUT_S`` instead of hanging."""
    import redis

    return redis.Redis.from_url(url, decode_responses=decode_responses,
                                socket_timeout=REDIS_TIMEOUT_S,
                                socket_connect_timeout=REDIS_TIMEOUT_S, retry_on_timeout=False)


_executor: Any = None


def db_executor() -> Any:
    """The threads sync store work runs in: as many as the database pool has connections
    (``DATABASE_POOL_MAX``), so a thread never waits for a connection while others idle, and
    the event loop's own small default pool is left to everything else."""
    global _executor
    if _executor is None:
        from concurrent.futures import ThreadPoolExecutor

        from controlplane.env import get_int

        _executor = ThreadPoolExecutor(max_workers=max(get_int("DATABASE_POOL_MAX", 10), 2),
                                       thread_name_prefix="saga-store")
    return _executor


def in_db_thread(work: Callable[..., R]) -> Callable[..., Awaitable[R]]:
    """Run sync ORM/Redis work in the store threads (not one thread per request), giving the
    database connection back to the pool when it is done rather than holding it across the
    awaits that follow (a call's upstream wait included)."""
    from asgiref.sync import sync_to_async
    from django.db import close_old_connections

    def wrapped(*args: Any, **kwargs: Any) -> R:
        close_old_connections()
        try:
            return work(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(wrapped, thread_sensitive=False, executor=db_executor())


class Breaker:
    """Fail fast while a store is known to be down.

    After a failure, calls that need the store fail at once for ``cooldown_s`` instead of each
    waiting for its own timeout (a connection pool waits seconds for a connection PostgreSQL
    cannot give); then one call tries again, and a success closes the breaker.
    """

    def __init__(self, name: str, cooldown_s: float = 1.0) -> None:
        self.name = name
        self.cooldown_s = cooldown_s
        self._open_until = 0.0
        self._last_error = ""

    def check(self) -> None:
        import time

        if time.monotonic() < self._open_until:
            raise StoreUnavailable(f"{self.name} is unreachable ({self._last_error})")

    def failed(self, error: object) -> None:
        import time

        self._last_error = str(error)[:200]
        self._open_until = time.monotonic() + self.cooldown_s


postgres = Breaker("PostgreSQL")
redis_store = Breaker("Redis")

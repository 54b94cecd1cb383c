"""Tenant quotas: concurrent workflows (from the database) and tokens per minute (Redis).

The token budget is a per-tenant counter in a one-minute window shared by every gateway
process through Redis (``REDIS_URL``); without Redis (the demo) it is kept in process.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Protocol

from django.conf import settings

from controlplane.stores import StoreUnavailable, fast_redis, redis_store


class QuotaExceeded(Exception):
    """A tenant is over a quota; ``retry_after_s`` is when trying again can succeed."""

    def __init__(self, quota: str, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.quota = quota
        self.retry_after_s = max(1, retry_after_s)


class TokenCounter(Protocol):
    def add(self, tenant_id: int, tokens: int, window: int) -> int: ...
    def used(self, tenant_id: int, window: int) -> int: ...


class RedisTokenCounter:
    """Shared by every gateway process; raises StoreUnavailable when Redis does not answer."""

    def __init__(self, url: str) -> None:
        self._redis = fast_redis(url, decode_responses=False)

    def _key(self, tenant_id: int, window: int) -> str:
        return tokens_key(tenant_id, window)

    def add(self, tenant_id: int, tokens: int, window: int) -> int:
        import redis

        key = self._key(tenant_id, window)
        pipe = self._redis.pipeline()
        pipe.incrby(key, tokens)
        pipe.expire(key, TOKENS_KEY_TTL_S)
        redis_store.check()
        try:
            total, _ = pipe.execute()
        except redis.RedisError as exc:
            redis_store.failed(exc)
            raise StoreUnavailable(f"Redis: {exc}") from exc
        return int(total)

    def used(self, tenant_id: int, window: int) -> int:
        import redis

        redis_store.check()
        try:
            return int(self._redis.get(self._key(tenant_id, window)) or 0)
        except redis.RedisError as exc:
            redis_store.failed(exc)
            raise StoreUnavailable(f"Redis: {exc}") from exc


class LocalTokenCounter:
    def __init__(self) -> None:
        self._counts: dict[tuple[int, int], int] = {}
        self._lock = threading.Lock()

    def add(self, tenant_id: int, tokens: int, window: int) -> int:
        with self._lock:
            for key in [k for k in self._counts if k[1] < window - 1]:
                del self._counts[key]
            total = self._counts.get((tenant_id, window), 0) + tokens
            self._counts[(tenant_id, window)] = total
            return total

    def used(self, tenant_id: int, window: int) -> int:
        with self._lock:
            return self._counts.get((tenant_id, window), 0)


_counter: TokenCounter | None = None


def token_counter() -> TokenCounter:
    global _counter
    if _counter is None:
        url = getattr(settings, "REDIS_URL", None)
        _counter = RedisTokenCounter(url) if url else LocalTokenCounter()
    return _counter


def tokens_key(tenant_id: int, window: int) -> str:
    """The Redis counter of a tenant's tokens in one minute (the gateway's hot path reads and
    charges it inside its own scripts, ``controlplane.gateway.routing_state``)."""
    return f"saga:tpm:{tenant_id}:{window}"


TOKENS_KEY_TTL_S = 120


def minute_window(now: float) -> tuple[int, int]:
    """The current one-minute window and the seconds until the next one starts."""
    window = int(now // 60)
    return window, math.ceil((window + 1) * 60 - now)


def tokens_refused(tenant_id: int, limit: int, now: float) -> QuotaExceeded:
    """The 429 of a tenant whose tokens-per-minute budget is used up, counted as a rejection
    (the SLO series and /metrics count it)."""
    from controlplane.slo.rejections import record_rejection

    record_rejection(tenant_id, "tokens_per_minute")
    return QuotaExceeded("tokens_per_minute", f"tokens-per-minute quota of {limit} is used up",
                         minute_window(now)[1])


def check_tokens(tenant_id: int, limit: int | None, *, now: float | None = None) -> None:
    """Refuse when the tenant has used its tokens-per-minute budget in the current minute."""
    if limit is None:
        return
    now = time.time() if now is None else now
    window, _retry = minute_window(now)
    if token_counter().used(tenant_id, window) >= limit:
        raise tokens_refused(tenant_id, limit, now)


def charge_tokens(tenant_id: int, tokens: int, *, now: float | None = None) -> int:
    """Count tokens served to the tenant in the current minute; returns the window's total."""
    window, _ = minute_window(time.time() if now is None else now)
    return token_counter().add(tenant_id, max(tokens, 0), window)

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
    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url)

    def _key(self, tenant_id: int, window: int) -> str:
        return f"saga:tpm:{tenant_id}:{window}"

    def add(self, tenant_id: int, tokens: int, window: int) -> int:
        key = self._key(tenant_id, window)
        pipe = self._redis.pipeline()
        pipe.incrby(key, tokens)
        pipe.expire(key, 120)
        total, _ = pipe.execute()
        return int(total)

    def used(self, tenant_id: int, window: int) -> int:
        return int(self._redis.get(self._key(tenant_id, window)) or 0)


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


def _window(now: float) -> tuple[int, int]:
    window = int(now // 60)
    return window, math.ceil((window + 1) * 60 - now)


def check_tokens(tenant_id: int, limit: int | None, *, now: float | None = None) -> None:
    """Refuse when the tenant has used its tokens-per-minute budget in the current minute."""
    if limit is None:
        return
    window, retry = _window(time.time() if now is None else now)
    if token_counter().used(tenant_id, window) >= limit:
        raise QuotaExceeded(
            "tokens_per_minute", f"tokens-per-minute quota of {limit} is used up", retry
        )


def charge_tokens(tenant_id: int, tokens: int, *, now: float | None = None) -> int:
    """Count tokens served to the tenant in the current minute; returns the window's total."""
    window, _ = _window(time.time() if now is None else now)
    return token_counter().add(tenant_id, max(tokens, 0), window)

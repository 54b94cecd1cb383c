"""Tenant API-key checks for the gateway's hot path, with a short-lived in-process cache.

A verified key is remembered for ``KEY_CACHE_S`` seconds, so most calls cost no database query;
a revocation therefore takes effect on the gateway within that many seconds (the REST API checks
the database every time).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from controlplane import credentials
from controlplane.tenants.models import ApiKey, ApiKeyScope

KEY_CACHE_S = 10.0


@dataclass(frozen=True, slots=True)
class Caller:
    key_id: int
    key_prefix: str
    tenant_id: int
    tenant: str
    tokens_per_minute: int | None
    max_concurrent_workflows: int | None


class KeyCache:
    def __init__(self, ttl_s: float = KEY_CACHE_S) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, Caller]] = {}
        self._lock = threading.Lock()

    def cached(self, plaintext: str) -> Caller | None:
        """The caller when the key was verified less than ``ttl_s`` ago, else None. No I/O, so
        the gateway calls it on the event loop and leaves the thread hop to cache misses."""
        return self._hit(credentials.digest_secret(plaintext), time.monotonic())

    def _hit(self, digest: str, now: float) -> Caller | None:
        with self._lock:
            hit = self._entries.get(digest)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        return None

    def authenticate(self, plaintext: str) -> Caller | None:
        """The caller behind an inference-scoped key, or None (never raises on bad input)."""
        digest = credentials.digest_secret(plaintext)
        now = time.monotonic()
        hit = self._hit(digest, now)
        if hit is not None:
            return hit
        key = ApiKey.authenticate(plaintext, scope=ApiKeyScope.INFERENCE)
        if key is None:
            with self._lock:
                self._entries.pop(digest, None)
            return None
        tenant = key.tenant
        caller = Caller(key.pk, key.prefix, tenant.pk, tenant.slug, tenant.tokens_per_minute,
                        tenant.max_concurrent_workflows)
        with self._lock:
            self._entries[digest] = (now, caller)
        return caller

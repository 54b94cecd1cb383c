"""Routing state several gateway processes share: workflows' home nodes and calls in flight.

It lives in Redis (``REDIS_URL``) so any gateway process behind a load balancer routes a
workflow's next call to the same home; without Redis (the one-process demo) it is kept in
memory.
"""

from __future__ import annotations

import threading
from typing import Protocol

HOME_TTL_S = 24 * 3600


class RoutingState(Protocol):
    def home(self, workflow: str) -> str | None: ...
    def set_home(self, workflow: str, node: str) -> None: ...
    def add_inflight(self, node: str, delta: int) -> None: ...
    def inflight(self, nodes: list[str]) -> dict[str, int]: ...


class RedisRoutingState:
    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, decode_responses=True)

    def home(self, workflow: str) -> str | None:
        value = self._redis.get(f"saga:home:{workflow}")
        return str(value) if value is not None else None

    def set_home(self, workflow: str, node: str) -> None:
        self._redis.set(f"saga:home:{workflow}", node, ex=HOME_TTL_S)

    def add_inflight(self, node: str, delta: int) -> None:
        self._redis.hincrby("saga:inflight", node, delta)

    def inflight(self, nodes: list[str]) -> dict[str, int]:
        if not nodes:
            return {}
        values = self._redis.hmget("saga:inflight", nodes)
        return {n: max(0, int(v or 0)) for n, v in zip(nodes, values, strict=True)}


class LocalRoutingState:
    def __init__(self) -> None:
        self._homes: dict[str, str] = {}
        self._inflight: dict[str, int] = {}
        self._lock = threading.Lock()

    def home(self, workflow: str) -> str | None:
        return self._homes.get(workflow)

    def set_home(self, workflow: str, node: str) -> None:
        self._homes[workflow] = node

    def add_inflight(self, node: str, delta: int) -> None:
        with self._lock:
            self._inflight[node] = self._inflight.get(node, 0) + delta

    def inflight(self, nodes: list[str]) -> dict[str, int]:
        return {n: max(0, self._inflight.get(n, 0)) for n in nodes}

"""Routing state every gateway process shares: calls in flight and live gateway processes.

It lives in Redis (``REDIS_URL``) so every gateway process behind a load balancer counts the
same calls in flight; without Redis (the one-process demo) it is kept in memory. Workflows'
homes are not here: ``Workflow.home_node`` in PostgreSQL is their one store, because the
gateway reads (and locks) the workflow's row for every call anyway, a home must survive a Redis
restart (losing it throws the workflow's KV cache away), and work stealing moves it in the same
database.

Calls in flight are *leases*, not counters: each call holds an entry in its node's set
(``saga:inflight:<node>``, a sorted set scored by the lease's expiry, with the call's prompt
tokens beside it) that its gateway process renews while the call runs and removes when the call
ends. A process that dies stops renewing, so its calls drop out of the counts within
``LEASE_TTL_S`` by themselves: a count can never drift the way an increment/decrement pair does
when the decrement is lost. Each process also holds a liveness key (``saga:gateway:<id>``), which
is how the reconciler tells the pending calls of a dead process from those of a live one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from controlplane.quotas import TOKENS_KEY_TTL_S
from controlplane.stores import REDIS_TIMEOUT_S, StoreUnavailable, fast_redis, redis_store

LEASE_TTL_S = 6.0
"""How long a call or gateway lease lives without renewal (renewed every ``RENEW_S``)."""
RENEW_S = 2.0

@dataclass(frozen=True, slots=True)
class InFlight:
    """Calls a node has in flight through the gateway tier, and their prompt tokens."""

    calls: int = 0
    prompt_tokens: int = 0


class RoutingState(Protocol):
    def acquire(self, node: str, call: str, prompt_tokens: int) -> None: ...
    def release(self, node: str, call: str) -> bool: ...
    def renew(self, leases: Iterable[tuple[str, str]]) -> None: ...
    def inflight(self, nodes: Sequence[str]) -> dict[str, InFlight]: ...
    def heartbeat(self, gateway: str) -> bool: ...
    def retire(self, gateway: str) -> None: ...
    def alive(self, gateways: Sequence[str]) -> dict[str, bool]: ...


# KEYS[1] = the node's lease set, KEYS[2] = its token hash; ARGV[1] = now (ms).
# Drops expired leases (and their token counts), then returns {count, sum of tokens}.
_COUNT = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
  redis.call('HDEL', KEYS[2], unpack(expired))
end
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do total = total + tonumber(v) end
return {redis.call('ZCARD', KEYS[1]), total}
"""

# KEYS = lease set, token hash; ARGV = call. Returns 1 when the lease was held (removed now).
_RELEASE = """
local held = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return held
"""


def _lease_keys(node: str) -> tuple[str, str]:
    return f"saga:inflight:{node}", f"saga:inflight:{node}:tokens"


class RedisRoutingState:
    def __init__(self, url: str) -> None:
        self._redis = fast_redis(url)
        self._count = self._redis.register_script(_COUNT)
        self._release = self._redis.register_script(_RELEASE)

    def _do(self, work: Any) -> Any:
        import redis

        redis_store.check()
        try:
            return work()
        except redis.RedisError as exc:
            redis_store.failed(exc)
            raise StoreUnavailable(f"Redis: {exc}") from exc

    def acquire(self, node: str, call: str, prompt_tokens: int) -> None:
        leases, tokens = _lease_keys(node)
        expiry = _ms(time.time() + LEASE_TTL_S)

        def work() -> None:
            pipe = self._redis.pipeline(transaction=True)
            pipe.zadd(leases, {call: expiry})
            pipe.hset(tokens, call, int(prompt_tokens))
            pipe.execute()

        self._do(work)

    def release(self, node: str, call: str) -> bool:
        return bool(self._do(lambda: self._release(keys=list(_lease_keys(node)), args=[call])))

    def renew(self, leases: Iterable[tuple[str, str]]) -> None:
        by_node: dict[str, list[str]] = {}
        for node, call in leases:
            by_node.setdefault(node, []).append(call)
        if not by_node:
            return
        expiry = _ms(time.time() + LEASE_TTL_S)

        def work() -> None:
            pipe = self._redis.pipeline(transaction=False)
            for node, calls in by_node.items():
                pipe.zadd(_lease_keys(node)[0], dict.fromkeys(calls, expiry), xx=True)
            pipe.execute()

        self._do(work)

    def inflight(self, nodes: Sequence[str]) -> dict[str, InFlight]:
        if not nodes:
            return {}
        now = _ms(time.time())

        def work() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for node in nodes:
                self._count(keys=list(_lease_keys(node)), args=[now], client=pipe)
            return list(pipe.execute())

        results = self._do(work)
        return {n: InFlight(int(r[0]), int(r[1])) for n, r in zip(nodes, results, strict=True)}

    def heartbeat(self, gateway: str) -> bool:
        """Renew the process's liveness lease; False when it had lapsed or Redis lost it (a
        restart): the caller then re-acquires the leases of the calls it holds."""
        previous = self._do(lambda: self._redis.set(f"saga:gateway:{gateway}", "1",
                                                    px=_ms(LEASE_TTL_S), get=True))
        return previous is not None

    def retire(self, gateway: str) -> None:
        self._do(lambda: self._redis.delete(f"saga:gateway:{gateway}"))

    def alive(self, gateways: Sequence[str]) -> dict[str, bool]:
        if not gateways:
            return {}
        values = self._do(lambda: self._redis.mget([f"saga:gateway:{g}" for g in gateways]))
        return {g: v is not None for g, v in zip(gateways, values, strict=True)}

    def clear(self) -> None:
        """Drop every lease and liveness key (tests)."""
        for pattern in ("saga:inflight:*", "saga:gateway:*"):
            keys = list(self._redis.scan_iter(match=pattern, count=1000))
            if keys:
                self._redis.delete(*keys)


class LocalRoutingState:
    """The same state in one process (no Redis): only this process's gateway exists."""

    def __init__(self) -> None:
        self._leases: dict[str, dict[str, tuple[float, int]]] = {}
        self._alive: dict[str, float] = {}
        self._lock = threading.Lock()

    def acquire(self, node: str, call: str, prompt_tokens: int) -> None:
        with self._lock:
            self._leases.setdefault(node, {})[call] = (time.time() + LEASE_TTL_S,
                                                       int(prompt_tokens))

    def release(self, node: str, call: str) -> bool:
        with self._lock:
            return self._leases.get(node, {}).pop(call, None) is not None

    def renew(self, leases: Iterable[tuple[str, str]]) -> None:
        expiry = time.time() + LEASE_TTL_S
        with self._lock:
            for node, call in leases:
                held = self._leases.get(node, {})
                if call in held:
                    held[call] = (expiry, held[call][1])

    def inflight(self, nodes: Sequence[str]) -> dict[str, InFlight]:
        now = time.time()
        out: dict[str, InFlight] = {}
        with self._lock:
            for node in nodes:
                held = self._leases.get(node, {})
                for call in [c for c, (expiry, _t) in held.items() if expiry <= now]:
                    del held[call]
                out[node] = InFlight(len(held), sum(t for _e, t in held.values()))
        return out

    def heartbeat(self, gateway: str) -> bool:
        with self._lock:
            had = self._alive.get(gateway, 0.0) > time.time()
            self._alive[gateway] = time.time() + LEASE_TTL_S
            return had

    def retire(self, gateway: str) -> None:
        with self._lock:
            self._alive.pop(gateway, None)

    def alive(self, gateways: Sequence[str]) -> dict[str, bool]:
        now = time.time()
        with self._lock:
            return {g: self._alive.get(g, 0.0) > now for g in gateways}

    def clear(self) -> None:
        with self._lock:
            self._leases.clear()
            self._alive.clear()


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


# ---------------------------------------------------------------------- the hot path (async)
# The gateway's event loop talks to Redis itself (redis.asyncio): one script round trip reads
# what routing needs (every candidate's in-flight count and the tenant's tokens this minute),
# one acquires the call's lease, one releases it and charges the call's tokens. The keys and
# their meaning are those of RedisRoutingState and controlplane.quotas, so both paths (and the
# reconciler, which stays synchronous) see one state.

# KEYS = (lease set, token hash) per node, then the tenant's tokens key (optional);
# ARGV = now (ms), number of nodes. Returns count, tokens per node, then the tokens used.
_VIEW = """
local n = tonumber(ARGV[2])
local out = {}
for i = 1, n do
  local leases, tokens = KEYS[2 * i - 1], KEYS[2 * i]
  local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', ARGV[1])
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', leases, '-inf', ARGV[1])
    redis.call('HDEL', tokens, unpack(expired))
  end
  local total = 0
  for _, v in ipairs(redis.call('HVALS', tokens)) do total = total + tonumber(v) end
  out[#out + 1] = redis.call('ZCARD', leases)
  out[#out + 1] = total
end
if #KEYS > 2 * n then out[#out + 1] = tonumber(redis.call('GET', KEYS[#KEYS]) or '0') end
return out
"""

# KEYS = lease set, token hash; ARGV = call, expiry (ms), prompt tokens.
_ACQUIRE = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
"""

# KEYS = lease set, token hash, then the tenant's tokens key (optional); ARGV = call, then the
# tokens to charge and the key's time to live. Returns 1 when the lease was held.
_RELEASE_AND_CHARGE = """
local held = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if #KEYS > 2 then
  redis.call('INCRBY', KEYS[3], ARGV[2])
  redis.call('EXPIRE', KEYS[3], ARGV[3])
end
return held
"""


@dataclass(frozen=True, slots=True)
class RoutingRead:
    """What one routing decision reads: calls in flight per candidate node and, when the tenant
    has a tokens-per-minute quota, its tokens used this minute."""

    inflight: dict[str, InFlight]
    tokens_used: int


class AsyncRoutingState(Protocol):
    async def read(self, nodes: Sequence[str], tokens_key: str | None) -> RoutingRead: ...
    async def acquire(self, node: str, call: str, prompt_tokens: int) -> None: ...
    async def release(self, node: str, call: str, charge: tuple[str, int] | None) -> bool: ...
    async def refund(self, key: str, tokens: int) -> None: ...


class AsyncRedisRoutingState:
    """The routing state from an event loop, on the lean pipelined client
    (``controlplane.gateway.resp``; one per loop: its connection is the loop's)."""

    def __init__(self, url: str) -> None:
        from controlplane.gateway.resp import LeanRedis, Script

        self._redis = LeanRedis(url, REDIS_TIMEOUT_S)
        self._view = Script(_VIEW)
        self._acquire = Script(_ACQUIRE)
        self._release = Script(_RELEASE_AND_CHARGE)

    async def _do(self, work: Any) -> Any:
        from controlplane.gateway.resp import RedisDown, RedisReplyError

        try:
            redis_store.check()
        except StoreUnavailable:
            work.close()  # the coroutine is never awaited
            raise
        try:
            return await work
        except (RedisDown, RedisReplyError) as exc:
            redis_store.failed(exc)
            raise StoreUnavailable(f"Redis: {exc}") from exc

    async def read(self, nodes: Sequence[str], tokens_key: str | None) -> RoutingRead:
        keys = [key for node in nodes for key in _lease_keys(node)]
        if tokens_key is not None:
            keys.append(tokens_key)
        out = await self._do(self._redis.run(self._view, keys, [_ms(time.time()), len(nodes)]))
        inflight = {node: InFlight(int(out[2 * i]), int(out[2 * i + 1]))
                    for i, node in enumerate(nodes)}
        return RoutingRead(inflight, int(out[2 * len(nodes)]) if tokens_key is not None else 0)

    async def acquire(self, node: str, call: str, prompt_tokens: int) -> None:
        await self._do(self._redis.run(self._acquire, list(_lease_keys(node)),
                                       [call, _ms(time.time() + LEASE_TTL_S),
                                        int(prompt_tokens)]))

    async def release(self, node: str, call: str, charge: tuple[str, int] | None) -> bool:
        keys, args = list(_lease_keys(node)), [call]
        if charge is not None:
            keys.append(charge[0])
            args += [max(int(charge[1]), 0), TOKENS_KEY_TTL_S]
        return bool(await self._do(self._redis.run(self._release, keys, args)))

    async def refund(self, key: str, tokens: int) -> None:
        await self._do(self._redis.execute("DECRBY", key, tokens))

    async def close(self) -> None:
        self._redis.close()


class AsyncLocalRoutingState:
    """The one-process (no Redis) state, from the event loop: in memory, so nothing awaits."""

    def __init__(self, state: LocalRoutingState, tokens: Any) -> None:
        self._state = state
        self._tokens = tokens  # controlplane.quotas.LocalTokenCounter

    async def read(self, nodes: Sequence[str], tokens_key: str | None) -> RoutingRead:
        used = 0
        if tokens_key is not None:
            tenant, window = _tokens_key_parts(tokens_key)
            used = self._tokens.used(tenant, window)
        return RoutingRead(self._state.inflight(nodes), used)

    async def acquire(self, node: str, call: str, prompt_tokens: int) -> None:
        self._state.acquire(node, call, prompt_tokens)

    async def release(self, node: str, call: str, charge: tuple[str, int] | None) -> bool:
        held = self._state.release(node, call)
        if charge is not None:
            tenant, window = _tokens_key_parts(charge[0])
            self._tokens.add(tenant, max(charge[1], 0), window)
        return held

    async def refund(self, key: str, tokens: int) -> None:
        tenant, window = _tokens_key_parts(key)
        self._tokens.add(tenant, -tokens, window)

    async def close(self) -> None:
        return None


def _tokens_key_parts(key: str) -> tuple[int, int]:
    _saga, _tpm, tenant, window = key.split(":")
    return int(tenant), int(window)

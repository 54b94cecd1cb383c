"""Redis restarted, PostgreSQL cut off: while a store is down the gateway answers fast
retryable 503s and records nothing (never hangs, never records twice); when the store is back
it recovers by itself (nodes reconnect, in-flight leases are rebuilt). The control plane runs
in its own process against a private Redis and a proxy in front of PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from controlplane.workflows.models import Call, CallOutcome
from tests.faults import (
    PrivateRedis,
    ServedControlPlane,
    TcpProxy,
    database_url_of_test_db,
    wait_until,
)
from tests.gateway.conftest import NODE_KEY, tenant_key
from tests.live import NodeProcess

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def outage_cluster(transactional_db: None, redis_url: str) -> Iterator[dict[str, Any]]:
    from django.conf import settings

    store = PrivateRedis().start()
    postgres = TcpProxy(int(settings.DATABASES["default"].get("PORT") or 5432)).restore()
    cp = ServedControlPlane(database_url_of_test_db(postgres.port), store.url, NODE_KEY).start()
    nodes = [NodeProcess(cp.url, f"gpu-{i}", api_key=NODE_KEY).start() for i in range(2)]
    try:
        yield {"url": cp.url, "redis": store, "postgres": postgres, "cp": cp}
    finally:
        for node in nodes:
            node.stop()
        cp.stop()
        postgres.cut()
        store.stop()


def call(url: str, key: str, workflow: str | None = None, timeout: float = 10.0
         ) -> tuple[int, float, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"}
    if workflow:
        headers["X-Saga-Workflow"] = workflow
    start = time.monotonic()
    response = httpx.post(f"{url}/v1/chat/completions", headers=headers, timeout=timeout,
                          json={"model": "llama-3-8b", "max_tokens": 3,
                                "messages": [{"role": "user", "content": "ping"}]})
    return response.status_code, time.monotonic() - start, response.json()


def succeeds(url: str, key: str) -> bool:
    try:
        return call(url, key)[0] == 200
    except httpx.HTTPError:
        return False


def assert_every_call_has_one_outcome() -> None:
    wait_until(lambda: not Call.objects.filter(outcome=CallOutcome.PENDING).exists(),
               "no call left pending", 20)
    seqs = list(Call.objects.values_list("workflow_id", "seq"))
    assert len(seqs) == len(set(seqs))


def test_redis_restart(outage_cluster: dict[str, Any]) -> None:
    url, store = outage_cluster["url"], outage_cluster["redis"]
    _tenant, key = tenant_key("acme")
    assert call(url, key, "before")[0] == 200
    recorded = Call.objects.count()
    store.stop()
    for _ in range(5):
        status, seconds, body = call(url, key)
        assert status == 503 and seconds < 2.0, (status, seconds, body)
        assert body["error"]["code"] in {"store_unavailable", "no_nodes"}
    assert Call.objects.count() == recorded  # nothing recorded while Redis is down
    store.start()  # empty: homes are in PostgreSQL, leases are rebuilt by their holders
    recovery = wait_until(lambda: succeeds(url, key), "the gateway to recover", 30)
    print(f"gateway served again {recovery:.1f} s after Redis came back")
    assert call(url, key, "before")[0] == 200  # the old workflow carries on, same home
    homes = set(Call.objects.filter(workflow__external_id="before")
                .values_list("node_id", flat=True))
    assert len(homes) == 1
    assert_every_call_has_one_outcome()


def test_postgres_cut_off(outage_cluster: dict[str, Any]) -> None:
    url, postgres = outage_cluster["url"], outage_cluster["postgres"]
    _tenant, key = tenant_key("acme")
    assert call(url, key)[0] == 200
    recorded = Call.objects.count()
    postgres.cut()
    times = []
    for _ in range(6):
        status, seconds, body = call(url, key)
        assert status == 503 and body["error"]["code"] == "store_unavailable", body
        times.append(seconds)
    assert max(times) < 4.0 and sorted(times)[len(times) // 2] < 1.0, times
    postgres.restore()
    recovery = wait_until(lambda: succeeds(url, key), "the gateway to recover", 30)
    print(f"gateway served again {recovery:.1f} s after PostgreSQL came back; "
          f"503s took {', '.join(f'{t:.2f}' for t in times)} s")
    assert Call.objects.count() >= recorded + 1
    assert_every_call_has_one_outcome()

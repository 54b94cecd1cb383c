"""A routing policy that raises in the gateway: the call still routes (fallback), and the
failure is in the log, in the admin API and counted on the control plane's /metrics."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from controlplane.gateway import runtime
from controlplane.policies.models import PolicyFailure
from controlplane.tenants.models import ApiKey
from plugins.hookspecs import ROUTING, hookimpl
from plugins.policies.routing import RequestLevelRouting
from plugins.views import CallView, NodeView, SchedulingContext, WorkflowView
from tests.gateway.conftest import tenant_key

pytestmark = pytest.mark.django_db(transaction=True)


class RaisingRouter(RequestLevelRouting):
    name = "raising-router"
    kind = ROUTING
    summary = "test: raises in route_call"

    @hookimpl
    def saga_route_call(self, ctx: SchedulingContext, call: CallView, workflow: WorkflowView,
                        nodes: Sequence[NodeView]) -> str:
        raise RuntimeError("router bug")


def scrape() -> dict[tuple[str, ...], float]:
    text = Client().get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    out: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "saga_policy_failures_total":
                labels = sample.labels
                out[(labels["tier"], labels["policy"], labels["hook"])] = sample.value
    return out


def test_a_raising_router_falls_back_and_is_reported(
        cluster: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    manager = runtime.directory.manager
    if ("routing", "raising-router") not in manager.registry:
        manager.registry.add(RaisingRouter)
    before = manager.active()["routing"]
    manager.activate("routing", "raising-router")
    try:
        _check_reported(cluster, caplog)
    finally:
        manager.activate("routing", before.name, before.params.model_dump())


def _check_reported(cluster: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    tenant, key = tenant_key("acme")
    _admin, admin_key = ApiKey.issue(tenant, "ops", scopes=["admin"])
    with caplog.at_level(logging.WARNING, logger="saga.gateway.policies"):
        reply = httpx.post(f"{cluster['url']}/v1/chat/completions", timeout=10,
                           headers={"Authorization": f"Bearer {key}"},
                           json={"model": "llama-3-8b", "max_tokens": 2,
                                 "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 200  # routed by the fallback
    assert "raising-router" in caplog.text and "router bug" in caplog.text
    runtime.process.tick()  # what housekeeping does every 2 s
    failure = PolicyFailure.objects.get()
    assert (failure.tier, failure.policy, failure.hook) == ("gateway", "raising-router",
                                                           "saga_route_call")
    api = Client(headers={"Authorization": f"Bearer {admin_key}"})
    listed = api.get("/api/admin/policies/failures").json()
    assert listed[0]["policy"] == "raising-router" and "router bug" in listed[0]["error"]
    assert scrape()[("gateway", "raising-router", "saga_route_call")] == 1.0


def test_metrics_needs_the_token_or_loopback(settings: Any, db: None) -> None:
    assert Client().get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 401
    assert Client().get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    settings.SAGA_METRICS_TOKEN = "scrape-token"
    assert Client().get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401
    ok = Client(headers={"Authorization": "Bearer scrape-token"}).get(
        "/metrics", REMOTE_ADDR="10.1.2.3")
    assert ok.status_code == 200 and b"saga_nodes" in ok.content

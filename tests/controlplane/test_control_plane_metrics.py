"""The control plane's /metrics: parses with prometheus_client's parser, holds the named series,
cluster-wide figures (series totals plus what came after), bounded labels."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from controlplane.slo import series
from controlplane.slo.rejections import record_rejection
from controlplane.tenants.models import Tenant
from controlplane.workflows.models import Call
from controlplane.workflows.states import WorkflowState
from tests.controlplane.slo_helpers import recorded_workflow, sim_node

pytestmark = pytest.mark.django_db

CALLS = [(2000, 0, 100), (2400, 2096, 120)]
NAMED = {
    "saga_tenant_slo_attainment", "saga_tenant_slo_objective_met",
    "saga_tenant_slo_target_slowdown", "saga_tenant_slo_target_percentile",
    "saga_workflows_finished", "saga_workflow_slowdown", "saga_workflows_active",
    "saga_gateway_calls", "saga_gateway_tokens", "saga_gateway_call_latency_seconds",
    "saga_gateway_overhead_seconds", "saga_routing_decisions", "saga_quota_rejections",
    "saga_nodes", "saga_policy_activations", "saga_policy_activation_outcomes",
    "saga_policy_failures",
}


def scrape(**headers: Any) -> dict[str, Any]:
    response = Client().get("/metrics", REMOTE_ADDR="127.0.0.1", **headers)
    assert response.status_code == 200
    return {family.name: family
            for family in text_string_to_metric_families(response.content.decode())}


def value(families: dict[str, Any], sample: str, **labels: str) -> float:
    name = sample.removesuffix("_total").removesuffix("_bucket").removesuffix("_count")
    name = name.removesuffix("_sum")
    for s in families[name].samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no sample {sample} {labels}")


def test_metrics_hold_the_named_series_from_the_series_and_what_came_after(
        settings: Any) -> None:
    settings.SAGA_SLO_TIERS = ["10:86400"]
    acme = Tenant.objects.create(slug="acme", name="Acme", slo_slowdown=2.0,
                                 slo_percentile=60.0)
    node = sim_node()
    now = timezone.now()
    recorded_workflow(acme, node, CALLS, end=now - timedelta(seconds=40))
    recorded_workflow(acme, node, CALLS, call_s=30.0, end=now - timedelta(seconds=40))
    record_rejection(acme.pk, "tokens_per_minute", now - timedelta(seconds=40))
    series.aggregate(now=now - timedelta(seconds=20))
    # after the newest point: one more met, one abandoned, one unevaluable, one running
    recorded_workflow(acme, node, CALLS, end=now - timedelta(seconds=5))
    recorded_workflow(acme, node, CALLS, end=now - timedelta(seconds=5),
                      finish=WorkflowState.ABANDONED)
    from controlplane.nodes.models import Node

    recorded_workflow(acme, Node.objects.create(name="mystery", engine="vllm"), CALLS,
                      end=now - timedelta(seconds=5))
    recorded_workflow(acme, node, CALLS[:1], finish=None)
    record_rejection(acme.pk, "tokens_per_minute")

    families = scrape()
    assert set(families) >= NAMED
    assert value(families, "saga_tenant_slo_attainment", tenant="acme",
                 window="cumulative") == pytest.approx(2 / 4)
    assert value(families, "saga_tenant_slo_attainment", tenant="acme",
                 window="1h") == pytest.approx(2 / 4)
    assert value(families, "saga_tenant_slo_objective_met", tenant="acme") == 0.0
    assert value(families, "saga_workflows_finished_total", tenant="acme", state="completed",
                 slo="unevaluable") == 1
    assert value(families, "saga_workflows_finished_total", tenant="acme", state="abandoned",
                 slo="missed") == 1
    assert value(families, "saga_workflow_slowdown_count", tenant="acme") == 3
    assert value(families, "saga_workflow_slowdown_bucket", tenant="acme", le="2.0") == 2
    assert value(families, "saga_workflows_active", tenant="acme", state="running") == 1
    # call-level counters and quota rejections start with the tenant's first series point
    from controlplane.slo.models import SloPoint

    began = SloPoint.objects.get(tenant=acme).window_start
    assert value(families, "saga_quota_rejections_total", tenant="acme",
                 quota="tokens_per_minute") == 1
    finished_calls = Call.objects.filter(finished_at__gte=began).count()
    assert 0 < finished_calls < Call.objects.filter(finished_at__isnull=False).count()
    assert value(families, "saga_gateway_calls_total", tenant="acme",
                 result="completed") == finished_calls
    assert value(families, "saga_gateway_call_latency_seconds_count",
                 tenant="acme") == finished_calls
    assert value(families, "saga_gateway_overhead_seconds_count", tenant="acme") == finished_calls
    routed = Call.objects.filter(queued_at__gte=began)
    assert value(families, "saga_routing_decisions_total", policy="none", outcome="new") == \
        routed.filter(seq=0).count() > 0
    assert value(families, "saga_routing_decisions_total", policy="none", outcome="home") == \
        routed.filter(seq__gt=0).count()
    assert value(families, "saga_nodes", status="pending") == 2
    for family in families.values():
        for sample in family.samples:
            assert not {"workflow", "workflow_id", "call"} & set(sample.labels)


def test_a_tenant_without_any_activity_or_series_is_answered(settings: Any) -> None:
    Tenant.objects.create(slug="new", name="New")
    families = scrape()
    assert value(families, "saga_tenant_slo_target_slowdown", tenant="new") == 2.0
    assert not [s for s in families["saga_tenant_slo_attainment"].samples
                if s.labels["tenant"] == "new"]  # nothing evaluated: absent, not 0 or 1
    assert value(families, "saga_workflow_slowdown_count", tenant="new") == 0


def test_scraping_takes_the_token_when_one_is_set(settings: Any) -> None:
    settings.SAGA_METRICS_TOKEN = "scrape-secret"
    assert Client().get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401
    assert scrape(HTTP_AUTHORIZATION="Bearer scrape-secret")

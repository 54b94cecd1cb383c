"""The control plane's Prometheus endpoint, ``/metrics`` (``saga_`` prefix).

Series are computed at scrape time from PostgreSQL, so every control-plane process answers with
the cluster-wide figures (no per-process counters that a load balancer would split between
scrapes). Labels are bounded: tenants, states, tiers, kinds, policy and hook names, node
statuses; never a workflow or a call.

Counters and histograms (``*_total``, ``saga_workflow_slowdown``, ``saga_gateway_*_seconds``)
are the cumulative totals of the newest SLO series point of each tenant (``controlplane.slo.
series``, written every ``SAGA_SLO_INTERVAL_S``) plus what was recorded since that point, so a
scrape reads at most one interval of raw rows. Workflow counts start from everything recorded;
call, token, routing, latency and quota-rejection counts from the tenant's first series point.

======================================  =========  ========================================
series                                  type       labels, meaning
======================================  =========  ========================================
saga_tenant_slo_attainment              gauge      tenant, window (``1h``, ``cumulative``):
                                                   met / (met + missed); absent while none
saga_tenant_slo_objective_met           gauge      tenant: 1 when cumulative attainment
                                                   reaches the tenant's slo_percentile
saga_tenant_slo_target_slowdown         gauge      tenant: its slo_slowdown
saga_tenant_slo_target_percentile       gauge      tenant: its slo_percentile
saga_workflows_finished_total           counter    tenant, state, slo (met, missed,
                                                   unevaluable, excluded)
saga_workflow_slowdown                  histogram  tenant: TCT / isolated time of evaluated
                                                   completed workflows
saga_workflows_active                   gauge      tenant, state: unfinished workflows
saga_gateway_calls_total                counter    tenant, result (completed, not_completed)
saga_gateway_tokens_total               counter    tenant, kind (prompt, cached, output)
saga_gateway_call_latency_seconds       histogram  tenant: gateway receipt to recorded end,
                                                   completed calls
saga_gateway_overhead_seconds           histogram  tenant: added by the gateway before the
                                                   node is asked (admission, quotas, routing)
saga_routing_decisions_total            counter    policy (active routing policy), outcome
                                                   (new, home, moved)
saga_quota_rejections_total             counter    tenant, quota
saga_nodes                              gauge      status
saga_policy_activations_total           counter    kind, rollback (true, false)
saga_policy_activation_outcomes         gauge      kind, outcome (pending, applied, rejected):
                                                   nodes' answers to the current activation
saga_policy_failures_total              counter    tier, kind, policy, hook
======================================  =========  ========================================

Who may scrape: with ``SAGA_METRICS_TOKEN`` set, requests must carry
``Authorization: Bearer <token>``; without it only loopback clients (a sidecar, a local
Prometheus) are answered.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector


class ControlPlaneCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        from controlplane.nodes.models import Node, NodeStatus
        from controlplane.policies.failures import failure_counts

        failures = CounterMetricFamily(
            "saga_policy_failures", "Policies that raised at run time and were replaced by "
            "their fallback, by where they ran", labels=["tier", "kind", "policy", "hook"])
        for tier, kind, policy, hook, count in failure_counts():
            failures.add_metric([tier, kind, policy, hook], count)
        yield failures
        nodes = GaugeMetricFamily("saga_nodes", "Registered nodes by status", labels=["status"])
        counts = dict(Node.objects.values_list("status").annotate(n=Count("id")))
        for status in NodeStatus.values:
            nodes.add_metric([status], counts.get(status, 0))
        yield nodes
        yield from policy_metrics()
        yield from slo_metrics()


def policy_metrics() -> Iterator[Metric]:
    from controlplane.nodes.models import NodePolicyState
    from controlplane.policies.models import PolicyActivation, PolicyKind

    activations = CounterMetricFamily(
        "saga_policy_activations", "Policy activations (rollbacks included)",
        labels=["kind", "rollback"])
    rows = dict(((k, r), n) for k, r, n in PolicyActivation.objects.values_list(
        "kind", "is_rollback").annotate(n=Count("id")))
    for kind in PolicyKind.values:
        for rollback in (False, True):
            activations.add_metric([kind, str(rollback).lower()], rows.get((kind, rollback), 0))
    yield activations
    outcomes = GaugeMetricFamily(
        "saga_policy_activation_outcomes", "Nodes' answers to the current activation of each "
        "policy kind", labels=["kind", "outcome"])
    states = dict(((k, st), n) for k, st, n in NodePolicyState.objects.values_list(
        "kind", "status").annotate(n=Count("id")))
    for kind in PolicyKind.values:
        for outcome in ("pending", "applied", "rejected"):
            outcomes.add_metric([kind, outcome], states.get((kind, outcome), 0))
    yield outcomes


def _histogram(name: str, doc: str, buckets: tuple[float, ...],
               per_tenant: Mapping[str, Mapping[str, Any]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["tenant"])
    for tenant, hist in per_tenant.items():
        counts = list(hist.get("counts") or [])
        counts += [0] * (len(buckets) + 1 - len(counts))
        running, cumulative = 0, []
        for bound, n in zip([*map(str, buckets), "+Inf"], counts, strict=False):
            running += n
            cumulative.append((bound, running))
        family.add_metric([tenant], cumulative, sum_value=float(hist.get("sum", 0.0)))
    return family


def tenant_totals() -> dict[str, dict[str, Any]]:
    """Each tenant's cumulative totals: its newest finest-tier point plus what came after."""
    from controlplane.slo import series
    from controlplane.slo.models import SloPoint
    from controlplane.tenants.models import Tenant

    now = timezone.now()
    resolution = series.tiers()[0][0]
    policy = series.routing_policy()
    out: dict[str, dict[str, Any]] = {}
    for tenant in Tenant.objects.all():
        last = (SloPoint.objects.filter(tenant=tenant, resolution_s=resolution)
                .order_by("-window_end").first())
        if last is None:
            _figures, totals = series.window(tenant.pk, series.EPOCH, now, policy)
        else:
            _figures, tail = series.window(tenant.pk, last.window_end, now, policy)
            totals = series.merge(last.totals, tail)
        out[tenant.slug] = {"tenant": tenant, **totals}
    return out


def slo_metrics() -> Iterator[Metric]:
    from controlplane.slo import series
    from controlplane.workflows.models import SloStatus, Workflow
    from controlplane.workflows.states import TERMINAL_STATES, WorkflowState

    totals = tenant_totals()
    attainment = GaugeMetricFamily(
        "saga_tenant_slo_attainment", "Share of the tenant's evaluated workflows (completed or "
        "abandoned) whose slowdown met its SLO; unevaluable ones are not counted as met",
        labels=["tenant", "window"])
    objective = GaugeMetricFamily(
        "saga_tenant_slo_objective_met", "1 when the tenant's cumulative attainment reaches its "
        "slo_percentile", labels=["tenant"])
    target = GaugeMetricFamily("saga_tenant_slo_target_slowdown",
                               "The tenant's SLO: slowdown target", labels=["tenant"])
    target_pct = GaugeMetricFamily("saga_tenant_slo_target_percentile",
                                   "The tenant's SLO: share of tasks (percent)", labels=["tenant"])
    finished = CounterMetricFamily(
        "saga_workflows_finished", "Workflows that ended, by final state and SLO status",
        labels=["tenant", "state", "slo"])
    recent = dict(((slug, st), n) for slug, st, n in Workflow.objects.filter(
        finished_at__gte=timezone.now() - timedelta(hours=1)).values_list(
            "tenant__slug", "slo_status").annotate(n=Count("id")))
    for slug, data in totals.items():
        tenant = data["tenant"]
        target.add_metric([slug], tenant.slo_slowdown)
        target_pct.add_metric([slug], tenant.slo_percentile)
        for key, n in sorted(data.get("finished", {}).items()):
            state, _, slo = key.partition(":")
            finished.add_metric([slug, state, slo], n)
        cum = series.cumulative(data, tenant.slo_percentile)
        if cum["cum_attainment"] is not None:
            attainment.add_metric([slug, "cumulative"], cum["cum_attainment"])
            objective.add_metric([slug], 1.0 if cum["objective_met"] else 0.0)
        met = recent.get((slug, SloStatus.MET.value), 0)
        missed = recent.get((slug, SloStatus.MISSED.value), 0)
        if met + missed:
            attainment.add_metric([slug, "1h"], met / (met + missed))
    yield from (attainment, objective, target, target_pct, finished)
    yield _histogram("saga_workflow_slowdown", "Slowdown (TCT / isolated time) of completed "
                     "workflows whose SLO was evaluated", series.SLOWDOWN_BUCKETS,
                     {slug: d.get("slowdown", {}) for slug, d in totals.items()})
    active = GaugeMetricFamily("saga_workflows_active", "Unfinished workflows by state",
                               labels=["tenant", "state"])
    counts = dict(((slug, st), n) for slug, st, n in Workflow.objects.exclude(
        state__in=TERMINAL_STATES).values_list("tenant__slug", "state").annotate(n=Count("id")))
    for slug in totals:
        for state in WorkflowState.values:
            if state not in TERMINAL_STATES:
                active.add_metric([slug, state], counts.get((slug, state), 0))
    yield active
    calls = CounterMetricFamily("saga_gateway_calls", "Calls through the gateway that ended",
                                labels=["tenant", "result"])
    tokens = CounterMetricFamily("saga_gateway_tokens", "Tokens of the calls that ended",
                                 labels=["tenant", "kind"])
    rejections = CounterMetricFamily("saga_quota_rejections", "Requests refused by a quota "
                                     "(429)", labels=["tenant", "quota"])
    routing: dict[tuple[str, str], int] = {}
    for slug, data in totals.items():
        n_calls = data.get("calls", {})
        calls.add_metric([slug, "completed"], n_calls.get("all", 0) - n_calls.get("failed", 0))
        calls.add_metric([slug, "not_completed"], n_calls.get("failed", 0))
        for kind in ("prompt", "cached", "output"):
            tokens.add_metric([slug, kind], data.get("tokens", {}).get(kind, 0))
        for quota in ("max_concurrent_workflows", "tokens_per_minute"):
            rejections.add_metric([slug, quota], data.get("quota", {}).get(quota, 0))
        for key, n in data.get("routing", {}).items():
            policy, _, outcome = key.rpartition(":")
            routing[(policy, outcome)] = routing.get((policy, outcome), 0) + n
    yield from (calls, tokens, rejections)
    yield _histogram("saga_gateway_call_latency_seconds", "Completed calls: from the gateway "
                     "receiving the request to recording its end", series.LATENCY_BUCKETS,
                     {slug: d.get("call_latency", {}) for slug, d in totals.items()})
    yield _histogram("saga_gateway_overhead_seconds", "Time the gateway adds before the node is "
                     "asked (admission, quotas, routing, recording the call)",
                     series.OVERHEAD_BUCKETS,
                     {slug: d.get("overhead", {}) for slug, d in totals.items()})
    decisions = CounterMetricFamily(
        "saga_routing_decisions", "Gateway routing decisions by the routing policy active "
        "then: new (a workflow's first call), home (its previous call's node), moved",
        labels=["policy", "outcome"])
    for (policy, outcome), n in sorted(routing.items()):
        decisions.add_metric([policy, outcome], n)
    yield decisions


def _authorized(request: HttpRequest) -> bool:
    token = getattr(settings, "SAGA_METRICS_TOKEN", "") or ""
    if token:
        header = request.headers.get("Authorization", "")
        presented = header[7:].strip() if header.lower().startswith("bearer ") else ""
        return hmac.compare_digest(presented.encode(), token.encode())
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not _authorized(request):
        return HttpResponse("scraping needs the metrics token (SAGA_METRICS_TOKEN)\n",
                            status=401, content_type="text/plain",
                            headers={"WWW-Authenticate": 'Bearer realm="saga-metrics"'})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControlPlaneCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

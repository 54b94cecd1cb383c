"""The per-tenant SLO series: beat aggregation (by a real Celery worker), tiers and pruning,
the REST endpoints and the Channels push."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from celery.contrib.testing.worker import start_worker
from channels.layers import get_channel_layer
from django.test import Client
from django.utils import timezone

from controlplane.celery import app as celery_app
from controlplane.nodes.models import Node
from controlplane.slo import series
from controlplane.slo.models import QuotaRejection, SloPoint
from controlplane.slo.rejections import record_rejection
from controlplane.slo.tasks import aggregate_slo_series
from controlplane.tenants.models import ApiKey, Tenant
from controlplane.workflows.states import WorkflowState
from tests.controlplane.slo_helpers import recorded_workflow, sim_node

CALLS = [(2000, 0, 100), (2400, 2096, 120)]


def activity(tenant: Tenant, end: Any) -> None:
    """Two met, one queued (missed), one abandoned (missed), one unevaluable, one cancelled."""
    node = sim_node(f"sim-{tenant.slug}")
    mystery = Node.objects.create(name=f"mystery-{tenant.slug}", engine="vllm")
    recorded_workflow(tenant, node, CALLS, end=end)
    recorded_workflow(tenant, node, CALLS, end=end)
    recorded_workflow(tenant, node, CALLS, call_s=30.0, end=end)
    recorded_workflow(tenant, node, CALLS, end=end, finish=WorkflowState.ABANDONED)
    recorded_workflow(tenant, mystery, CALLS, end=end)
    recorded_workflow(tenant, node, CALLS, end=end, finish=WorkflowState.CANCELLED)


@pytest.mark.django_db(transaction=True)
def test_the_beat_task_run_by_a_worker_writes_points(redis_url: str, settings: Any) -> None:
    assert not celery_app.conf.task_always_eager
    settings.SAGA_SLO_TIERS = ["10:86400", "60:2592000"]
    tenant = Tenant.objects.create(slug="acme", name="Acme", slo_slowdown=2.0,
                                   slo_percentile=50.0)
    quiet = Tenant.objects.create(slug="quiet", name="Quiet")
    # the worker's run must close the minute the activity is in: not too near its end
    if (timezone.now() - series._aligned(timezone.now(), 60)).total_seconds() > 45:
        time.sleep(16)
    minute = series._aligned(timezone.now(), 60)
    activity(tenant, minute - timedelta(seconds=25))
    record_rejection(tenant.pk, "max_concurrent_workflows", minute - timedelta(seconds=25))
    record_rejection(tenant.pk, "max_concurrent_workflows", minute - timedelta(seconds=25))

    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        written = aggregate_slo_series.delay().get(timeout=30)
    # one 10 s point and one 1 min point per tenant (a tier's first window)
    assert written == 4
    point = SloPoint.objects.get(tenant=tenant, resolution_s=60)
    assert point.window_end == minute
    assert (point.completed, point.abandoned, point.cancelled) == (4, 1, 1)
    assert (point.slo_met, point.slo_missed, point.slo_unevaluable) == (2, 2, 1)
    assert point.attainment == pytest.approx(0.5)  # the unevaluable one is not counted as met
    assert point.cum_attainment == pytest.approx(0.5) and point.objective_met is True
    assert point.slowdown_p50 is not None and point.slowdown_p99 >= point.slowdown_p50
    assert point.tct_p95_s >= point.tct_p50_s > 0
    assert point.calls == 12 and point.cached_tokens == 6 * 2096
    assert point.cached_share == pytest.approx(2096 / 4400)
    assert point.quota_rejections == 2
    assert SloPoint.objects.get(tenant=quiet, resolution_s=10).completed == 0
    recent = SloPoint.objects.get(tenant=tenant, resolution_s=10)
    assert recent.completed == 0 and recent.cum_slo_met == 2  # starts from what came before


@pytest.mark.django_db
def test_windows_are_aligned_caught_up_and_cumulative(settings: Any) -> None:
    settings.SAGA_SLO_TIERS = ["10:86400"]
    tenant = Tenant.objects.create(slug="acme", name="Acme", slo_slowdown=2.0)
    t0 = series._aligned(timezone.now(), 10) - timedelta(minutes=30)
    recorded_workflow(tenant, sim_node(), CALLS, end=t0 - timedelta(seconds=3))  # before
    series.aggregate(now=t0 + timedelta(seconds=1))
    first = SloPoint.objects.get(tenant=tenant)
    assert (first.window_start, first.window_end) == (t0 - timedelta(seconds=10), t0)
    assert first.completed == 1 and first.cum_slo_met == 1

    recorded_workflow(tenant, sim_node("sim-2"), CALLS, end=t0 + timedelta(seconds=15))
    series.aggregate(now=t0 + timedelta(seconds=45))
    points = list(SloPoint.objects.filter(tenant=tenant).order_by("window_start"))
    assert [p.window_end - p.window_start for p in points[1:]] == [timedelta(seconds=10)] * 4
    assert [p.completed for p in points] == [1, 0, 1, 0, 0]
    assert [p.cum_slo_met for p in points] == [1, 1, 2, 2, 2]

    # 20 minutes later: at most MAX_CATCH_UP points, the first one covering the gap
    series.aggregate(now=t0 + timedelta(minutes=20))
    newest = list(SloPoint.objects.filter(tenant=tenant).order_by("window_start"))[5:]
    assert len(newest) == series.MAX_CATCH_UP
    assert newest[0].window_start == points[-1].window_end
    assert newest[-1].cum_slo_met == 2
    assert series.aggregate(now=t0 + timedelta(minutes=20)) == []  # nothing new closed


@pytest.mark.django_db
def test_old_points_are_pruned_tier_by_tier_but_the_newest_is_kept(settings: Any) -> None:
    settings.SAGA_SLO_TIERS = ["10:60", "300:3600"]
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    now = timezone.now()
    series.aggregate(now=now - timedelta(hours=3))
    assert SloPoint.objects.filter(tenant=tenant).count() == 2
    series.prune(now)
    assert SloPoint.objects.filter(tenant=tenant).count() == 2  # each tier's newest survives
    series.aggregate(now=now)
    by_tier = {res: SloPoint.objects.filter(tenant=tenant, resolution_s=res)
               for res in (10, 300)}
    assert all(rows.filter(window_end__lt=now - timedelta(seconds=keep)).count() == 0
               for rows, keep in ((by_tier[10], 60), (by_tier[300], 3600)))
    record_rejection(tenant.pk, "tokens_per_minute", now - timedelta(days=3))
    series.prune(now)
    assert not QuotaRejection.objects.exists()


@pytest.mark.django_db
def test_rest_endpoints_tenant_sees_its_own_admin_sees_any(settings: Any) -> None:
    settings.SAGA_SLO_TIERS = ["10:86400", "300:2592000"]
    acme = Tenant.objects.create(slug="acme", name="Acme", slo_slowdown=2.0)
    other = Tenant.objects.create(slug="other", name="Other")
    boundary = series._aligned(timezone.now(), 300)
    activity(acme, boundary - timedelta(seconds=15))
    series.aggregate(now=boundary + timedelta(seconds=1))
    _key, secret = ApiKey.issue(acme, "agents")
    tenant_api = Client(headers={"Authorization": f"Bearer {secret}"})
    mine = tenant_api.get("/api/slo").json()
    assert mine["tenant"] == "acme" and mine["slo"] == "p95 <= 2x"
    assert mine["latest"]["resolution_s"] == 10
    got = tenant_api.get("/api/slo/series", {"resolution": 300}).json()
    assert got["tenant"] == "acme" and got["resolution_s"] == 300
    assert got["points"][-1]["slo_unevaluable"] == 1
    assert got["points"][-1]["attainment"] == pytest.approx(0.5)
    assert tenant_api.get("/api/slo/series", {"resolution": 7}).json()["resolution_s"] == 10
    assert tenant_api.get("/api/slo/series", {"resolution": 0}).status_code == 422
    assert tenant_api.get("/api/admin/slo").status_code == 403

    _admin, admin_secret = ApiKey.issue(other, "ops", ["admin"])
    admin_api = Client(headers={"Authorization": f"Bearer {admin_secret}"})
    everyone = admin_api.get("/api/admin/slo").json()
    assert [s["tenant"] for s in everyone] == ["acme", "other"]
    series_of_acme = admin_api.get("/api/admin/tenants/acme/slo/series").json()
    assert series_of_acme["resolution_s"] == 10 and series_of_acme["points"]
    assert admin_api.get("/api/admin/tenants/nobody/slo/series").status_code == 404
    assert Client().get("/api/slo").status_code == 401


@pytest.mark.django_db(transaction=True)
def test_each_new_point_is_pushed_to_the_channels_groups(redis_url: str, settings: Any) -> None:
    settings.SAGA_SLO_TIERS = ["10:86400"]
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    layer = get_channel_layer()
    everyone = async_to_sync(layer.new_channel)()
    mine = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(series.SERIES_GROUP, everyone)
    async_to_sync(layer.group_add)(series.tenant_group(tenant.pk), mine)
    try:
        series.aggregate()
        for channel in (everyone, mine):
            message = async_to_sync(layer.receive)(channel)
            assert message["type"] == "slo.point"
            assert message["point"]["tenant"] == "acme"
            assert message["point"]["resolution_s"] == 10
    finally:
        async_to_sync(layer.group_discard)(series.SERIES_GROUP, everyone)
        async_to_sync(layer.group_discard)(series.tenant_group(tenant.pk), mine)


@pytest.mark.django_db(transaction=True)
def test_the_websocket_pushes_a_tenants_points_to_its_key(redis_url: str,
                                                           settings: Any) -> None:
    from channels.testing import WebsocketCommunicator

    from controlplane.asgi import application

    settings.SAGA_SLO_TIERS = ["10:86400"]
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    Tenant.objects.create(slug="other", name="Other")
    _key, secret = ApiKey.issue(tenant, "agents")

    async def scenario() -> list[dict[str, Any]]:
        refused = WebsocketCommunicator(application, "/ws/slo/")
        connected, code = await refused.connect()
        await refused.disconnect()  # ended within the test (tests.sockets.refused says why)
        assert not connected and code == 4401
        socket = WebsocketCommunicator(application, "/ws/slo/",
                                       headers=[(b"authorization", f"Bearer {secret}".encode())])
        connected, _ = await socket.connect()
        assert connected
        from channels.db import database_sync_to_async

        await database_sync_to_async(series.aggregate)()
        frames = [await socket.receive_json_from(timeout=5)]
        assert await socket.receive_nothing(timeout=0.5)  # not the other tenant's point
        await socket.disconnect()
        return frames

    frames = async_to_sync(scenario)()
    assert [f["point"]["tenant"] for f in frames] == ["acme"]

"""The stale-node sweep, executed by a real Celery worker over the Redis broker."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from django.utils import timezone

from controlplane.celery import app as celery_app
from controlplane.nodes.models import Node, NodeStatus
from controlplane.nodes.tasks import sweep_stale_nodes

pytestmark = pytest.mark.django_db(transaction=True)


def node(name: str, status: str, heartbeat_age_s: float | None) -> Node:
    last = None if heartbeat_age_s is None else timezone.now() - timedelta(seconds=heartbeat_age_s)
    return Node.objects.create(name=name, status=status, last_heartbeat_at=last)


def test_stale_nodes_are_marked_down_by_a_worker(redis_url: str, settings: Any) -> None:
    assert settings.CELERY_BROKER_URL.startswith("redis://")
    assert not celery_app.conf.task_always_eager
    settings.NODE_HEARTBEAT_TIMEOUT_S = 15
    fresh = node("fresh", NodeStatus.UP, 2)
    stale = node("stale", NodeStatus.UP, 60)
    draining = node("draining", NodeStatus.DRAINING, 60)
    never = node("never-connected", NodeStatus.PENDING, None)

    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        result = sweep_stale_nodes.delay()
        marked = result.get(timeout=20)

    assert sorted(marked) == ["draining", "stale"]
    statuses = dict(Node.objects.values_list("name", "status"))
    assert statuses == {
        fresh.name: NodeStatus.UP,
        stale.name: NodeStatus.DOWN,
        draining.name: NodeStatus.DOWN,
        never.name: NodeStatus.PENDING,
    }


def test_a_node_that_heartbeats_again_comes_back_up() -> None:
    gone = node("gone", NodeStatus.UP, 600)
    assert sweep_stale_nodes() == ["gone"]
    gone.refresh_from_db()
    gone.record_heartbeat({"running": 1})
    gone.refresh_from_db()
    assert gone.status == NodeStatus.UP
    assert sweep_stale_nodes() == []


def test_beat_schedules_the_sweep_from_the_database(redis_url: str) -> None:
    """celery beat runs on django-celery-beat's DatabaseScheduler, seeded from settings."""
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import DatabaseScheduler

    assert celery_app.conf.beat_scheduler.endswith("DatabaseScheduler")
    DatabaseScheduler(app=celery_app)
    task = PeriodicTask.objects.get(name="sweep-stale-nodes")
    assert task.task == "controlplane.nodes.tasks.sweep_stale_nodes"
    assert task.interval is not None and task.enabled

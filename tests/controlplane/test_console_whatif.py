"""The console's what-if page without a browser: the form refuses what the API refuses, on the
field it names; a run started from it is audited, runs in process and shows its results and
report; cancelling; the page needs staff and the what-if permission; the run's websocket sends
its state (tests/browser drives the page in Chromium)."""

from __future__ import annotations

import time
from datetime import UTC, timedelta
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from controlplane.audit.models import AuditEvent
from controlplane.console import consumers
from controlplane.whatif.models import RunStatus, WhatIfRun
from tests.whatif.traffic import record_traffic

FORMAT = "%Y-%m-%dT%H:%M"


@pytest.fixture
def traffic(db: None) -> tuple[str, str]:
    start = timezone.now() - timedelta(minutes=20)
    record_traffic(start, {"acme": 2, "noisy": 3})
    since = (start - timedelta(minutes=1)).astimezone(UTC)
    until = (start + timedelta(minutes=5)).astimezone(UTC)
    return since.strftime(FORMAT), until.strftime(FORMAT)


def staff(superuser: bool = True) -> Client:
    user = get_user_model().objects.create_user(
        "ops-admin" if superuser else "viewer", password="x", is_staff=True,
        is_superuser=superuser)
    client = Client()
    client.force_login(user)
    return client


def form(window: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {"since": window[0], "until": window[1], "policies": "saga, baseline", "loads": "1",
            "cluster_mode": "fixed", "gpus": "2", "profile": "h100-llama3-8b", **extra}


@pytest.mark.parametrize(("extra", "field", "words"), [
    ({"until": "2020-01-01T00:00"}, "until", ""),
    ({"policies": "saga, nope"}, "policies", "unknown policy set 'nope'"),
    ({"policies": ""}, "policies", ""),
    ({"loads": "1, fast"}, "loads", "'fast' is not a number"),
    ({"loads": "0"}, "loads", "loads.0"),
    ({"gpus": "", "profile": "h100-llama3-8b"}, "gpus", ""),
    ({"tenants": ["nobody"]}, "tenants", ""),
])
def test_the_form_refuses_what_the_api_refuses_on_the_field(
        traffic: tuple[str, str], extra: dict[str, Any], field: str, words: str) -> None:
    answer = staff().post("/console/whatif/", form(traffic, **extra))
    assert answer.status_code == 422, answer.content[:300]
    errors = answer.context["form"].errors
    assert field in errors, errors
    assert words in " ".join(errors[field])
    assert not WhatIfRun.objects.exists() and not AuditEvent.objects.filter(
        action="whatif.start").exists()


@pytest.mark.django_db(transaction=True)
def test_a_run_started_from_the_console_runs_and_shows_its_results(
        traffic: tuple[str, str], settings: Any) -> None:
    settings.SAGA_WHATIF_IN_PROCESS = True  # as in saga demo: no Celery worker
    client = staff()
    page = client.get("/console/whatif/")
    assert page.status_code == 200 and b'data-testid="whatif-form"' in page.content
    answer = client.post("/console/whatif/", form(traffic, tenants=["acme", "noisy"]))
    assert answer.status_code == 302, answer.content[:500]
    run = WhatIfRun.objects.get()
    assert answer.url == f"/console/whatif/{run.pk}/"
    assert run.policies == ["saga", "baseline"] and run.tenants == ["acme", "noisy"]
    assert run.actor == "ops-admin"
    assert AuditEvent.objects.filter(action="whatif.start", actor="ops-admin").count() == 1
    deadline = time.monotonic() + 60
    while not (run.is_finished and run.report_html):
        assert time.monotonic() < deadline, run.status
        time.sleep(0.2)
        run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    detail = client.get(f"/console/whatif/{run.pk}/")
    initial = detail.context["initial"]
    assert list(initial["results"]["policies"]) == ["saga", "baseline"]
    assert [t["status"] for t in initial["tasks"]] == ["succeeded", "succeeded"]
    assert b'data-testid="rollout-saga"' in detail.content
    saga = next(r for r in detail.context["rollouts"] if r["name"] == "saga")
    assert "routing:saga" in saga["open"] and "fairness:afs" in saga["open"]
    report = client.get(f"/console/whatif/{run.pk}/report/")
    assert report.status_code == 200 and b"Plotly" in report.content
    assert report.headers["X-Frame-Options"] == "SAMEORIGIN"
    policies = client.get(f"/console/policies/?open={saga['open']}")
    opened = {(k["kind"], p["name"]) for k in policies.context["kinds"] for p in k["policies"]
              if p["open"]}
    assert ("routing", "saga") in opened and ("fairness", "afs") in opened
    # a finished run cannot be cancelled; the page says so and nothing is audited
    client.post(f"/console/whatif/{run.pk}/cancel/")
    assert not AuditEvent.objects.filter(action="whatif.cancel").exists()
    listing = client.get("/console/whatif/")
    assert f'data-run="{run.pk}"'.encode() in listing.content


def test_cancelling_a_queued_run_is_audited(traffic: tuple[str, str], settings: Any) -> None:
    settings.SAGA_WHATIF_IN_PROCESS = False  # queued on Celery's broker, which nobody serves
    settings.CELERY_TASK_ALWAYS_EAGER = False
    from controlplane.whatif import jobs

    run = jobs.create_run(jobs.RunSpec(
        since=timezone.now() - timedelta(minutes=30), until=timezone.now(), policies=["saga"]),
        actor="someone")
    client = staff()
    answer = client.post(f"/console/whatif/{run.pk}/cancel/")
    assert answer.status_code == 302
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert AuditEvent.objects.filter(action="whatif.cancel").count() == 1


def test_the_pages_need_staff_and_starting_needs_the_permission(traffic: tuple[str, str]) -> None:
    anonymous = Client().get("/console/whatif/")
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous.url
    viewer = staff(superuser=False)
    page = viewer.get("/console/whatif/")
    assert page.status_code == 200 and b'data-testid="whatif-form"' not in page.content
    assert viewer.post("/console/whatif/", form(traffic)).status_code == 403
    assert not WhatIfRun.objects.exists()
    assert Client().get("/console/whatif/1/report/").status_code == 302


@pytest.mark.django_db(transaction=True)
async def test_the_run_socket_sends_the_runs_state() -> None:
    from asgiref.sync import sync_to_async

    from controlplane.whatif.models import WhatIfTask

    def setup() -> tuple[Any, int]:
        # rows written directly: jobs.create_run would announce the run from this thread onto
        # the test's event loop, a send this test does not wait for
        user = get_user_model().objects.create_user("ops", password="x", is_staff=True)
        now = timezone.now()
        run = WhatIfRun.objects.create(actor="ops", since=now - timedelta(minutes=30),
                                       until=now, policies=["saga", "baseline"],
                                       cluster={"mode": "as-recorded"}, loads=[1.0])
        for index, policy in enumerate(run.policies):
            WhatIfTask.objects.create(run=run, index=index, policy=policy, load=1.0)
        return user, run.pk

    user, run_id = await sync_to_async(setup)()
    communicator = WebsocketCommunicator(consumers.WhatIfRunConsumer.as_asgi(),
                                         f"/ws/ui/whatif/{run_id}/")
    communicator.scope["user"] = user
    communicator.scope["url_route"] = {"kwargs": {"run_id": run_id}}
    connected, _ = await communicator.connect()
    assert connected
    message = await communicator.receive_json_from(timeout=5)
    assert message["type"] == "whatif" and message["run"]["id"] == run_id
    assert [t["policy"] for t in message["run"]["tasks"]] == ["saga", "baseline"]
    await communicator.disconnect()
    missing = WebsocketCommunicator(consumers.WhatIfRunConsumer.as_asgi(), "/ws/ui/whatif/0/")
    missing.scope["user"] = user
    missing.scope["url_route"] = {"kwargs": {"run_id": 999_999}}
    connected, code = await missing.connect()
    await missing.disconnect()  # ended within the test (tests.sockets.refused says why)
    assert not connected and code == 4404

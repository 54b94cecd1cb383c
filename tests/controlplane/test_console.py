"""The console without a browser: forms built from plugin schemas, the tenant form's per-field
errors, page access, the websockets' access rules and what they send (tests/browser drives
the pages themselves in Chromium)."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.http import QueryDict
from django.test import Client

from controlplane.console import consumers, events
from controlplane.console.forms import TenantForm, param_fields, parse_params
from controlplane.policies.catalogue import registry
from controlplane.tenants.models import Tenant


def schema(kind: str, name: str) -> dict[str, Any]:
    return registry().get(kind, name).params_schema()


def test_parameter_forms_follow_the_plugins_schema() -> None:
    fields = {f.name: f for f in param_fields(schema("eviction", "aeg"))}
    scale = fields["attention_scale_tokens"]
    assert (scale.kind, scale.nullable, scale.exclusive_minimum) == ("number", True, 0.0)
    assert fields["min_p_next_call"].range_text == ">= 0, <= 1"
    assert fields["retention_factor"].default == 3.0 and fields["retention_factor"].description
    assert {f.kind for f in param_fields(schema("fairness", "fcfs"))} == {"enum"}
    ttl = {f.name: f for f in param_fields(schema("eviction", "ttl"))}
    assert ttl["per_tool_ttl_s"].kind == "mapping"


def test_parsed_parameters_are_what_the_form_says() -> None:
    fields = param_fields(schema("eviction", "ttl"))
    post = QueryDict(mutable=True)
    post["p.ttl_s"] = "30"
    post.setlist("p.per_tool_ttl_s.key", ["bash", "", "pytest"])
    post.setlist("p.per_tool_ttl_s.value", ["90", "", "12.5"])
    params, ok = parse_params(fields, post)
    assert ok and params == {"ttl_s": 30.0, "per_tool_ttl_s": {"bash": 90.0, "pytest": 12.5}}

    fields = param_fields(schema("eviction", "aeg"))
    post = QueryDict(mutable=True)
    post["p.retention_factor"] = "lots"
    post["p.attention_scale_tokens"] = ""  # nullable: not set
    params, ok = parse_params(fields, post)
    by_name = {f.name: f for f in fields}
    assert not ok and "not a number" in by_name["retention_factor"].error
    assert params["attention_scale_tokens"] is None
    assert "max_retention_s" not in params  # left empty: the plugin's default


@pytest.mark.django_db
def test_tenant_form_errors_name_their_fields() -> None:
    form = TenantForm({"slug": "no spaces", "name": "", "weight": "0", "slo_slowdown": "0.9",
                       "slo_percentile": "101", "max_concurrent_workflows": "-2"})
    assert not form.is_valid()
    assert set(form.errors) == {"slug", "name", "weight", "slo_slowdown", "slo_percentile",
                                "max_concurrent_workflows"}
    Tenant.objects.create(slug="acme", name="Acme")
    taken = TenantForm({"slug": "acme", "name": "Again", "weight": "1", "slo_slowdown": "2",
                        "slo_percentile": "95"})
    assert not taken.is_valid() and "exists already" in taken.errors["slug"][0]

    acme = Tenant.objects.get(slug="acme")
    edit = TenantForm({"slug": "renamed", "name": "Acme Corp", "weight": "4",
                       "slo_slowdown": "3", "slo_percentile": "90", "is_active": "on"},
                      instance=acme)
    assert edit.is_valid(), edit.errors
    saved = edit.save()
    assert (saved.slug, saved.name, saved.weight) == ("acme", "Acme Corp", 4.0)  # slug kept


@pytest.mark.django_db
def test_pages_need_a_staff_user_and_the_root_is_the_console() -> None:
    client = Client()
    assert client.get("/").headers["Location"] == "/console/"
    answer = client.get("/console/policies/")
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/admin/login/")
    user = get_user_model().objects.create_user("plain", password="pw-123456789")
    client.force_login(user)
    assert client.get("/console/").status_code == 302  # logged in, not staff
    user.is_staff = True
    user.save()
    assert client.get("/console/").status_code == 200
    # staff without the policy permission may look but not activate
    answer = client.post("/console/policies/activate/", {"kind": "eviction", "name": "lru"})
    assert answer.status_code == 403
    assert client.get("/console/whatif/").status_code == 200  # looks; cannot start a run
    assert client.post("/console/whatif/", {"policies": "saga"}).status_code == 403


@pytest.mark.django_db
def test_swagger_sends_the_csrf_token_for_staff_sessions() -> None:
    admin = get_user_model().objects.create_superuser("root", "", "pw-123456789")
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    page = client.get("/api/docs").content.decode()
    assert 'data-api-csrf="true"' in page
    token = page.split('data-csrf-token="')[1].split('"')[0]
    assert token
    answer = client.post("/api/admin/tenants", {"slug": "from-docs", "name": "Docs"},
                         content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert answer.status_code == 201, answer.content


def communicator(consumer: Any, path: str, user: Any, **kwargs: Any) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(consumer.as_asgi(), path)
    comm.scope["user"] = user
    comm.scope["url_route"] = {"kwargs": kwargs}
    return comm


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_console_sockets_are_for_staff_and_send_the_page_state(redis_url: str) -> None:
    from django.contrib.auth.models import AnonymousUser

    make = database_sync_to_async(get_user_model().objects.create_user)
    staff = await make("ops", password="pw-123456789", is_staff=True)
    plain = await make("someone", password="pw-123456789")
    for user, code in ((AnonymousUser(), consumers.CLOSE_UNAUTHORIZED),
                       (plain, consumers.CLOSE_FORBIDDEN)):
        comm = communicator(consumers.ClusterConsumer, "/ws/ui/nodes/", user)
        connected, close_code = await comm.connect()
        await comm.disconnect()  # ended within the test (tests.sockets.refused says why)
        assert not connected and close_code == code

    comm = communicator(consumers.WorkflowConsumer, "/ws/ui/workflows/999/", staff,
                        workflow_id=999)
    connected, close_code = await comm.connect()
    await comm.disconnect()
    assert not connected and close_code == consumers.CLOSE_NOT_FOUND

    comm = communicator(consumers.WorkflowListConsumer, "/ws/ui/workflows/", staff)
    assert (await comm.connect())[0]
    first = await comm.receive_json_from(timeout=5)
    assert first == {"type": "workflows", "rows": [], "count": 0}

    @sync_to_async
    def new_workflow() -> int:
        from controlplane.workflows import services

        tenant = Tenant.objects.create(slug="acme", name="Acme")
        workflow = services.create_workflow(tenant, "swe-agent", external_id="t-1")
        services.call_arrived(workflow)  # submitted -> running: announced to the pages
        return workflow.pk

    workflow_id = await new_workflow()
    update = await comm.receive_json_from(timeout=5)
    assert update["count"] == 1 and update["rows"][0]["id"] == workflow_id
    assert update["rows"][0]["state"] == "running"
    await comm.disconnect()

    comm = communicator(consumers.WorkflowConsumer, f"/ws/ui/workflows/{workflow_id}/", staff,
                        workflow_id=workflow_id)
    assert (await comm.connect())[0]
    detail = await comm.receive_json_from(timeout=5)
    assert detail["type"] == "workflow" and detail["workflow"]["external_id"] == "t-1"
    assert detail["forecast"]["state"] == "call" and 0 < detail["forecast"]["p_next_call"] <= 1
    await sync_to_async(events.send_now)([(events.workflow_group(workflow_id),
                                           {"type": "workflow.changed",
                                            "workflows": [workflow_id]})])
    again = await comm.receive_json_from(timeout=5)
    assert again["workflow"]["id"] == workflow_id
    await comm.disconnect()


@pytest.mark.asyncio
async def test_a_flush_left_by_a_stopped_loop_does_not_hold_back_announcements() -> None:
    """A loop that stopped with a flush scheduled (a test's server, a restarted worker) never
    runs it; announcements on the next loop must still go out."""
    import asyncio

    stale = asyncio.new_event_loop()
    stale.close()
    events._pending.clear()
    events._flush_loop = stale
    events.workflow_committed(41)
    assert events._flush_loop is asyncio.get_running_loop()
    await asyncio.sleep(events.COALESCE_S + 0.2)
    assert events._flush_loop is None and not events._pending

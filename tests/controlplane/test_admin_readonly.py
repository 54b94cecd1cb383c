"""Telemetry is the record, not a form: the admin shows workflows, calls, tool calls, learned
execution graphs and node-reported hardware read-only, and every change it still allows writes
an AuditEvent."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.test import Client, RequestFactory
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from controlplane.admin_audit import AuditedModelAdmin
from controlplane.audit.models import AuditEvent
from controlplane.nodes.models import Node, NodeStatus
from controlplane.tenants.models import ApiKey, Tenant
from controlplane.workflows.models import AgentTemplate, Call, CallOutcome, ToolCall, Workflow
from controlplane.workflows.states import WorkflowState

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser() -> Any:
    return get_user_model().objects.create_superuser("root", "", "pw-123456789")


@pytest.fixture
def admin_client(superuser: Any) -> Client:
    client = Client()
    client.force_login(superuser)
    return client


@pytest.fixture
def node() -> Node:
    return Node.objects.create(
        name="gpu-1", engine="vllm", model_name="llama-3-8b", gpu_model="H100", gpu_count=2,
        kv_capacity_tokens=500_000, address="https://gpu-1.example.com",
    )


@pytest.fixture
def completed(node: Node) -> Workflow:
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    template = AgentTemplate.objects.create(name="swe-agent", aeg_stats={"calls": {"mean": 3}})
    now = timezone.now()
    workflow = Workflow.objects.create(
        tenant=tenant, template=template, external_id="task-1", state=WorkflowState.COMPLETED,
        home_node=node, submitted_at=now - timedelta(seconds=10), started_at=now,
        finished_at=now, tct_s=10.0, est_isolated_s=5.0, slo_met=True,
    )
    call = Call.objects.create(workflow=workflow, seq=0, node=node, prompt_tokens=100,
                               cached_tokens=10, output_tokens=20, queued_at=now,
                               finished_at=now, outcome=CallOutcome.COMPLETED)
    ToolCall.objects.create(workflow=workflow, after_call=call, name="bash", started_at=now,
                            ended_at=now)
    return workflow


def _split(value: Any) -> tuple[str, str]:
    local = timezone.localtime(value)
    return local.strftime("%Y-%m-%d"), local.strftime("%H:%M:%S")


def _no_inline_forms(*prefixes: str) -> dict[str, str]:
    data = {}
    for prefix in prefixes:
        data |= {f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0",
                 f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000"}
    return data


# -- recorded telemetry cannot be edited ---------------------------------------------------


def test_a_completed_workflow_cannot_be_moved_to_another_tenant(
    admin_client: Client, completed: Workflow
) -> None:
    other = Tenant.objects.create(slug="other", name="Other")
    url = f"/admin/workflows/workflow/{completed.pk}/change/"
    page = admin_client.get(url)
    assert page.status_code == 200
    assert 'name="tenant"' not in page.content.decode()
    calls = completed.calls.count()
    tools = completed.tool_calls.count()
    response = admin_client.post(url, {
        "tenant": other.pk, "template": completed.template_id, "external_id": "renamed",
        "metadata": "{}", "hints": "{}", "home_node": "",
        **_no_inline_forms("calls", "tool_calls"),
        "calls-TOTAL_FORMS": str(calls), "calls-INITIAL_FORMS": str(calls),
        "tool_calls-TOTAL_FORMS": str(tools), "tool_calls-INITIAL_FORMS": str(tools),
        "calls-0-id": completed.calls.get().pk, "calls-0-workflow": completed.pk,
        "tool_calls-0-id": completed.tool_calls.get().pk, "tool_calls-0-workflow": completed.pk,
    })
    assert response.status_code == 403
    completed.refresh_from_db()
    assert completed.tenant.slug == "acme" and completed.external_id == "task-1"
    assert completed.home_node is not None


def test_workflows_cannot_be_added_or_deleted(admin_client: Client, completed: Workflow) -> None:
    assert admin_client.get("/admin/workflows/workflow/add/").status_code == 403
    delete = f"/admin/workflows/workflow/{completed.pk}/delete/"
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    admin_client.post("/admin/workflows/workflow/",
                      {"action": "delete_selected", "_selected_action": [completed.pk],
                       "post": "yes"})
    assert Workflow.objects.filter(pk=completed.pk).exists()
    # Nor through the tenant: its deletion would cascade to the workflow.
    tenant = completed.tenant
    admin_client.post(f"/admin/tenants/tenant/{tenant.pk}/delete/", {"post": "yes"})
    assert Tenant.objects.filter(pk=tenant.pk).exists()
    assert Workflow.objects.filter(pk=completed.pk).exists()


def test_a_calls_output_tokens_cannot_be_changed(admin_client: Client, completed: Workflow) -> None:
    call = completed.calls.get()
    url = f"/admin/workflows/call/{call.pk}/change/"
    assert admin_client.get(url).status_code == 200
    queued = _split(call.queued_at)
    finished = _split(call.finished_at)
    response = admin_client.post(url, {
        "workflow": completed.pk, "seq": 0, "node": call.node_id, "prompt_tokens": 100,
        "cached_tokens": 10, "output_tokens": 999999, "queued_at_0": queued[0],
        "queued_at_1": queued[1], "finished_at_0": finished[0], "finished_at_1": finished[1],
        "outcome": "completed", "finish_reason": "", "error": "",
    })
    assert response.status_code == 403
    call.refresh_from_db()
    assert call.output_tokens == 20
    assert admin_client.post(f"/admin/workflows/call/{call.pk}/delete/",
                             {"post": "yes"}).status_code == 403
    assert admin_client.get("/admin/workflows/call/add/").status_code == 403


def test_a_tool_call_cannot_be_changed(admin_client: Client, completed: Workflow) -> None:
    tool = completed.tool_calls.get()
    started = _split(tool.started_at)
    response = admin_client.post(f"/admin/workflows/toolcall/{tool.pk}/change/", {
        "workflow": completed.pk, "name": "forged", "started_at_0": started[0],
        "started_at_1": started[1],
    })
    assert response.status_code == 403
    tool.refresh_from_db()
    assert tool.name == "bash"


def test_learned_execution_graph_stats_cannot_be_changed(
    admin_client: Client, completed: Workflow
) -> None:
    template = completed.template
    url = f"/admin/workflows/agenttemplate/{template.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert 'name="aeg_stats"' not in page
    assert '<pre class="saga-json">{\n  &quot;calls&quot;: {\n' in page  # pretty-printed
    response = admin_client.post(url, {
        "name": "swe-agent", "description": "SWE-bench agent",
        "aeg_stats": '{"calls": {"mean": 99}}', "aeg_updated_at_0": "2020-01-01",
        "aeg_updated_at_1": "00:00:00",
    })
    assert response.status_code == 302
    template.refresh_from_db()
    assert template.aeg_stats == {"calls": {"mean": 3}} and template.aeg_updated_at is None
    assert template.description == "SWE-bench agent"
    event = AuditEvent.objects.get(action="agenttemplate.update")
    assert event.actor == "root"
    assert event.before["description"] == "" and event.after["description"] == "SWE-bench agent"


def test_node_hardware_cannot_be_changed_and_edits_are_audited(
    admin_client: Client, node: Node
) -> None:
    url = f"/admin/nodes/node/{node.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert 'name="kv_capacity_tokens"' not in page and 'name="address"' in page
    response = admin_client.post(url, {
        "name": "gpu-1", "engine": "sim", "address": "https://gpu-1b.example.com",
        "model_name": "forged", "gpu_model": "forged", "gpu_count": 8,
        "kv_capacity_tokens": 999999, "status": "up",
        **_no_inline_forms("policy_states"),
    })
    assert response.status_code == 302
    node.refresh_from_db()
    assert node.kv_capacity_tokens == 500_000 and node.gpu_count == 2
    assert node.engine == "vllm" and node.model_name == "llama-3-8b" and node.gpu_model == "H100"
    assert node.status == NodeStatus.PENDING
    assert node.address == "https://gpu-1b.example.com"
    event = AuditEvent.objects.get(action="node.update")
    assert event.before["address"] == "https://gpu-1.example.com"
    assert event.after["address"] == "https://gpu-1b.example.com"
    assert "token_hash" not in event.after


def test_a_node_that_served_calls_cannot_be_deleted(
    admin_client: Client, completed: Workflow, node: Node
) -> None:
    assert admin_client.post(f"/admin/nodes/node/{node.pk}/delete/",
                             {"post": "yes"}).status_code == 403
    admin_client.post("/admin/nodes/node/", {"action": "delete_selected",
                                             "_selected_action": [node.pk], "post": "yes"})
    assert Node.objects.filter(pk=node.pk).exists()
    assert completed.calls.get().node_id == node.pk


def test_an_idle_node_can_be_deleted_and_that_is_audited(admin_client: Client,
                                                         node: Node) -> None:
    response = admin_client.post(f"/admin/nodes/node/{node.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302 and not Node.objects.exists()
    assert AuditEvent.objects.get(action="node.delete").before["kv_capacity_tokens"] == 500_000


def test_audit_events_are_read_only_and_undeletable(admin_client: Client, node: Node) -> None:
    admin_client.post("/admin/nodes/node/", {"action": "drain_nodes",
                                             "_selected_action": [node.pk]})
    event = AuditEvent.objects.get(action="node.drain")
    url = f"/admin/audit/auditevent/{event.pk}/"
    assert admin_client.post(f"{url}change/", {"action": "forged"}).status_code == 403
    assert admin_client.post(f"{url}delete/", {"post": "yes"}).status_code == 403
    assert admin_client.get("/admin/audit/auditevent/add/").status_code == 403
    event.refresh_from_db()
    assert event.action == "node.drain"


# -- every change the admin still allows is audited ----------------------------------------


def _is_read_only(model_admin: Any, request: Any) -> bool:
    return not (model_admin.has_add_permission(request)
                or model_admin.has_change_permission(request)
                or model_admin.has_delete_permission(request)
                or model_admin.get_actions(request))


def test_every_registered_admin_is_audited_or_read_only(superuser: Any) -> None:
    request = RequestFactory().get("/admin/")
    request.user = superuser
    assert admin.site._registry
    for model, model_admin in admin.site._registry.items():
        label = model._meta.label
        assert isinstance(model_admin, AuditedModelAdmin) or _is_read_only(model_admin, request), (
            f"{label}: its admin allows changes but is not an AuditedModelAdmin"
        )
        for inline_class in model_admin.inlines:
            inline = inline_class(model, admin.site)
            fields = set(inline.get_fields(request))
            assert not inline.has_add_permission(request, None), f"{label}: inline adds"
            assert not (inline.can_delete and inline.has_delete_permission(request)), label
            assert (not inline.has_change_permission(request)
                    or fields <= set(inline.get_readonly_fields(request))), (
                f"{label}: inline {inline_class.__name__} edits {fields}"
            )


def test_telemetry_admins_are_view_only(superuser: Any) -> None:
    request = RequestFactory().get("/admin/")
    request.user = superuser
    for model in (Workflow, Call, ToolCall, AuditEvent):
        model_admin = admin.site._registry[model]
        assert _is_read_only(model_admin, request), model._meta.label
        assert model_admin.has_view_permission(request)


def test_a_tenant_edit_is_audited_with_before_and_after(admin_client: Client) -> None:
    tenant = Tenant.objects.create(slug="acme", name="Acme", weight=1.0)
    response = admin_client.post(f"/admin/tenants/tenant/{tenant.pk}/change/", {
        "name": "Acme Corp", "slug": "acme", "is_active": "on", "weight": "3",
        "slo_slowdown": "2", "slo_percentile": "95", **_no_inline_forms("api_keys"),
    })
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="tenant.update", object_id=str(tenant.pk))
    assert event.actor == "root" and event.actor_user is not None
    assert event.before["weight"] == 1.0 and event.after["weight"] == 3.0
    assert event.before["name"] == "Acme" and event.after["name"] == "Acme Corp"


def test_an_api_key_edit_is_audited(admin_client: Client) -> None:
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    key, _secret = ApiKey.issue(tenant, "agents")
    response = admin_client.post(f"/admin/tenants/apikey/{key.pk}/change/", {
        "name": "agents-2", "scopes": '["inference", "workflows"]', "expires_at_0": "",
        "expires_at_1": "",
    })
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="apikey.update")
    assert event.before["name"] == "agents" and event.after["name"] == "agents-2"
    assert event.after["scopes"] == ["inference", "workflows"]
    assert "key_hash" not in event.after


def test_node_admin_actions_are_audited(admin_client: Client, node: Node) -> None:
    node.assign_new_token()
    node.status = NodeStatus.UP
    node.save()
    admin_client.post("/admin/nodes/node/", {"action": "drain_nodes",
                                             "_selected_action": [node.pk]})
    node.refresh_from_db()
    assert node.status == NodeStatus.DRAINING and node.drained_at is not None
    drain = AuditEvent.objects.get(action="node.drain", object_id=str(node.pk))
    assert drain.before["status"] == "up" and drain.after["status"] == "draining"
    assert drain.before["drained_at"] is None and drain.after["drained_at"]
    admin_client.post("/admin/nodes/node/", {"action": "revoke_tokens",
                                             "_selected_action": [node.pk]})
    revoke = AuditEvent.objects.get(action="node.revoke_token", object_id=str(node.pk))
    assert revoke.before["token_revoked_at"] is None and revoke.after["token_revoked_at"]
    # The actions write their own events: no generic duplicate.
    assert AuditEvent.objects.filter(object_id=str(node.pk)).count() == 2


def test_third_party_admins_are_audited_too(admin_client: Client) -> None:
    """Django's groups (with their many-to-many permissions) and Celery beat's tasks."""
    permission = Permission.objects.get(codename="view_tenant")
    response = admin_client.post("/admin/auth/group/add/",
                                 {"name": "operators", "permissions": [permission.pk]})
    assert response.status_code == 302
    group = Group.objects.get(name="operators")
    event = AuditEvent.objects.get(action="group.create", object_id=str(group.pk))
    assert event.after["permissions"] == [str(permission.pk)]

    every = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.SECONDS)
    task = PeriodicTask.objects.create(name="sweep", task="saga.sweep", interval=every,
                                       enabled=True)
    admin_client.post("/admin/django_celery_beat/periodictask/",
                      {"action": "disable_tasks", "_selected_action": [task.pk]})
    task.refresh_from_db()
    assert not task.enabled
    event = AuditEvent.objects.get(action="periodictask.disable_tasks")
    assert event.before["enabled"] is True and event.after["enabled"] is False


def test_user_edits_and_password_changes_are_audited(admin_client: Client) -> None:
    user = get_user_model().objects.create_user("alice", password="pw-123456789", is_staff=True)
    page = admin_client.get(f"/admin/auth/user/{user.pk}/change/")
    assert page.status_code == 200
    response = admin_client.post(f"/admin/auth/user/{user.pk}/password/", {
        "password1": "another-pw-987654321", "password2": "another-pw-987654321",
        "usable_password": "true",
    })
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="user.update", object_id=str(user.pk))
    assert event.actor == "root" and "password" not in event.after
    assert event.before is not None and event.before["username"] == "alice"

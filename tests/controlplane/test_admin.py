"""The Django admin: every page renders; secrets are shown once and stored only hashed."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from controlplane import credentials
from controlplane.audit.models import AuditEvent
from controlplane.nodes.models import Node
from controlplane.policies.models import Policy, PolicyActivation
from controlplane.tenants.models import ApiKey, Tenant

pytestmark = pytest.mark.django_db

SECRET_RE = re.compile(r'<pre id="issued-secret"[^>]*>([^<]+)</pre>')


@pytest.fixture
def admin_client() -> Client:
    user = get_user_model().objects.create_superuser("root", "", "pw-123456789")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def tenant() -> Tenant:
    return Tenant.objects.create(slug="acme", name="Acme")


MODELS = ["tenants/tenant", "tenants/apikey", "workflows/agenttemplate", "workflows/workflow",
          "workflows/call", "workflows/toolcall", "policies/policy", "policies/policyactivation",
          "nodes/node", "audit/auditevent", "auth/user", "auth/group",
          "django_celery_beat/periodictask", "django_celery_beat/intervalschedule"]


@pytest.mark.parametrize("model", MODELS)
def test_changelists_render(admin_client: Client, model: str, tenant: Tenant) -> None:
    response = admin_client.get(f"/admin/{model}/")
    assert response.status_code == 200


def test_anonymous_users_are_sent_to_login() -> None:
    response = Client().get("/admin/tenants/tenant/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_creating_an_api_key_shows_the_secret_once(admin_client: Client, tenant: Tenant) -> None:
    response = admin_client.post(
        "/admin/tenants/apikey/add/",
        {"tenant": tenant.pk, "name": "agents", "scopes": '["inference"]'},
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    secret = SECRET_RE.search(response.content.decode()).group(1)  # type: ignore[union-attr]
    key = ApiKey.objects.get()
    assert key.key_hash == credentials.digest_secret(secret)
    assert ApiKey.authenticate(secret) == key
    page = admin_client.get(f"/admin/tenants/apikey/{key.pk}/change/").content.decode()
    assert secret not in page and key.display_prefix in page
    assert AuditEvent.objects.filter(action="apikey.create").exists()


def test_revoking_keys_from_the_admin(admin_client: Client, tenant: Tenant) -> None:
    key, secret = ApiKey.issue(tenant, "agents")
    admin_client.post(
        "/admin/tenants/apikey/", {"action": "revoke_keys", "_selected_action": [key.pk]}
    )
    assert ApiKey.authenticate(secret) is None
    assert AuditEvent.objects.filter(action="apikey.revoke", object_id=str(key.pk)).exists()


def test_creating_and_rotating_a_node_token(admin_client: Client) -> None:
    response = admin_client.post("/admin/nodes/node/add/", {
        "name": "gpu-1", "engine": "sim", "gpu_count": 1, "kv_capacity_tokens": 0,
        "policy_states-TOTAL_FORMS": "0", "policy_states-INITIAL_FORMS": "0",
    })
    first = SECRET_RE.search(response.content.decode()).group(1)  # type: ignore[union-attr]
    node = Node.objects.get()
    assert Node.authenticate(first) == node

    rotate = reverse("admin:nodes_node_rotate_token", args=[node.pk])
    assert admin_client.get(rotate).status_code == 405
    rotated = admin_client.post(rotate).content.decode()
    second = SECRET_RE.search(rotated).group(1)  # type: ignore[union-attr]
    assert second != first
    assert Node.authenticate(first) is None and Node.authenticate(second) == node
    assert AuditEvent.objects.filter(action="node.rotate_token").exists()


def test_tenant_edits_are_validated_and_audited(admin_client: Client) -> None:
    bad = admin_client.post("/admin/tenants/tenant/add/", {
        "name": "Acme", "slug": "acme", "is_active": "on", "weight": "0",
        "slo_slowdown": "2", "slo_percentile": "95",
        "api_keys-TOTAL_FORMS": "0", "api_keys-INITIAL_FORMS": "0",
    })
    assert bad.status_code == 200 and "must be greater than 0" in bad.content.decode()
    assert not Tenant.objects.exists()
    good = admin_client.post("/admin/tenants/tenant/add/", {
        "name": "Acme", "slug": "acme", "is_active": "on", "weight": "2",
        "slo_slowdown": "2", "slo_percentile": "95",
        "api_keys-TOTAL_FORMS": "0", "api_keys-INITIAL_FORMS": "0",
    })
    assert good.status_code == 302
    event = AuditEvent.objects.get(action="tenant.create")
    assert event.actor == "root" and event.after["weight"] == 2.0


def test_policy_activation_and_rollback_from_the_admin(admin_client: Client) -> None:
    response = admin_client.post("/admin/policies/policy/add/", {
        "kind": "eviction", "plugin_name": "ttl", "params": '{"ttl_s": 30}', "description": "",
    })
    assert response.status_code == 302
    bad = admin_client.post("/admin/policies/policy/add/", {
        "kind": "eviction", "plugin_name": "ttl", "params": '{"ttl_s": -1}', "description": "",
    })
    assert bad.status_code == 200 and "ttl_s" in bad.content.decode()
    lru = Policy(kind="eviction", plugin_name="lru", params={})
    lru.full_clean()
    lru.save()
    ttl = Policy.objects.get(plugin_name="ttl")
    for policy in (lru, ttl):
        admin_client.post("/admin/policies/policy/", {
            "action": "activate_cluster_wide", "_selected_action": [policy.pk]})
    head = PolicyActivation.objects.order_by("-id").first()
    assert head is not None and head.policy == ttl and head.actor == "root"
    admin_client.post("/admin/policies/policyactivation/", {
        "action": "rollback_kinds", "_selected_action": [head.pk]})
    latest = PolicyActivation.objects.order_by("-id").first()
    assert latest is not None and latest.policy == lru and latest.is_rollback
    assert AuditEvent.objects.filter(action="policy.create").count() == 1  # the admin's add
    assert AuditEvent.objects.filter(action="policy.activate").count() == 2
    rolled_back = AuditEvent.objects.get(action="policy.rollback")
    assert rolled_back.actor == "root" and rolled_back.object_id == str(latest.pk)
    # The actions write their own events; the admin adds no generic duplicates.
    assert not AuditEvent.objects.filter(action__in=["policy.activate_cluster_wide",
                                                     "policyactivation.rollback_kinds"]).exists()


def test_staff_without_permission_cannot_activate(tenant: Tenant) -> None:
    user = get_user_model().objects.create_user("viewer", password="pw-123456789", is_staff=True)
    client = Client()
    client.force_login(user)
    assert client.get("/admin/policies/policy/").status_code == 403

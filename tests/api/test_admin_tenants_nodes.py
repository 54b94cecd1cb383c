"""Admin endpoints for tenants, keys and nodes: secrets shown once, edits validated and audited."""

from __future__ import annotations

import pytest

from controlplane.audit.models import AuditEvent
from controlplane.nodes.models import Node
from controlplane.tenants.models import ApiKey
from tests.api.conftest import ApiClient, assert_error

pytestmark = pytest.mark.django_db


def test_tenant_create_update_and_validation(admin_api: ApiClient) -> None:
    created = admin_api.post("/api/admin/tenants", {"slug": "initech", "name": "Initech",
                                                    "weight": 3, "slo_slowdown": 1.5})
    assert created.status_code == 201 and created.json()["weight"] == 3
    assert_error(admin_api.post("/api/admin/tenants", {"slug": "bad", "name": "B", "weight": 0}),
                 422, "invalid", "weight")
    assert_error(admin_api.patch("/api/admin/tenants/initech", {"slo_percentile": 101}), 422,
                 "invalid", "slo_percentile")
    patched = admin_api.patch("/api/admin/tenants/initech", {"tokens_per_minute": 100000})
    assert patched.json()["tokens_per_minute"] == 100000
    assert_error(admin_api.get("/api/admin/tenants/nobody"), 404, "not_found")
    assert AuditEvent.objects.filter(action="tenant.update", object_repr="initech").exists()


def test_created_keys_are_shown_once_and_work(admin_api: ApiClient) -> None:
    response = admin_api.post("/api/admin/tenants/acme/keys",
                              {"name": "ci", "scopes": ["workflows"]})
    assert response.status_code == 201
    secret = response.json()["key"]
    assert ApiClient(secret).get("/api/workflows").status_code == 200
    listed = admin_api.get("/api/admin/tenants/acme/keys").json()
    assert all("key" not in k and secret not in str(k) for k in listed)
    assert_error(admin_api.post("/api/admin/tenants/acme/keys", {"name": "x", "scopes": ["root"]}),
                 422, "invalid", "scopes.0")
    key_id = response.json()["id"]
    assert admin_api.post(f"/api/admin/keys/{key_id}/revoke").json()["revoked_at"]
    assert ApiKey.authenticate(secret) is None


def test_node_registration_rotation_and_drain(admin_api: ApiClient) -> None:
    created = admin_api.post("/api/admin/nodes", {"name": "gpu-7", "engine": "sim"})
    assert created.status_code == 201
    token = created.json()["token"]
    assert Node.authenticate(token).name == "gpu-7"  # type: ignore[union-attr]
    assert "token" not in admin_api.get("/api/admin/nodes/gpu-7").json()
    rotated = admin_api.post("/api/admin/nodes/gpu-7/rotate-token").json()["token"]
    assert Node.authenticate(token) is None and Node.authenticate(rotated) is not None
    assert admin_api.post("/api/admin/nodes/gpu-7/drain").json()["drained"] is True
    assert Node.objects.get(name="gpu-7").drained_at is not None
    assert admin_api.post("/api/admin/nodes/gpu-7/undrain").json()["drained"] is False
    assert admin_api.post("/api/admin/nodes/gpu-7/revoke-token").json()["token_revoked"]
    assert Node.authenticate(rotated) is None
    assert_error(admin_api.post("/api/admin/nodes", {"name": "gpu-7"}), 409, "conflict", "name")

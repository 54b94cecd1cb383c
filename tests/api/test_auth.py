"""Authentication of the REST API: 401 with the standard error body, never a leak."""

from __future__ import annotations

import pytest

from controlplane.tenants.models import ApiKey, Tenant
from tests.api.conftest import ApiClient, assert_error

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("key", [None, "sk_abcdefgh_wrong", "not-a-key"])
def test_missing_or_bad_keys_get_401(tenant: Tenant, key: str | None) -> None:
    response = ApiClient(key).get("/api/workflows")
    assert_error(response, 401, "unauthenticated", "Authorization")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_revoked_key_gets_401(tenant: Tenant) -> None:
    key, secret = ApiKey.issue(tenant, "agents")
    assert ApiClient(secret).get("/api/workflows").status_code == 200
    key.revoke()
    assert_error(ApiClient(secret).get("/api/workflows"), 401, "unauthenticated")


def test_a_key_without_the_workflows_scope_gets_403(tenant: Tenant) -> None:
    """A valid key lacking the scope is forbidden (403), not unauthenticated (401)."""
    _key, secret = ApiKey.issue(tenant, "gateway", scopes=["inference"])
    assert_error(ApiClient(secret).get("/api/workflows"), 403, "forbidden", "Authorization")


def test_tenant_keys_cannot_reach_admin_endpoints(api: ApiClient) -> None:
    assert_error(api.get("/api/admin/tenants"), 403, "forbidden", "Authorization")
    assert_error(api.post("/api/admin/policies/activate",
                          {"kind": "eviction", "name": "lru"}), 403, "forbidden",
                 "Authorization")

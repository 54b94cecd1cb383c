from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from controlplane.tenants.models import ApiKey, Tenant


class ApiClient:
    """A Django test client that sends a bearer key and JSON bodies."""

    def __init__(self, key: str | None) -> None:
        self.client = Client()
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(path, params, headers=self.headers)

    def post(self, path: str, body: Any = None) -> Any:
        return self.client.post(path, body if body is not None else {},
                                content_type="application/json", headers=self.headers)

    def patch(self, path: str, body: Any) -> Any:
        return self.client.patch(path, body, content_type="application/json",
                                 headers=self.headers)


@pytest.fixture
def tenant(db: None) -> Tenant:
    return Tenant.objects.create(slug="acme", name="Acme")


@pytest.fixture
def other_tenant(db: None) -> Tenant:
    return Tenant.objects.create(slug="globex", name="Globex")


@pytest.fixture
def api(tenant: Tenant) -> ApiClient:
    _key, secret = ApiKey.issue(tenant, "agents")
    return ApiClient(secret)


@pytest.fixture
def other_api(other_tenant: Tenant) -> ApiClient:
    _key, secret = ApiKey.issue(other_tenant, "agents")
    return ApiClient(secret)


@pytest.fixture
def admin_api(tenant: Tenant) -> ApiClient:
    _key, secret = ApiKey.issue(tenant, "ops", scopes=["admin"])
    return ApiClient(secret)


@pytest.fixture
def staff_client(db: None) -> Client:
    user = get_user_model().objects.create_user("ops", password="pw-123456789", is_staff=True)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def assert_error(response: Any, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code
    if field is not None:
        assert error["field"] == field, error
    assert error["message"]
    return error

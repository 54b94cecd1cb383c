"""The REST API's contract (issue 9, item 9): one error envelope for everything ninja and Django
answer on their own, 401 versus 403, body limits, and an OpenAPI schema that lists every status
and the gateway's /v1 paths."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client

from controlplane.policies.models import PolicyActivation
from controlplane.tenants.models import ApiKey, Tenant
from tests.api.conftest import ApiClient, assert_error

pytestmark = pytest.mark.django_db

ACTIVATE = {"kind": "eviction", "name": "lru"}


def csrf_enforcing(key: str | None) -> ApiClient:
    """A client that, like a real one, gets Django's CSRF checks (the test client skips them
    unless told), which is where the old ``{"detail": "CSRF check Failed"}`` came from."""
    client = ApiClient(key)
    client.client = Client(enforce_csrf_checks=True)
    return client


@pytest.mark.parametrize("path", ["/api/admin/policies/activate", "/api/admin/tenants",
                                  "/api/admin/nodes"])
def test_admin_posts_without_credentials_are_401(path: str) -> None:
    response = csrf_enforcing(None).post(path, ACTIVATE)
    assert_error(response, 401, "unauthenticated", "Authorization")
    assert "detail" not in response.json()


def test_admin_posts_with_a_tenant_key_are_403(api: ApiClient) -> None:
    response = csrf_enforcing(api.headers["Authorization"][7:]).post(
        "/api/admin/policies/activate", ACTIVATE)
    error = assert_error(response, 403, "forbidden", "Authorization")
    assert "admin" in error["message"]
    assert not PolicyActivation.objects.exists()


def test_staff_sessions_need_the_csrf_token_and_work_with_it(staff_client: Client) -> None:
    refused = staff_client.post("/api/admin/policies/activate", ACTIVATE,
                                content_type="application/json")
    assert_error(refused, 403, "csrf_failed", "X-CSRFToken")
    token = _get_new_csrf_string()
    staff_client.cookies[settings.CSRF_COOKIE_NAME] = token
    accepted = staff_client.post("/api/admin/policies/activate", ACTIVATE,
                                 content_type="application/json", headers={"X-CSRFToken": token})
    assert accepted.status_code == 201, accepted.content
    assert PolicyActivation.objects.count() == 1


def test_a_non_staff_session_is_403() -> None:
    user = get_user_model().objects.create_user("viewer", password="pw-123456789")
    client = Client()
    client.force_login(user)
    assert_error(client.get("/api/admin/tenants"), 403, "forbidden")


@pytest.mark.parametrize("body", [b"{not json", b'{"template": "swe",}', b"\xff\xfe\x00",
                                  b'{"template": "swe"} trailing'])
def test_unparseable_bodies_get_the_envelope(api: ApiClient, body: bytes) -> None:
    response = api.client.generic("POST", "/api/workflows", body,
                                  content_type="application/json", headers=api.headers)
    error = assert_error(response, 400, "invalid_json")
    assert error["field"] is None and "detail" not in response.json()


def test_bodies_over_the_upload_limit_are_413(api: ApiClient) -> None:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    body = b'{"template": "swe", "metadata": {"x": "' + b"a" * limit + b'"}}'
    response = api.client.generic("POST", "/api/workflows", body,
                                  content_type="application/json", headers=api.headers)
    error = assert_error(response, 413, "payload_too_large")
    assert str(limit) in error["message"]


def test_unknown_api_paths_are_a_json_404(api: ApiClient) -> None:
    response = api.get("/api/no-such-thing")
    assert response["Content-Type"].startswith("application/json")
    assert_error(response, 404, "not_found")


def _schema() -> dict[str, Any]:
    response = Client().get("/api/openapi.json")
    assert response.status_code == 200
    return response.json()


def test_every_operation_documents_the_errors_it_can_answer() -> None:
    schema = _schema()
    for path, item in schema["paths"].items():
        if not path.startswith("/api/"):
            continue
        for method, operation in item.items():
            documented = set(operation["responses"])
            expected = {"401", "403"}
            if operation.get("parameters") or "requestBody" in operation:
                expected.add("422")
            if "requestBody" in operation:
                expected |= {"400", "413"}
            if "{" in path:
                expected.add("404")
            assert expected <= documented, (method, path, expected - documented)
            for status in documented - {"200", "201", "202"}:  # 202: a job accepted
                content = operation["responses"][status]["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/ErrorOut"}
    create = schema["paths"]["/api/workflows"]["post"]["responses"]
    assert {"409", "429"} <= set(create)


def test_the_gateway_is_in_the_schema_with_its_key_and_its_error_shape() -> None:
    schema = _schema()
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models"} <= set(schema["paths"])
    chat = schema["paths"]["/v1/chat/completions"]["post"]
    assert chat["security"] == [{"InferenceKey": []}]
    assert schema["components"]["securitySchemes"]["InferenceKey"]["scheme"] == "bearer"
    request = chat["requestBody"]["content"]["application/json"]["schema"]
    assert request["required"] == ["model", "messages"]
    assert request["properties"]["max_tokens"]["anyOf"][0]["maximum"] == 131_072
    assert request["properties"]["temperature"]["anyOf"][0] == {
        "type": "number", "minimum": 0.0, "maximum": 2.0}
    assert {"200", "400", "401", "404", "413", "429", "503"} <= set(chat["responses"])
    assert "itemSchema" in chat["responses"]["200"]["content"]["text/event-stream"]
    error = schema["components"]["schemas"]["OpenAIError"]["properties"]["error"]
    assert set(error["required"]) == {"message", "type", "param", "code"}
    assert "JsonValue" in schema["components"]["schemas"]
    assert '"message", "type", "param", "code"' in schema["info"]["description"]
    assert '"code", "message", "field"' in schema["info"]["description"]


def test_a_key_with_the_admin_scope_still_works(tenant: Tenant) -> None:
    _key, secret = ApiKey.issue(tenant, "ops", scopes=["admin"])
    response = ApiClient(secret).post("/api/admin/policies/activate", ACTIVATE)
    assert response.status_code == 201, response.content

"""POST /api/workflows"""

from __future__ import annotations

import pytest

from controlplane.tenants.models import Tenant
from controlplane.workflows.models import AgentTemplate, Workflow
from tests.api.conftest import ApiClient, assert_error

pytestmark = pytest.mark.django_db


def test_creates_a_submitted_workflow(api: ApiClient, tenant: Tenant) -> None:
    response = api.post("/api/workflows", {
        "template": "swe-agent", "external_id": "django-12345",
        "metadata": {"repo": "django"}, "hints": {"expected_calls": 40},
    })
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["state"] == "submitted" and body["template"] == "swe-agent"
    assert body["hints"] == {"expected_calls": 40}
    workflow = Workflow.objects.get(pk=body["id"])
    assert workflow.tenant == tenant and workflow.external_id == "django-12345"
    assert AgentTemplate.objects.filter(name="swe-agent").exists()


@pytest.mark.parametrize(("body", "field"), [
    ({}, "template"),
    ({"template": "has spaces"}, "template"),
    ({"template": "swe", "hints": {"expected_calls": 0}}, "hints.expected_calls"),
    ({"template": "swe", "metadata": "not-an-object"}, "metadata"),
])
def test_invalid_bodies_get_422_naming_the_field(api: ApiClient, body: dict, field: str) -> None:
    assert_error(api.post("/api/workflows", body), 422, "invalid", field)
    assert not Workflow.objects.exists()


def test_duplicate_external_ids_are_refused_per_tenant(
    api: ApiClient, other_api: ApiClient
) -> None:
    assert api.post("/api/workflows", {"template": "swe", "external_id": "t1"}).status_code == 201
    assert_error(api.post("/api/workflows", {"template": "swe", "external_id": "t1"}), 409,
                 "conflict", "external_id")
    # another tenant may use the same external id
    assert other_api.post("/api/workflows",
                          {"template": "swe", "external_id": "t1"}).status_code == 201


def test_concurrency_quota_gives_429_with_retry_after(api: ApiClient, tenant: Tenant) -> None:
    tenant.max_concurrent_workflows = 2
    tenant.save()
    for _ in range(2):
        assert api.post("/api/workflows", {"template": "swe"}).status_code == 201
    response = api.post("/api/workflows", {"template": "swe"})
    assert_error(response, 429, "quota_exceeded", "max_concurrent_workflows")
    assert int(response["Retry-After"]) >= 1
    first = Workflow.objects.order_by("id").first()
    assert first is not None
    api.post(f"/api/workflows/{first.pk}/cancel")
    assert api.post("/api/workflows", {"template": "swe"}).status_code == 201

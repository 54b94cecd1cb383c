"""GET /api/workflows and /api/workflows/{id}: tenant-scoped, filterable; others' are 404."""

from __future__ import annotations

import pytest

from tests.api.conftest import ApiClient, assert_error

pytestmark = pytest.mark.django_db


def create(api: ApiClient, template: str = "swe", **extra: object) -> int:
    response = api.post("/api/workflows", {"template": template, **extra})
    assert response.status_code == 201
    return int(response.json()["id"])


def test_get_and_list(api: ApiClient) -> None:
    first = create(api, "swe")
    second = create(api, "webarena")
    assert api.get(f"/api/workflows/{first}").json()["template"] == "swe"
    listed = api.get("/api/workflows").json()
    assert listed["count"] == 2 and [w["id"] for w in listed["items"]] == [second, first]
    assert [w["id"] for w in api.get("/api/workflows", template="webarena").json()["items"]] \
        == [second]
    api.post(f"/api/workflows/{first}/cancel")
    assert [w["id"] for w in api.get("/api/workflows", state="cancelled").json()["items"]] \
        == [first]
    third = create(api, "swe", external_id="task-42")
    assert [w["id"] for w in api.get("/api/workflows", external_id="task-42").json()["items"]] \
        == [third]
    assert api.get("/api/workflows", limit=1).json()["count"] == 3
    assert len(api.get("/api/workflows", limit=1).json()["items"]) == 1


def test_bad_filters_are_422(api: ApiClient) -> None:
    assert_error(api.get("/api/workflows", state="sleeping"), 422, "invalid", "state")
    assert_error(api.get("/api/workflows", limit=0), 422, "invalid", "limit")


def test_another_tenants_workflow_is_404_everywhere(api: ApiClient, other_api: ApiClient) -> None:
    theirs = create(other_api)
    assert_error(api.get(f"/api/workflows/{theirs}"), 404, "not_found")
    assert_error(api.post(f"/api/workflows/{theirs}/cancel"), 404, "not_found")
    assert_error(api.post(f"/api/workflows/{theirs}/events",
                          {"type": "tool_start", "tool": "bash"}), 404, "not_found")
    assert_error(api.get(f"/api/workflows/{theirs}/calls"), 404, "not_found")
    assert api.get("/api/workflows").json()["count"] == 0
    assert other_api.get(f"/api/workflows/{theirs}").json()["state"] == "submitted"

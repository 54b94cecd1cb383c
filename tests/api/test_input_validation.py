"""Inputs that used to crash the REST API with a 500 (issue 9, item 8) now get a 4xx in the
standard error body.

Each case is a raw request: JSON the ``json`` module would not write (NaN, 1e400, lone
surrogates), NUL characters PostgreSQL refuses, numbers past its columns, time-zone offsets past
its range, nesting past Python's recursion limit.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from controlplane.tenants.models import ApiKey, Tenant
from controlplane.workflows.models import Workflow

pytestmark = pytest.mark.django_db

DEEP = "[" * 10_000 + "]" * 10_000
BIG = str(10**20)


@pytest.fixture
def keys(tenant: Tenant) -> dict[str, str]:
    _k, tenant_secret = ApiKey.issue(tenant, "agents")
    _k, admin_secret = ApiKey.issue(tenant, "ops", scopes=["admin"])
    return {"tenant": tenant_secret, "admin": admin_secret}


def send(keys: dict[str, str], who: str, method: str, path: str, body: str | None = None) -> Any:
    client = Client()
    headers = {"Authorization": f"Bearer {keys[who]}"}
    if method == "GET":
        return client.get(path, headers=headers)
    return client.generic(method, path, (body or "{}").encode("utf-8", "surrogatepass"),
                          content_type="application/json", headers=headers)


# (who, method, path, raw body, expected status, expected field or None)
BAD_INPUTS = [
    # workflow metadata and hints: not JSON, or not storable in jsonb
    ("tenant", "POST", "/api/workflows", '{"template": "swe", "metadata": {"x": NaN}}', 400, None),
    ("tenant", "POST", "/api/workflows", '{"template": "swe", "metadata": {"x": Infinity}}', 400,
     None),
    ("tenant", "POST", "/api/workflows", '{"template": "swe", "metadata": {"x": -Infinity}}',
     400, None),
    ("tenant", "POST", "/api/workflows", '{"template": "swe", "metadata": {"x": 1e400}}', 422,
     "metadata.x"),
    ("tenant", "POST", "/api/workflows", '{"template": "swe", "metadata": {"x": "\\ud800"}}',
     422, "metadata.x"),
    ("tenant", "POST", "/api/workflows", '{"template": "swe", "metadata": {"x": "a\\u0000b"}}',
     422, "metadata.x"),
    ("tenant", "POST", "/api/workflows", '{"template": "swe", "metadata": {"a\\u0000": 1}}', 422,
     "metadata"),
    ("tenant", "POST", "/api/workflows", '{"template": "swe", "metadata": {"x": [[' + "1" +
     ']]}, "hints": {"expected_duration_s": NaN}}', 400, None),
    ("tenant", "POST", "/api/workflows", '{"template": "swe", "hints": '
     '{"expected_duration_s": 1e400}}', 422, "hints.expected_duration_s"),
    ("tenant", "POST", "/api/workflows", '{"template": "swe", "hints": '
     '{"expected_duration_s": 1e300}}', 422, "hints.expected_duration_s"),
    ("tenant", "POST", "/api/workflows", '{"template": "swe", "metadata": ' + DEEP[:20_000]
     .replace("[", '{"a":', 1) + "}", 400, None),
    ("tenant", "POST", "/api/workflows", '{"template": "swe", "metadata": {"x": ' + DEEP + "}}",
     400, None),
    ("tenant", "POST", "/api/workflows", DEEP, 400, None),
    ("tenant", "POST", "/api/workflows", '{"template": "swe", "external_id": "a\\u0000"}', 422,
     "external_id"),
    ("tenant", "POST", "/api/workflows", '{"template": "sw\\u00e9"}', 422, "template"),
    ("tenant", "POST", "/api/workflows", '{"template": "swe\\n"}', 422, "template"),
    # list filters
    ("tenant", "GET", "/api/workflows?external_id=%00", None, 422, "external_id"),
    ("tenant", "GET", "/api/workflows?template=%00", None, 422, "template"),
    ("tenant", "GET", f"/api/workflows?offset={BIG}", None, 422, "offset"),
    ("tenant", "GET", "/api/workflows?submitted_after=2026-01-01T00:00:00%2B16:00", None, 422,
     "submitted_after"),
    ("tenant", "GET", "/api/workflows?submitted_before=2026-01-01T00:00:00-23:59", None, 422,
     "submitted_before"),
    ("tenant", "GET", f"/api/workflows/{BIG}", None, 422, "workflow_id"),
    # tool events
    ("tenant", "POST", "/api/workflows/1/events", '{"type": "tool_start", "tool": "a\\u0000"}',
     422, "tool"),
    ("tenant", "POST", "/api/workflows/1/events", '{"type": "tool_start", "tool": "bash", '
     '"expected_duration_s": 1e400}', 422, "expected_duration_s"),
    # tenants: infinite weights and SLOs, NUL in names, quotas past their columns
    ("admin", "POST", "/api/admin/tenants", '{"slug": "t1", "name": "T", "weight": 1e400}', 422,
     "weight"),
    ("admin", "POST", "/api/admin/tenants", '{"slug": "t1", "name": "T", "weight": NaN}', 400,
     None),
    ("admin", "POST", "/api/admin/tenants", '{"slug": "t1", "name": "T", "slo_slowdown": 1e400}',
     422, "slo_slowdown"),
    ("admin", "POST", "/api/admin/tenants", '{"slug": "t1", "name": "T", '
     '"slo_percentile": Infinity}', 400, None),
    ("admin", "POST", "/api/admin/tenants", '{"slug": "t1", "name": "T\\u0000"}', 422, "name"),
    ("admin", "POST", "/api/admin/tenants", '{"slug": "t1", "name": "T", "tokens_per_minute": '
     + str(10**30) + "}", 422, "tokens_per_minute"),
    ("admin", "POST", "/api/admin/tenants", '{"slug": "t1", "name": "T", '
     '"max_concurrent_workflows": ' + BIG + "}", 422, "max_concurrent_workflows"),
    ("admin", "PATCH", "/api/admin/tenants/acme", '{"weight": 1e400}', 422, "weight"),
    ("admin", "PATCH", "/api/admin/tenants/acme", '{"weight": null}', 422, "weight"),
    ("admin", "GET", "/api/admin/tenants/ac%00me", None, 422, "slug"),
    # API keys: expiry past year 9999 in UTC, NUL in names, ids past bigint
    ("admin", "POST", "/api/admin/tenants/acme/keys",
     '{"name": "k", "expires_at": "9999-12-31T23:59:59-12:00"}', 422, "expires_at"),
    ("admin", "POST", "/api/admin/tenants/acme/keys",
     '{"name": "k", "expires_at": "2999-12-31T23:59:59+16:00"}', 422, "expires_at"),
    ("admin", "POST", "/api/admin/tenants/acme/keys", '{"name": "k\\u0000"}', 422, "name"),
    ("admin", "POST", f"/api/admin/keys/{BIG}/revoke", None, 422, "key_id"),
    # policies: infinite parameters, NUL in names and reasons
    ("admin", "POST", "/api/admin/policies/activate",
     '{"kind": "eviction", "name": "ttl", "params": {"ttl_s": 1e400}}', 422, "params.ttl_s"),
    ("admin", "POST", "/api/admin/policies/activate",
     '{"kind": "eviction", "name": "ttl", "params": {"ttl_s": NaN}}', 400, None),
    ("admin", "POST", "/api/admin/policies/activate",
     '{"kind": "eviction", "name": "t\\u0000tl"}', 422, "name"),
    ("admin", "POST", "/api/admin/policies/activate",
     '{"kind": "eviction", "name": "lru", "reason": "\\u0000"}', 422, "reason"),
    ("admin", "POST", "/api/admin/policies/rollback", '{"kind": "eviction", "reason": "\\u0000"}',
     422, "reason"),
    # nodes
    ("admin", "POST", "/api/admin/nodes", '{"name": "gpu\\u0000"}', 422, "name"),
    ("admin", "POST", "/api/admin/nodes", '{"name": "gpu-1", "address": "http://a\\u0000"}', 422,
     "address"),
    ("admin", "GET", "/api/admin/nodes/gpu%00", None, 422, "name"),
]


@pytest.mark.parametrize(("who", "method", "path", "body", "status", "field"), BAD_INPUTS)
def test_bad_inputs_get_a_4xx_envelope(keys: dict[str, str], who: str, method: str, path: str,
                                       body: str | None, status: int, field: str | None) -> None:
    response = send(keys, who, method, path, body)
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"code", "message", "field"} and error["message"]
    assert error["code"] == ("invalid_json" if status == 400 else "invalid")
    assert error["field"] == field, error


def test_nothing_was_stored_and_listing_keys_still_works(keys: dict[str, str]) -> None:
    """The key of ``9999-12-31T23:59:59-12:00`` used to be stored in year 10000, and the
    tenant's key list was a 500 from then on."""
    for case in BAD_INPUTS:
        send(keys, *case[:4])
    assert not Workflow.objects.exists()
    listed = send(keys, "admin", "GET", "/api/admin/tenants/acme/keys")
    assert listed.status_code == 200 and len(listed.json()) == 2


@pytest.mark.parametrize("bound", ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00.5+15:59",
                                   "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-15:00"])
def test_valid_time_filters_work_even_at_the_ends_of_the_calendar(keys: dict[str, str],
                                                                  bound: str) -> None:
    """Offsets up to 15:59 are fine; an instant before year 1 or after 9999 in UTC filters as
    the earliest or latest instant."""
    send(keys, "tenant", "POST", "/api/workflows", '{"template": "swe"}')
    for name in ("submitted_after", "submitted_before"):
        response = Client().get("/api/workflows", {name: bound},
                                headers={"Authorization": f"Bearer {keys['tenant']}"})
        assert response.status_code == 200, response.content


def test_unicode_workflow_ids_and_dotted_templates_are_fine(keys: dict[str, str]) -> None:
    response = send(keys, "tenant", "POST", "/api/workflows",
                    '{"template": "swe-agent.v2", "external_id": "tâche-42 ✓",'
                    ' "metadata": {"note": "ünïcödé", "n": 1.5e300}}')
    assert response.status_code == 201, response.content
    assert response.json()["external_id"] == "tâche-42 ✓"

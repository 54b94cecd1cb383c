"""Admin policy endpoints: catalogue, validated activation, rollback, history, node states."""

from __future__ import annotations

import pytest
from django.test import Client

from controlplane.audit.models import AuditEvent
from controlplane.nodes.models import Node, NodePolicyState, NodeStatus, PolicyApplyStatus
from controlplane.policies.models import PolicyActivation
from tests.api.conftest import ApiClient, assert_error

pytestmark = pytest.mark.django_db(transaction=True)


def test_catalogue_lists_every_installed_policy_with_its_schema(admin_api: ApiClient) -> None:
    entries = admin_api.get("/api/admin/policies/catalogue").json()
    names = {(e["kind"], e["name"]) for e in entries}
    assert {("eviction", "aeg"), ("routing", "saga"), ("admission", "saga"), ("fairness", "afs"),
            ("eviction", "lru"), ("routing", "session-affinity"), ("admission", "priority"),
            ("fairness", "fcfs")} <= names
    ttl = next(e for e in entries if e["name"] == "ttl")
    assert "ttl_s" in ttl["params_schema"]["properties"]


def test_activate_validates_records_audits_and_marks_nodes_pending(admin_api: ApiClient) -> None:
    node = Node.objects.create(name="gpu-1", status=NodeStatus.UP)
    response = admin_api.post("/api/admin/policies/activate",
                              {"kind": "eviction", "name": "ttl", "params": {"ttl_s": 45},
                               "reason": "longer tools"})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "ttl" and body["params"]["ttl_s"] == 45
    assert body["actor"].startswith("apikey:")
    assert AuditEvent.objects.filter(action="policy.activate").count() == 1
    state = NodePolicyState.objects.get(node=node, kind="eviction")
    assert state.status == PolicyApplyStatus.PENDING and state.activation_id == body["id"]
    active = admin_api.get("/api/admin/policies/active").json()
    assert active[0]["nodes"][0]["node"] == "gpu-1"
    # the same configuration again reuses its Policy row (same version)
    again = admin_api.post("/api/admin/policies/activate",
                           {"kind": "eviction", "name": "ttl", "params": {"ttl_s": 45}}).json()
    assert again["policy_version"] == body["policy_version"]


@pytest.mark.parametrize(("body", "field", "text"), [
    ({"kind": "eviction", "name": "nope"}, "plugin_name", "unknown eviction policy"),
    ({"kind": "fairness", "name": "lru"}, "plugin_name", "kind eviction"),
    ({"kind": "eviction", "name": "ttl", "params": {"ttl_s": -5}}, "params", "ttl_s"),
    ({"kind": "eviction", "name": "ttl", "params": {"typo": 1}}, "params", "typo"),
    ({"kind": "scheduling", "name": "lru"}, "kind", "kind"),
])
def test_invalid_activations_are_422_and_change_nothing(
    admin_api: ApiClient, body: dict, field: str, text: str
) -> None:
    admin_api.post("/api/admin/policies/activate", {"kind": "eviction", "name": "lru"})
    error = assert_error(admin_api.post("/api/admin/policies/activate", body), 422, "invalid",
                         field)
    assert text in error["message"]
    assert PolicyActivation.objects.count() == 1
    assert admin_api.get("/api/admin/policies/active").json()[0]["name"] == "lru"


def test_rollback_and_history(admin_api: ApiClient) -> None:
    assert_error(admin_api.post("/api/admin/policies/rollback", {"kind": "fairness"}), 409,
                 "nothing_to_roll_back", "kind")
    for name in ("fcfs", "afs"):
        admin_api.post("/api/admin/policies/activate", {"kind": "fairness", "name": name})
    rolled = admin_api.post("/api/admin/policies/rollback", {"kind": "fairness"})
    assert rolled.status_code == 201 and rolled.json()["name"] == "fcfs"
    assert rolled.json()["is_rollback"]
    history = admin_api.get("/api/admin/policies/history", kind="fairness").json()
    assert [h["name"] for h in history] == ["fcfs", "afs", "fcfs"]
    assert history[0]["previous_id"] == history[1]["id"]


def test_staff_sessions_need_csrf_for_changes(staff_client: Client) -> None:
    assert staff_client.get("/api/admin/policies/catalogue").status_code == 200
    response = staff_client.post("/api/admin/policies/activate",
                                 {"kind": "eviction", "name": "lru"},
                                 content_type="application/json")
    assert_error(response, 403, "csrf_failed", "X-CSRFToken")
    assert not PolicyActivation.objects.exists()

"""Migration policies.0004 on real rows: stored ``batching`` policies and their activation chain
become routing + admission chains with the same history, and tenant-scoped activations (which
no host ever applied) are removed."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("policies", "0003_activation_rollout"), ("nodes", "0006_node_load_history"),
          ("tenants", "0001_initial")]
AFTER = [("policies", "0005_cluster_only_activations")]


def _migrate(targets: list[tuple[str, str]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state(targets).apps


def test_batching_rows_become_routing_and_admission_chains() -> None:
    old = _migrate(BEFORE)
    Policy = old.get_model("policies", "Policy")
    Activation = old.get_model("policies", "PolicyActivation")
    Tenant = old.get_model("tenants", "Tenant")
    Node = old.get_model("nodes", "Node")
    NodePolicyState = old.get_model("nodes", "NodePolicyState")
    NodeRollout = old.get_model("policies", "NodeRollout")

    affinity = Policy.objects.create(kind="batching", plugin_name="session-affinity",
                                     params={"replicas": 80}, version=1)
    saga = Policy.objects.create(kind="batching", plugin_name="saga",
                                 params={"max_moves": 2, "admission_band": 1.5}, version=1)
    fairness = Policy.objects.create(kind="fairness", plugin_name="afs", params={}, version=1)
    first = Activation.objects.create(kind="batching", scope="cluster", scope_key="cluster",
                                      policy=affinity, actor="alice", rollout="applied")
    second = Activation.objects.create(kind="batching", scope="cluster", scope_key="cluster",
                                       policy=saga, previous=first, actor="bob",
                                       reason="try saga", rollout="partial")
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    Activation.objects.create(kind="fairness", scope="tenant", tenant=tenant,
                              scope_key=f"tenant:{tenant.pk}", policy=fairness, actor="carol")
    node = Node.objects.create(name="n1", token_hash="x" * 64)
    NodePolicyState.objects.create(node=node, kind="batching", activation=second,
                                   status="rejected", error="refused")
    NodeRollout.objects.create(activation=second, node=node, status="rejected", error="refused")

    new = _migrate(AFTER)
    Policy = new.get_model("policies", "Policy")
    Activation = new.get_model("policies", "PolicyActivation")
    NodePolicyState = new.get_model("nodes", "NodePolicyState")
    NodeRollout = new.get_model("policies", "NodeRollout")

    assert not Policy.objects.filter(kind="batching").exists()
    routing = {p.plugin_name: p for p in Policy.objects.filter(kind="routing")}
    assert routing["session-affinity"].params == {"replicas": 80}
    assert routing["saga"].params == {"max_moves": 2}  # admission_band moved
    admission = {(p.plugin_name, tuple(sorted(p.params.items())))
                 for p in Policy.objects.filter(kind="admission")}
    assert admission == {("priority", ()), ("saga", (("admission_band", 1.5),))}

    routes = list(Activation.objects.filter(kind="routing").order_by("id"))
    admits = list(Activation.objects.filter(kind="admission").order_by("id"))
    assert [a.policy.plugin_name for a in routes] == ["session-affinity", "saga"]
    assert [a.policy.plugin_name for a in admits] == ["priority", "saga"]
    for chain in (routes, admits):  # each a linear chain with the old links' history
        assert chain[0].previous_id is None and chain[1].previous_id == chain[0].pk
        assert [a.actor for a in chain] == ["alice", "bob"]
        assert chain[1].reason == "try saga"
    assert admits[1].rollout == "partial"
    state = NodePolicyState.objects.get()
    assert (state.kind, state.activation_id, state.status) == ("admission", admits[1].pk,
                                                               "rejected")
    assert list(NodeRollout.objects.values_list("activation_id", flat=True)) == [admits[1].pk]
    # The tenant-scoped activation is gone; the cluster has no fairness activation at all.
    assert not Activation.objects.filter(kind="fairness").exists()
    assert Policy.objects.filter(kind="fairness", plugin_name="afs").exists()

"""Policy configurations validated by the plugins' schemas; activation chains, rollback, audit."""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from controlplane.audit.models import AuditEvent
from controlplane.policies.distribution import current_cluster_policies
from controlplane.policies.models import Policy, PolicyActivation
from controlplane.policies.services import (
    ActivationError,
    ConcurrentActivation,
    activate_policy,
    current_activation,
    rollback,
)


def make_policy(kind: str, name: str, params: dict | None = None) -> Policy:
    policy = Policy(kind=kind, plugin_name=name, params=params or {})
    policy.full_clean()
    policy.save()
    return policy


@pytest.mark.django_db
class TestPolicyValidation:
    def test_params_are_normalised_with_the_plugins_defaults(self) -> None:
        policy = make_policy("eviction", "ttl")
        assert policy.params and policy.plugin_version
        assert policy.version == 1
        assert make_policy("eviction", "ttl").version == 2
        assert make_policy("eviction", "lru").version == 1

    @pytest.mark.parametrize(
        ("kind", "name", "params", "field", "text"),
        [
            ("eviction", "no-such-policy", {}, "plugin_name", "unknown eviction policy"),
            ("fairness", "lru", {}, "plugin_name", "is of kind eviction"),
            ("eviction", "ttl", {"no_such_param": 1}, "params", "no_such_param"),
            ("eviction", "ttl", {"ttl_s": "soon"}, "params", "ttl_s"),
        ],
    )
    def test_invalid_configurations_name_the_field(
        self, kind: str, name: str, params: dict, field: str, text: str
    ) -> None:
        with pytest.raises(ValidationError) as excinfo:
            Policy(kind=kind, plugin_name=name, params=params).full_clean()
        errors = excinfo.value.message_dict
        assert field in errors
        assert text in errors[field][0]
        assert not Policy.objects.exists()


@pytest.mark.django_db
class TestActivation:
    def test_activations_form_a_chain_with_an_audit_trail(self) -> None:
        lru, aeg = make_policy("eviction", "lru"), make_policy("eviction", "aeg")
        first = activate_policy(lru, actor="alice")
        second = activate_policy(aeg, actor="bob", reason="try SAGA")
        assert current_activation("eviction") == second
        assert second.previous == first and first.previous is None
        events = list(AuditEvent.objects.filter(action="policy.activate").order_by("id"))
        assert [e.actor for e in events] == ["alice", "bob"]
        assert events[1].before["policy"] == str(lru)
        assert events[1].after["policy"] == str(aeg)

    def test_rollback_reactivates_the_previous_policy(self) -> None:
        lru, aeg = make_policy("eviction", "lru"), make_policy("eviction", "aeg")
        activate_policy(lru, actor="alice")
        activate_policy(aeg, actor="alice")
        rolled = rollback("eviction", actor="carol")
        assert rolled.policy == lru and rolled.is_rollback
        assert current_activation("eviction") == rolled
        assert AuditEvent.objects.filter(action="policy.rollback", actor="carol").exists()

    def test_rollback_without_history_is_refused(self) -> None:
        with pytest.raises(ActivationError, match="no earlier eviction activation"):
            rollback("eviction", actor="carol")
        activate_policy(make_policy("eviction", "lru"), actor="alice")
        with pytest.raises(ActivationError):
            rollback("eviction", actor="carol")

    def test_a_routing_activation_is_the_gateways_and_applied_at_once(self) -> None:
        activation = activate_policy(make_policy("routing", "least-loaded"), actor="a")
        assert activation.rollout == "applied" and activation.rollout_settled_at is not None
        assert not activation.node_rollouts.exists()  # no node is asked to answer for it
        node_kinds = {m["kind"] for m in current_cluster_policies()}
        assert "routing" not in node_kinds
        activate_policy(make_policy("admission", "saga"), actor="a")
        assert {m["kind"] for m in current_cluster_policies()} == node_kinds | {"admission"}


@pytest.mark.django_db(transaction=True)
def test_concurrent_activations_never_fork_the_history() -> None:
    """Eight admins activate at once: every success extends one linear chain."""
    policies = [make_policy("routing", name) for name in
                ("round-robin", "least-loaded", "session-affinity", "saga")] * 2
    activate_policy(policies[0], actor="seed")
    barrier = threading.Barrier(len(policies))
    outcomes: list[str] = []

    def worker(policy: Policy) -> None:
        barrier.wait()
        try:
            activate_policy(policy, actor="racer")
            outcomes.append("ok")
        except ConcurrentActivation:
            outcomes.append("conflict")
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(p,)) for p in policies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    chain = list(PolicyActivation.objects.filter(kind="routing").order_by("id"))
    assert len(chain) == 1 + outcomes.count("ok")
    for earlier, later in zip(chain, chain[1:], strict=False):
        assert later.previous_id == earlier.pk  # linear: each link points at the one before

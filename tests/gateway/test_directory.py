"""The gateway's view of the cluster: up nodes, tenants, active policies, learned graphs."""

from __future__ import annotations

import pytest

from controlplane.gateway.directory import ClusterDirectory
from controlplane.nodes.models import Node, NodeStatus
from controlplane.policies.models import Policy
from controlplane.policies.services import activate_policy
from controlplane.workflows.models import AgentTemplate
from tests.controlplane.test_node_consumer import _learned_graph

pytestmark = pytest.mark.django_db


def test_directory_follows_nodes_policies_and_learned_graphs() -> None:
    Node.objects.create(name="up", status=NodeStatus.UP, address="http://a:1", model_name="m",
                        last_load={"queue_delay_s": 2.5, "kv_total_tokens": 100,
                                   "kv_used_tokens": 40})
    Node.objects.create(name="down", status=NodeStatus.DOWN, address="http://b:1", model_name="m")
    directory = ClusterDirectory()
    directory.refresh(force=True)
    [entry] = directory.nodes_for("m")
    assert entry.name == "up" and entry.view.queue_delay_s == 2.5
    assert entry.view.kv_free_tokens == 60
    assert directory.manager.active()["routing"].name == "saga"

    policy = Policy(kind="routing", plugin_name="least-loaded", params={})
    policy.full_clean()
    policy.save()
    activate_policy(policy, actor="test")
    AgentTemplate.objects.create(name="swe-agent", aeg_stats=_learned_graph("swe-agent"),
                                 aeg_updated_at="2026-01-01T00:00:00Z")
    directory.refresh(force=True)
    assert directory.manager.active()["routing"].name == "least-loaded"
    assert directory.manager.aeg.to_json("swe-agent")["workflows_seen"] == 1

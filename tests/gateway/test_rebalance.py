"""Live work stealing: the active routing policy moves homes of waiting workflows off a
backlogged node (Workflow.home_node, the one store of homes); other policies never move
anything."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.gateway import runtime as views
from controlplane.nodes.models import Node, NodeStatus
from controlplane.nodes.tasks import rebalance_workflows
from controlplane.policies.models import Policy
from controlplane.policies.services import activate_policy
from controlplane.tenants.models import Tenant
from controlplane.workflows.models import AgentTemplate, Call, CallOutcome, Workflow
from controlplane.workflows.states import WorkflowState

pytestmark = pytest.mark.django_db(transaction=True)


def node(name: str, queue_delay_s: float) -> Node:
    return Node.objects.create(
        name=name, status=NodeStatus.UP, address=f"http://{name}:9000", model_name="m",
        kv_capacity_tokens=400_000,
        last_load={"waiting": 20 if queue_delay_s else 0, "running": 8, "kv_used_tokens": 10_000,
                   "kv_total_tokens": 400_000, "queue_delay_s": queue_delay_s, "load": 0.5})


def waiting_workflows(home: Node, count: int) -> list[Workflow]:
    tenant, _ = Tenant.objects.get_or_create(slug="acme", defaults={"name": "Acme"})
    template, _ = AgentTemplate.objects.get_or_create(name="swe-agent")
    out = []
    for i in range(count):
        wf = Workflow.objects.create(tenant=tenant, template=template, external_id=f"t{i}",
                                     home_node=home)
        wf.transition_to(WorkflowState.RUNNING)
        Call.objects.create(workflow=wf, seq=0, node=home, prompt_tokens=2000 + i,
                            output_tokens=100, outcome=CallOutcome.COMPLETED)
        wf.transition_to(WorkflowState.WAITING_TOOL)
        out.append(wf)
    return out


@pytest.fixture(autouse=True)
def _fresh_directory(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    views.routing_state().clear()
    monkeypatch.setattr(views, "directory", type(views.directory)())


def test_saga_steals_waiting_workflows_from_a_backlogged_node(settings: Any) -> None:
    hot, idle = node("gpu-hot", 60.0), node("gpu-idle", 0.0)
    workflows = waiting_workflows(hot, 3)
    moves = rebalance_workflows()
    assert moves and all(m.endswith("gpu-hot->gpu-idle") for m in moves)
    moved = {int(m.split(":")[0]) for m in moves}
    for wf in workflows:
        wf.refresh_from_db()
        expected = idle if wf.pk in moved else hot
        assert wf.home_node_id == expected.pk


def test_no_move_when_load_is_balanced() -> None:
    hot = node("gpu-a", 1.0)
    node("gpu-b", 0.5)
    waiting_workflows(hot, 3)
    assert rebalance_workflows() == []


def test_request_level_policies_never_move_workflows() -> None:
    policy = Policy(kind="routing", plugin_name="session-affinity", params={})
    policy.full_clean()
    policy.save()
    activate_policy(policy, actor="test")
    hot = node("gpu-hot", 60.0)
    node("gpu-idle", 0.0)
    waiting_workflows(hot, 3)
    assert rebalance_workflows() == []

"""Activations reach connected nodes, nodes acknowledge, and the control plane records it."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from controlplane.asgi import application
from controlplane.nodes.models import Node, NodePolicyState, PolicyApplyStatus
from controlplane.policies.models import Policy, PolicyActivation
from controlplane.policies.services import activate_policy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@database_sync_to_async
def make_node(name: str) -> str:
    node = Node(name=name)
    token = node.assign_new_token()
    node.save()
    return token


@database_sync_to_async
def activate(kind: str, name: str, params: dict | None = None) -> PolicyActivation:
    policy = Policy(kind=kind, plugin_name=name, params=params or {})
    policy.full_clean()
    policy.save()
    return activate_policy(policy, actor="test")


@database_sync_to_async
def states() -> dict[tuple[str, str], tuple[str, int | None, str]]:
    return {
        (s.node.name, s.kind): (s.status, s.activation_id, s.error)
        for s in NodePolicyState.objects.select_related("node")
    }


async def connect_and_register(token: str) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(
        application, "/ws/node/", headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    assert (await comm.connect())[0]
    await comm.send_json_to({"type": "register", "engine": "sim"})
    assert (await comm.receive_json_from(timeout=5))["type"] == "registered"
    return comm


async def test_registration_syncs_the_active_policies(redis_url: str) -> None:
    token = await make_node("gpu-1")
    eviction = await activate("eviction", "ttl", {"ttl_s": 30})
    fairness = await activate("fairness", "afs")
    comm = await connect_and_register(token)
    sync = await comm.receive_json_from(timeout=5)
    assert sync["type"] == "policy.sync"
    by_kind = {p["kind"]: p for p in sync["policies"]}
    assert set(by_kind) == {"eviction", "fairness"}
    assert by_kind["eviction"]["activation_id"] == eviction.pk
    assert by_kind["eviction"]["name"] == "ttl" and by_kind["eviction"]["params"]["ttl_s"] == 30
    assert by_kind["fairness"]["activation_id"] == fairness.pk
    await comm.disconnect()


async def test_a_swap_reaches_every_node_and_each_ack_is_recorded(redis_url: str) -> None:
    nodes = {name: await connect_and_register(await make_node(name)) for name in ("a", "b")}
    for comm in nodes.values():
        assert (await comm.receive_json_from(timeout=5))["type"] == "policy.sync"

    activation = await activate("admission", "lpm")
    for comm in nodes.values():
        frame = await comm.receive_json_from(timeout=5)
        assert frame["type"] == "policy"
        assert frame["policy"]["activation_id"] == activation.pk
        assert frame["policy"]["name"] == "lpm"
    pending = await states()
    assert pending[("a", "admission")][0] == PolicyApplyStatus.PENDING

    await nodes["a"].send_json_to({"type": "policy.ack", "activation_id": activation.pk,
                                   "kind": "admission", "applied": True})
    await nodes["b"].send_json_to({"type": "policy.ack", "activation_id": activation.pk,
                                   "kind": "admission", "applied": False,
                                   "error": "ValueError in saga_admission_order; kept priority"})
    for comm in nodes.values():  # a heartbeat round-trip orders the ack before the assertions
        await comm.send_json_to({"type": "heartbeat"})
        assert (await comm.receive_json_from(timeout=5))["type"] == "heartbeat.ack"

    recorded = await states()
    assert recorded[("a", "admission")] == (PolicyApplyStatus.APPLIED, activation.pk, "")
    status, activation_id, error = recorded[("b", "admission")]
    assert (status, activation_id) == (PolicyApplyStatus.REJECTED, activation.pk)
    assert "kept priority" in error
    for comm in nodes.values():
        await comm.disconnect()


async def test_a_run_time_failure_is_recorded_with_its_hook_and_replacement(
        redis_url: str) -> None:
    from controlplane.policies.models import PolicyFailure

    comm = await connect_and_register(await make_node("a"))
    assert (await comm.receive_json_from(timeout=5))["type"] == "policy.sync"
    activation = await activate("admission", "lpm")
    assert (await comm.receive_json_from(timeout=5))["type"] == "policy"
    await comm.send_json_to({"type": "policy.ack", "activation_id": activation.pk,
                             "kind": "admission", "applied": True})
    await comm.send_json_to({
        "type": "policy.ack", "activation_id": activation.pk, "kind": "admission",
        "applied": False, "run_time": True, "hook": "saga_admission_order",
        "replaced_by": "saga", "error": "failed at run time, fell back to saga: KeyError: 'x'"})
    await comm.send_json_to({"type": "heartbeat"})
    assert (await comm.receive_json_from(timeout=5))["type"] == "heartbeat.ack"

    failures = await database_sync_to_async(lambda: list(PolicyFailure.objects.values(
        "tier", "reporter", "kind", "policy", "hook", "replaced_by", "error")))()
    assert failures == [{"tier": "node", "reporter": "a", "kind": "admission", "policy": "lpm",
                         "hook": "saga_admission_order", "replaced_by": "saga",
                         "error": "failed at run time, fell back to saga: KeyError: 'x'"}]
    await comm.disconnect()

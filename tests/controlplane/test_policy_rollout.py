"""An activation's rollout is settled from the nodes' answers: applied, partial, or failed; a
failed activation (every node refused it) is never the active policy."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client

from controlplane.asgi import application
from controlplane.audit.models import AuditEvent
from controlplane.nodes.models import Node
from controlplane.policies.distribution import current_cluster_policies
from controlplane.policies.models import Policy, PolicyActivation, RolloutStatus
from controlplane.policies.rollout import rollout_status
from controlplane.policies.services import activate_policy, current_activation, rollback
from tests.live import NodeProcess, serve_control_plane, wait_for


@pytest.mark.parametrize(("applied", "rejected", "pending", "status"), [
    (0, 0, 2, RolloutStatus.PENDING),
    (1, 0, 1, RolloutStatus.PENDING),
    (0, 1, 1, RolloutStatus.PENDING),
    (1, 1, 1, RolloutStatus.PARTIAL),
    (2, 0, 0, RolloutStatus.APPLIED),
    (1, 1, 0, RolloutStatus.PARTIAL),
    (0, 2, 0, RolloutStatus.FAILED),
    (0, 0, 0, RolloutStatus.PENDING),
])
def test_rollout_status_from_the_answers(applied: int, rejected: int, pending: int,
                                         status: str) -> None:
    assert rollout_status(applied, rejected, pending) == status


@database_sync_to_async
def make_node(name: str) -> str:
    node = Node(name=name)
    token = node.assign_new_token()
    node.save()
    return token


@database_sync_to_async
def activate(kind: str, name: str) -> PolicyActivation:
    policy = Policy(kind=kind, plugin_name=name, params={})
    policy.full_clean()
    policy.save()
    return activate_policy(policy, actor="test")


@database_sync_to_async
def reload(activation: PolicyActivation) -> PolicyActivation:
    return PolicyActivation.objects.get(pk=activation.pk)


async def register(name: str) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(application, "/ws/node/", headers=[
        (b"authorization", f"Bearer {await make_node(name)}".encode())])
    assert (await comm.connect())[0]
    await comm.send_json_to({"type": "register", "engine": "sim"})
    assert (await comm.receive_json_from(timeout=5))["type"] == "registered"
    assert (await comm.receive_json_from(timeout=5))["type"] == "policy.sync"
    return comm


async def answer(comm: WebsocketCommunicator, activation: PolicyActivation, applied: bool,
                 error: str = "") -> None:
    frame = await comm.receive_json_from(timeout=5)
    assert frame["type"] == "policy" and frame["policy"]["activation_id"] == activation.pk
    await comm.send_json_to({"type": "policy.ack", "activation_id": activation.pk,
                             "kind": activation.kind, "applied": applied, "error": error})
    await comm.send_json_to({"type": "heartbeat"})  # orders the ack before what follows
    assert (await comm.receive_json_from(timeout=5))["type"] == "heartbeat.ack"


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_refused_by_every_node_is_failed_and_not_active(redis_url: str) -> None:
    a, b = await register("a"), await register("b")
    lru = await activate("eviction", "lru")
    await answer(a, lru, True)
    await answer(b, lru, True)
    assert (await reload(lru)).rollout == RolloutStatus.APPLIED

    refused = await activate("eviction", "ttl")
    await answer(a, refused, False, "cannot run ttl here")
    assert (await reload(refused)).rollout == RolloutStatus.PENDING  # b has not answered
    await answer(b, refused, False, "cannot run ttl here")
    assert (await reload(refused)).rollout == RolloutStatus.FAILED

    active = await database_sync_to_async(current_activation)("eviction")
    assert active == lru
    synced = await database_sync_to_async(current_cluster_policies)()
    assert [p["activation_id"] for p in synced if p["kind"] == "eviction"] == [lru.pk]
    event = await database_sync_to_async(
        lambda: AuditEvent.objects.get(action="policy.rollout_failed"))()
    assert event.object_id == str(refused.pk)
    assert {r["node"] for r in event.after["refused_by"]} == {"a", "b"}

    # a node that registers now is sent the policy in force, never the failed one
    c = WebsocketCommunicator(application, "/ws/node/", headers=[
        (b"authorization", f"Bearer {await make_node('c')}".encode())])
    assert (await c.connect())[0]
    await c.send_json_to({"type": "register", "engine": "sim"})
    await c.receive_json_from(timeout=5)
    sync = await c.receive_json_from(timeout=5)
    assert [p["activation_id"] for p in sync["policies"]] == [lru.pk]
    for comm in (a, b, c):
        await comm.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_partial_rollout_stays_active_and_a_pending_node_going_down_settles_it(
        redis_url: str) -> None:
    a, b = await register("a"), await register("b")
    first = await activate("fairness", "fcfs")
    await answer(a, first, True)
    await answer(b, first, False, "nope")
    assert (await reload(first)).rollout == RolloutStatus.PARTIAL
    assert await database_sync_to_async(current_activation)("fairness") == first

    second = await activate("fairness", "vtc")
    await answer(a, second, False, "refused")
    assert (await reload(second)).rollout == RolloutStatus.PENDING
    await b.receive_json_from(timeout=5)  # b got it but goes away without answering
    await b.disconnect()
    await database_sync_to_async(lambda: wait_for(
        lambda: PolicyActivation.objects.get(pk=second.pk).rollout == RolloutStatus.FAILED,
        "the rollout to settle once b is down", timeout=5))()
    assert await database_sync_to_async(current_activation)("fairness") == first
    await a.disconnect()


@pytest.mark.django_db
def test_rollback_skips_failed_activations() -> None:
    def make(name: str) -> Policy:
        policy = Policy(kind="eviction", plugin_name=name, params={})
        policy.full_clean()
        policy.save()
        return policy

    lru, aeg, ttl = make("lru"), make("aeg"), make("ttl")
    activate_policy(lru, actor="t")
    second = activate_policy(aeg, actor="t")
    PolicyActivation.objects.filter(pk=second.pk).update(rollout=RolloutStatus.FAILED)
    third = activate_policy(ttl, actor="t")
    assert third.previous_id == second.pk  # the history keeps the failed link
    before = AuditEvent.objects.filter(action="policy.activate").latest("id").before
    assert before["policy"] == str(lru)  # what was in force, not the failed one
    rolled = rollback("eviction", actor="t")
    assert rolled.policy == lru


@pytest.mark.django_db(transaction=True)
def test_live_nodes_refuse_belady_and_the_api_reports_it_failed(redis_url: str) -> None:
    """Two real sim node agents: the oracle-only eviction policy is refused by both."""
    get_user_model().objects.create_superuser("root", "", "pw-123456789")
    client = Client()
    client.login(username="root", password="pw-123456789")

    def post(path: str, body: dict[str, Any]) -> Any:
        return client.post(path, body, content_type="application/json")

    with serve_control_plane() as url:
        nodes = [NodeProcess(url, name, api_key=None).start() for name in ("sim-a", "sim-b")]
        try:
            good = post("/api/admin/policies/activate", {"kind": "eviction", "name": "aeg"})
            assert good.status_code == 201, good.content
            wait_for(lambda: client.get(f"/api/admin/policies/activations/{good.json()['id']}"
                                        ).json()["rollout"] == "applied", "aeg to be applied")
            bad = post("/api/admin/policies/activate", {"kind": "eviction", "name": "belady"})
            assert bad.status_code == 201
            path = f"/api/admin/policies/activations/{bad.json()['id']}"
            wait_for(lambda: client.get(path).json()["rollout"] == "failed", "belady to fail")
            detail = client.get(path).json()
            assert {n["node"]: n["status"] for n in detail["nodes"]} == {
                "sim-a": "rejected", "sim-b": "rejected"}
            assert all("simulator" in n["error"] for n in detail["nodes"])
            assert all(n["runs"]["name"] == "aeg" for n in detail["nodes"])
            assert detail["in_force_id"] == good.json()["id"]
            active = {a["kind"]: a for a in client.get("/api/admin/policies/active").json()}
            assert active["eviction"]["name"] == "aeg"
            assert active["eviction"]["id"] == good.json()["id"]
        finally:
            for node in nodes:
                node.stop()

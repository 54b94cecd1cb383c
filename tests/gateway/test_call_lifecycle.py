"""Every admitted call ends in exactly one recorded outcome, and in-flight counts come back to
exactly zero: client disconnects (streaming or not), gateway failures, dead gateway processes."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from controlplane.gateway import runtime
from controlplane.workflows.models import Call, CallOutcome, Workflow
from tests.gateway.conftest import tenant_key
from tests.live import wait_for

pytestmark = pytest.mark.django_db(transaction=True)
MODEL = "llama-3-8b"
LONG = {"saga_sim": {"output_tokens": 131072}}


def body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "write a novel"}], **extra}


def inflight_total() -> int:
    state = runtime.routing_state()
    return sum(f.calls for f in state.inflight(["gpu-0", "gpu-1"]).values())


def outcome_of_the_only_call() -> str:
    return Call.objects.get().outcome


def test_non_streaming_client_timeout_is_recorded_cancelled_and_frees_its_lease(
        cluster: dict[str, Any]) -> None:
    _tenant, key = tenant_key("acme")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{cluster['url']}/v1/chat/completions", json=body(**LONG), timeout=0.4,
                   headers={"Authorization": f"Bearer {key}"})
    wait_for(lambda: outcome_of_the_only_call() != CallOutcome.PENDING, "the call's outcome")
    call = Call.objects.get()
    assert call.outcome == CallOutcome.CANCELLED and call.finished_at is not None
    assert "client went away" in call.error
    assert inflight_total() == 0
    assert Workflow.objects.get().state == "failed"  # a single-call workflow whose call failed


def test_streaming_client_disconnect_is_recorded_cancelled(cluster: dict[str, Any]) -> None:
    _tenant, key = tenant_key("acme")
    with httpx.stream("POST", f"{cluster['url']}/v1/chat/completions",
                      json=body(stream=True, **LONG),
                      headers={"Authorization": f"Bearer {key}"}, timeout=10) as response:
        assert response.status_code == 200
        next(response.iter_lines())  # the stream is flowing; now walk away
    wait_for(lambda: outcome_of_the_only_call() != CallOutcome.PENDING, "the call's outcome")
    assert Call.objects.get().outcome == CallOutcome.CANCELLED
    assert inflight_total() == 0


def test_inflight_counts_the_calls_running_now(cluster: dict[str, Any]) -> None:
    _tenant, key = tenant_key("acme")
    with httpx.stream("POST", f"{cluster['url']}/v1/chat/completions",
                      json=body(stream=True, **LONG),
                      headers={"Authorization": f"Bearer {key}"}, timeout=10) as response:
        lines = response.iter_lines()  # held: dropping the iterator would close the stream
        next(lines)
        time.sleep(0.5)
        assert inflight_total() == 1
        assert Call.objects.get().outcome == CallOutcome.PENDING
    wait_for(lambda: inflight_total() == 0, "the lease to be released")


def test_a_gateway_failure_is_a_500_json_and_a_failed_call(
        cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from controlplane.gateway import upstream

    def broken(self: Any, payload: Any) -> None:
        raise RuntimeError("bug in the relay")

    monkeypatch.setattr(upstream.Observed, "read_body", broken)
    _tenant, key = tenant_key("acme")
    response = httpx.post(f"{cluster['url']}/v1/chat/completions", json=body(max_tokens=3),
                          headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "gateway_error"
    call = Call.objects.get()
    assert call.outcome == CallOutcome.FAILED and "bug in the relay" in call.error
    assert inflight_total() == 0


def test_reconciliation_closes_the_calls_of_a_dead_gateway_process(
        cluster: dict[str, Any]) -> None:
    """A call held by a process that stopped renewing its liveness lease is closed as
    interrupted, its lease released; calls of live processes are left alone."""
    from controlplane.gateway.reconcile import reconcile

    _tenant, key = tenant_key("acme")
    reply = httpx.post(f"{cluster['url']}/v1/chat/completions", json=body(max_tokens=2),
                       headers={"Authorization": f"Bearer {key}", "X-Saga-Workflow": "w1"},
                       timeout=10)
    assert reply.status_code == 200
    workflow = Workflow.objects.get(external_id="w1")
    state = runtime.routing_state()
    dead = Call.objects.create(workflow=workflow, seq=1, prompt_tokens=10,
                               node=Call.objects.get(seq=0).node, gateway="gw-dead")
    alive = Call.objects.create(workflow=workflow, seq=2, prompt_tokens=10,
                                node=dead.node, gateway="gw-alive")
    state.acquire(dead.node.name, str(dead.pk), 10)
    state.heartbeat("gw-alive")
    assert reconcile(state) == 1
    dead.refresh_from_db()
    alive.refresh_from_db()
    assert dead.outcome == CallOutcome.INTERRUPTED and "gw-dead" in dead.error
    assert alive.outcome == CallOutcome.PENDING
    assert state.inflight([dead.node.name])[dead.node.name].calls == 0
    assert reconcile(state) == 0  # idempotent


def test_leases_of_a_process_that_stops_renewing_expire(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from controlplane.gateway import routing_state as rs

    state = rs.RedisRoutingState(redis_url)
    state.clear()
    monkeypatch.setattr(rs, "LEASE_TTL_S", 0.3)
    state.acquire("n1", "c1", 100)
    state.acquire("n1", "c2", 50)
    assert state.inflight(["n1"])["n1"] == rs.InFlight(2, 150)
    state.renew([("n1", "c2")])
    time.sleep(0.2)
    state.renew([("n1", "c2")])
    time.sleep(0.2)
    assert state.inflight(["n1"])["n1"] == rs.InFlight(1, 50)  # c1 lapsed, c2 was renewed
    assert state.release("n1", "c2") and not state.release("n1", "c2")
    assert state.inflight(["n1"])["n1"] == rs.InFlight(0, 0)

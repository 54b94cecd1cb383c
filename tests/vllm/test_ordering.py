"""(a) Admission order and preemption victims follow the fairness policy, and a live swap
changes them at the next step.

Workflow A has already received GPU time (3 s per step of its first call, on a fake clock),
workflow B none. Under FCFS the older call goes first; under Autellix's PLAS (least attained
service of the workflow first) B's call goes first even though it arrived later.
"""

from __future__ import annotations

import pytest

from tests.vllm.fakes import VLLM_MISSING_REASON

pytest.importorskip("vllm", reason=VLLM_MISSING_REASON)

from pathlib import Path

from tests.vllm.harness import (
    FakeClock,
    make_request,
    make_scheduler,
    run_until_done,
    step,
    tokens,
)


def _engine_with_served_workflow(llama_dir: Path, clock: FakeClock):  # type: ignore[no-untyped-def]
    scheduler = make_scheduler(
        llama_dir,
        max_num_seqs=1,
        clock=clock,
        saga={"policy_set": "lru:session-affinity:fcfs"},
    )
    scheduler.add_request(make_request("a0", tokens(0, 32), workflow="A", arrival_time=clock.now))
    assert run_until_done(scheduler, clock=clock, step_s=3.0) == ["a0"]
    scheduler.notify_tool_start("A", "bash")
    # A long call occupies the only batch slot while A's and B's next calls queue up.
    scheduler.add_request(
        make_request("c0", tokens(100, 32), workflow="C", max_tokens=20, arrival_time=clock.now)
    )
    output, _ = step(scheduler, clock=clock, step_s=0.1)
    assert list(output.num_scheduled_tokens) == ["c0"]
    scheduler.add_request(make_request("a1", tokens(200, 32), workflow="A", arrival_time=clock.now))
    clock.advance(0.5)
    scheduler.add_request(make_request("b1", tokens(300, 32), workflow="B", arrival_time=clock.now))
    return scheduler


def _admission_of_a1_b1(scheduler, clock: FakeClock) -> list[str]:  # type: ignore[no-untyped-def]
    admitted: list[str] = []
    run_until_done(scheduler, clock=clock, step_s=0.1, admitted=admitted)
    return [r for r in admitted if r in ("a1", "b1")]


def test_fcfs_admits_the_older_call_first(llama_dir: Path, clock: FakeClock) -> None:
    scheduler = _engine_with_served_workflow(llama_dir, clock)
    assert _admission_of_a1_b1(scheduler, clock) == ["a1", "b1"]


def test_live_swap_to_plas_changes_the_order_at_the_next_step(
    llama_dir: Path, clock: FakeClock
) -> None:
    scheduler = _engine_with_served_workflow(llama_dir, clock)
    step(scheduler, clock=clock, step_s=0.1)  # a step under FCFS with both calls waiting
    assert [r.request_id for r in scheduler.waiting] == ["a1", "b1"]
    reply = scheduler.saga_control("activate", {"kind": "fairness", "name": "plas"})
    assert reply["fairness"]["name"] == "plas"
    assert _admission_of_a1_b1(scheduler, clock) == ["b1", "a1"]
    assert scheduler.saga_tracker.workflows["A"].service_s >= 3.0


@pytest.mark.parametrize(("fairness", "victim"), [("fcfs", "b1"), ("plas", "a1")])
def test_preemption_victim_follows_the_fairness_policy(
    llama_dir: Path, clock: FakeClock, fairness: str, victim: str
) -> None:
    """Two running calls outgrow a 10-block pool; vLLM (priority policy) preempts the largest
    (priority, arrival), which SAGA ranks by fairness: under FCFS the later call, under PLAS the
    call of the workflow that was served most."""
    scheduler = make_scheduler(
        llama_dir,
        num_blocks=11,
        clock=clock,
        saga={"policy_set": f"lru:session-affinity:{fairness}"},
    )
    scheduler.add_request(make_request("a0", tokens(0, 16), workflow="A", arrival_time=clock.now))
    run_until_done(scheduler, clock=clock, step_s=3.0)
    scheduler.add_request(
        make_request("a1", tokens(200, 48), workflow="A", max_tokens=60, arrival_time=clock.now)
    )
    clock.advance(0.5)
    scheduler.add_request(
        make_request("b1", tokens(300, 48), workflow="B", max_tokens=60, arrival_time=clock.now)
    )
    preempted: list[str] = []
    for _ in range(200):
        if not scheduler.has_requests():
            break
        output, _ = step(scheduler, clock=clock, step_s=0.01)
        preempted.extend(sorted(output.preempted_req_ids or ()))
    assert not scheduler.has_requests()
    assert preempted, "the scenario must force a preemption"
    assert preempted[0] == victim
    # vLLM's own view of the user's priority is untouched outside schedule().
    assert all(r.priority == 0 for r in scheduler.requests.values())

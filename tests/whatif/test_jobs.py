"""What-if replay on PostgreSQL: the recorded prompt structure, the workload a window becomes,
the policy sets it replays (the live one with its swaps), runs and their tasks (progress,
failure, cancellation, the merge) and the live-vs-replay agreement."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from controlplane.policies.services import activate_policy, configured_policy
from controlplane.whatif import candidates, jobs, replay
from controlplane.whatif.digests import BLOCK_TOKENS, DIGEST_BYTES, block_chain, split_chain
from controlplane.whatif.errors import WhatIfInputError
from controlplane.whatif.models import PromptStructure, RunStatus, WhatIfRun
from controlplane.whatif.workload import build
from nodeagent.workloads.model import ROOT
from tests.whatif.traffic import SYSTEM, record_traffic

pytestmark = pytest.mark.django_db


@pytest.fixture
def window() -> tuple[Any, Any]:
    start = timezone.now() - timedelta(minutes=30)
    record_traffic(start, {"acme": 3, "noisy": 4})
    return start - timedelta(seconds=1), start + timedelta(minutes=5)


def test_digests_chain_blocks_under_the_deployment_key() -> None:
    a = [f"tok{i}" for i in range(50)]
    b = a[:40] + ["other"] * 10
    chain_a, chain_b = split_chain(block_chain(a, b"k1")), split_chain(block_chain(b, b"k1"))
    assert len(chain_a) == 50 // BLOCK_TOKENS and all(len(d) == DIGEST_BYTES for d in chain_a)
    assert chain_a[:2] == chain_b[:2] and chain_a[2] != chain_b[2]  # block 3 holds "other"
    assert split_chain(block_chain(a, b"k2"))[0] != chain_a[0]  # another deployment's key
    assert split_chain(block_chain(["x"] + a[1:], b"k1"))[1] != chain_a[1]  # chained


def test_the_recorded_structure_holds_no_prompt_text(window: tuple[Any, Any]) -> None:
    row = PromptStructure.objects.order_by("call_id").first()
    assert row is not None and row.tokens == row.call.prompt_tokens
    stored = bytes(row.digests)
    assert len(stored) == (row.tokens // BLOCK_TOKENS) * DIGEST_BYTES
    assert b"careful" not in stored and SYSTEM[:16].encode() not in stored


def test_a_window_becomes_the_workload_it_recorded(window: tuple[Any, Any]) -> None:
    since, until = window
    recorded = build(since, until)
    wl = recorded.workload
    assert len(wl.workflows) == 7 and wl.n_calls == 21
    assert set(wl.tenants) == {"acme", "noisy"} and wl.tenants["acme"].weight == 2.0
    arrivals = [w.arrival_s for w in wl.workflows]
    assert arrivals[0] == 0.0 and arrivals[1] == pytest.approx(4.0)
    first, second = wl.workflows[0], wl.workflows[1]
    tree = wl.tree
    # every workflow's first prompt starts with the shared system prompt's blocks
    shared = tree.common_prefix_tokens(first.calls[0].prompt_segment,
                                       second.calls[0].prompt_segment)
    assert shared == (344 // BLOCK_TOKENS) * BLOCK_TOKENS  # the full blocks of the system prompt
    assert tree.owner(tree.path(first.calls[0].prompt_segment)[0]) is None
    # the next call re-sends the conversation: it goes on from the previous call's output
    c0, c1 = first.calls[0], first.calls[1]
    assert c0.output_segment != ROOT and tree.is_ancestor(c0.output_segment, c1.prompt_segment)
    assert (c0.tool, c0.gap_after_s) == ("pytest", pytest.approx(1.0))
    assert first.calls[-1].gap_after_s == 0.0
    assert recorded.counts["calls_estimated_structure"] == 0
    assert any("output KV" in e for e in recorded.estimated)
    assert recorded.live[first.workflow_id]["head_s"] == pytest.approx(0.2)


def test_calls_recorded_without_structure_are_estimated(window: tuple[Any, Any]) -> None:
    since, until = window
    PromptStructure.objects.filter(call__seq=1).delete()
    recorded = build(since, until)
    assert recorded.counts["calls_estimated_structure"] == 7
    assert any("7 calls" in e for e in recorded.estimated)


@pytest.mark.parametrize(("kwargs", "field", "words"), [
    ({"until": -1}, "until", "empty window"),
    ({"since": -30 * 86400}, "since", "larger than the limit"),
    ({"tenants": ["nobody"]}, "tenants", "unknown tenant"),
    ({"tenants": ["quiet"]}, "tenants", "no traffic"),
    ({"since": 3600, "until": 7200}, "since", "no recorded traffic"),
    ({"policies": ["nope"]}, "policies", "unknown policy set"),
    ({"policies": ["x=aeg[retention_factor=-3]:saga:saga:afs"]}, "policies", "retention_factor"),
    ({"cluster": {"mode": "fixed", "gpus": 3, "profile": "a100-llama3-70b-tp4"}},
     "cluster.gpus", "multiple"),
    ({"loads": [0]}, "loads", "load points"),
])
def test_bad_input_names_the_field(window: tuple[Any, Any], kwargs: dict[str, Any], field: str,
                                   words: str) -> None:
    from controlplane.tenants.models import Tenant

    Tenant.objects.create(slug="quiet", name="Quiet")
    since, until = window
    now = timezone.now()
    spec: dict[str, Any] = {"since": since, "until": until, "policies": ["saga"]}
    if "since" in kwargs:
        spec["since"] = now + timedelta(seconds=kwargs.pop("since"))
    if "until" in kwargs:
        spec["until"] = spec["since"] + timedelta(seconds=kwargs.pop("until"))
    spec.update(kwargs)
    with pytest.raises(WhatIfInputError) as err:
        jobs.create_run(jobs.RunSpec(**spec), actor="test")
    assert err.value.field == field and words in err.value.message
    assert WhatIfRun.objects.count() == 0


def run_all(run: WhatIfRun) -> WhatIfRun:
    for task_id in run.tasks.order_by("index").values_list("pk", flat=True):
        jobs.execute(task_id)
    run.refresh_from_db()
    return run


def test_a_run_replays_every_set_at_every_load_and_merges(window: tuple[Any, Any]) -> None:
    since, until = window
    run = jobs.create_run(jobs.RunSpec(since, until, ["active", "baseline", "saga"],
                                       loads=[1.0, 3.0]), actor="test")
    assert [(t.policy, t.load) for t in run.tasks.order_by("index")] == [
        ("active", 1.0), ("baseline", 1.0), ("saga", 1.0),
        ("active", 3.0), ("baseline", 3.0), ("saga", 3.0)]
    assert run.cluster["instances"] == 1 and run.cluster["profile"] == "h100-llama3-8b"
    run = run_all(run)
    assert run.status == RunStatus.SUCCEEDED and run.finished_at is not None
    results = run.results
    assert list(results["policies"]) == ["active", "baseline", "saga"]  # the reference first
    assert results["reference_policy"] == "active"
    for figs in results["policies"].values():
        assert figs["tasks_completed"] == 7 and figs["calls_lost"] == 0
        assert {"tct_p50_s", "tct_geomean_speedup", "tct_speedup_ci95", "slo_attainment",
                "recompute_tokens", "throughput_tasks_per_hour", "tenants"} <= set(figs)
    assert results["policies"]["active"]["tct_geomean_speedup"] == 1.0
    assert set(results["sweep"]) == {"1", "3"}
    # three times the arrival rate: the same work in a shorter span
    assert (results["sweep"]["3"]["saga"]["makespan_s"]
            < results["sweep"]["1"]["saga"]["makespan_s"])
    assert all(t.done == t.total == 7 and t.worker for t in run.tasks.all())
    agree = results["agreement"]
    assert set(agree["tenants"]) == {"acme", "noisy"}
    assert "Task completion time" in run.report_html and "Live vs replay" in run.report_html
    assert "SLO" in run.report_html


def test_a_failing_task_fails_the_run_and_leaves_the_others_readable(
        window: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    since, until = window
    real = replay.run_task

    def flaky(data: Any, shape: Any, candidate: Any, load: float, progress: Any = None) -> Any:
        if candidate.name == "baseline":
            raise RuntimeError("node model exploded")
        return real(data, shape, candidate, load, progress)

    monkeypatch.setattr(replay, "run_task", flaky)
    run = run_all(jobs.create_run(jobs.RunSpec(since, until, ["saga", "baseline"]),
                                  actor="test"))
    assert run.status == RunStatus.FAILED
    assert "baseline @ load 1: RuntimeError: node model exploded" in run.error
    assert list(run.results["policies"]) == ["saga"]
    statuses = dict(run.tasks.values_list("policy", "status"))
    assert statuses == {"saga": "succeeded", "baseline": "failed"}


def test_cancelling_stops_queued_and_running_tasks(window: tuple[Any, Any],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    since, until = window
    run = jobs.create_run(jobs.RunSpec(since, until, ["saga", "baseline"]), actor="test")
    first = run.tasks.get(index=0)
    monkeypatch.setattr(jobs, "PROGRESS_EVERY_S", 0.0)
    real = replay.run_task

    def cancelled_midway(data: Any, shape: Any, candidate: Any, load: float,
                         progress: Any) -> Any:
        def report(done: int, total: int) -> None:
            if done == 2:
                assert jobs.cancel(run)
            progress(done, total)
        return real(data, shape, candidate, load, report)

    monkeypatch.setattr(replay, "run_task", cancelled_midway)
    jobs.execute(first.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.finished_at is not None
    assert dict(run.tasks.values_list("policy", "status")) == {"saga": "cancelled",
                                                                "baseline": "cancelled"}
    assert not jobs.cancel(run)  # already finished


def test_the_active_set_replays_its_swaps_at_their_times(window: tuple[Any, Any]) -> None:
    since, until = window
    activate_policy(configured_policy("eviction", "lru", {}), actor="test")
    swap = activate_policy(configured_policy("eviction", "ttl", {"ttl_s": 5.0}), actor="test")
    start = since + timedelta(seconds=1)
    # the ttl activation happened 10 s into the window
    from controlplane.policies.models import PolicyActivation

    PolicyActivation.objects.exclude(pk=swap.pk).update(activated_at=since - timedelta(hours=1))
    PolicyActivation.objects.filter(pk=swap.pk).update(activated_at=start + timedelta(seconds=10))
    active = candidates.active_over(since, until, start)
    assert active.names["eviction"] == "lru" and active.names["routing"] == "saga"
    assert [(s.at_s, s.kind, s.name, s.params["ttl_s"]) for s in active.swaps] == [
        (10.0, "eviction", "ttl", 5.0)]
    manager = replay.ScheduledPolicyManager(active)
    assert manager.current().eviction.name == "lru"
    manager.predict("w", 9.0)
    assert manager.current().eviction.name == "lru"
    manager.predict("w", 10.5)
    assert manager.current().eviction.name == "ttl"

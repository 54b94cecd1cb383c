"""Paired speedup statistics used by results.json."""

from __future__ import annotations

import math

import pytest

from nodeagent.bench.metrics import paired_speedup, percentile


def test_paired_speedup_is_geomean_of_ratios() -> None:
    ref = {"a": 10.0, "b": 40.0, "c": 9.0}
    this = {"a": 5.0, "b": 10.0, "c": 9.0}
    geo, ci, p = paired_speedup(ref, this)
    assert geo == pytest.approx(math.exp((math.log(2) + math.log(4) + 0) / 3))
    assert ci is not None and ci[0] <= geo <= ci[1]
    assert p is not None and 0 < p <= 1


def test_identical_runs_have_speedup_one_and_p_one() -> None:
    ref = {str(i): float(i + 1) for i in range(20)}
    geo, ci, p = paired_speedup(ref, dict(ref))
    assert geo == 1.0 and ci == [1.0, 1.0] and p == 1.0


def test_consistent_speedup_is_significant() -> None:
    ref = {str(i): 2.0 * (i + 1) for i in range(30)}
    this = {str(i): (i + 1) * (1.0 + 0.01 * (i % 3)) for i in range(30)}
    geo, _ci, p = paired_speedup(ref, this)
    assert geo == pytest.approx(2.0, rel=0.02)
    assert p is not None and p < 0.001


def test_unpaired_tasks_are_ignored_and_empty_gives_none() -> None:
    assert paired_speedup({"a": 1.0}, {"b": 1.0}) == (None, None, None)
    assert percentile([], 50) is None
    assert percentile([1.0, 2.0, 3.0], 50) == 2.0


def test_sustained_rate_leaves_out_the_last_tenth() -> None:
    from nodeagent.bench.metrics import sustained_rate
    from nodeagent.sim.cluster import ClusterResult, TaskResult

    def task(i: int, done: float | None) -> TaskResult:
        return TaskResult(f"w{i}", "t", 0.0, done, done, 1.0, 1, 1, 0)

    # nine tasks done by the first hour, the tenth (the longest session) after ten hours
    tasks = [task(i, 360.0 * (i + 1)) for i in range(9)] + [task(9, 36_000.0)]
    result = ClusterResult.__new__(ClusterResult)
    result.tasks = tasks
    assert sustained_rate(result) == pytest.approx(10.0)  # 9 tasks in 3,240 s
    result.tasks = tasks[:8] + [task(8, None), task(9, None)]
    assert sustained_rate(result) is None  # 90% never finished

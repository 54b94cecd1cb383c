"""The benchmark's maths: percentiles, summaries, added latency, the sweep and CPU per call."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.gatewaybench.stats import (
    CONTROL_PLANE,
    NODE,
    Comparison,
    batch_plan,
    cpu_per_call,
    percentile,
    plateau_reached,
    summarize,
    sweep_levels,
)


def test_percentile_interpolates_between_closest_ranks() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0) == 1.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 100) == 5.0
    assert percentile(list(range(101)), 99) == 99.0
    assert percentile([7.0], 99) == 7.0


@given(st.lists(st.floats(0, 1e4), min_size=1, max_size=200), st.floats(0, 100))
def test_percentile_matches_numpy_linear(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), abs=1e-6)


@pytest.mark.parametrize(("values", "q"), [([], 50), ([1.0], -1), ([1.0], 100.5)])
def test_percentile_rejects_bad_input(values: list[float], q: float) -> None:
    with pytest.raises(ValueError):
        percentile(values, q)


def test_summarize_reports_milliseconds_and_calls_per_second() -> None:
    summary = summarize([0.001 * i for i in range(1, 101)], errors=2, busy_s=2.0)
    assert summary.calls == 100 and summary.errors == 2
    assert summary.calls_per_s == 50.0
    assert summary.p50_ms == pytest.approx(50.5)
    assert summary.p99_ms == pytest.approx(99.01)
    assert summary.max_ms == pytest.approx(100.0)
    assert summary.mean_ms == pytest.approx(50.5)


@pytest.mark.parametrize(("latencies", "errors", "busy"), [([], 0, 1.0), ([0.1], -1, 1.0),
                                                           ([0.1], 0, 0.0)])
def test_summarize_rejects_bad_input(latencies: list[float], errors: int, busy: float) -> None:
    with pytest.raises(ValueError):
        summarize(latencies, errors, busy)


def test_added_latency_is_the_difference_of_percentiles() -> None:
    direct = summarize([0.001, 0.002, 0.003], 0, 1.0)
    gateway = summarize([0.004, 0.006, 0.020], 0, 1.0)
    comparison = Comparison(8, direct, gateway, {CONTROL_PLANE: 1.5})
    assert comparison.added_p50_ms == pytest.approx(6.0 - 2.0)
    assert comparison.added_p99_ms == pytest.approx(gateway.p99_ms - direct.p99_ms)
    data = comparison.as_dict()
    assert data["concurrency"] == 8 and data["cpu_ms_per_call"] == {CONTROL_PLANE: 1.5}
    assert data["gateway"]["p50_ms"] == pytest.approx(6.0)


def test_plateau_when_throughput_stops_growing() -> None:
    assert not plateau_reached([100.0])
    assert not plateau_reached([100.0, 180.0])
    assert plateau_reached([100.0, 180.0, 185.0])  # +2.8 %: less than the 5 % gain
    assert plateau_reached([100.0, 180.0, 150.0])
    assert not plateau_reached([100.0, 180.0, 185.0], gain=0.0)
    with pytest.raises(ValueError):
        plateau_reached([1.0, 2.0], gain=-0.1)


def test_sweep_levels_double_and_end_at_the_limit() -> None:
    assert sweep_levels(1, 16) == [1, 2, 4, 8, 16]
    assert sweep_levels(1, 100) == [1, 2, 4, 8, 16, 32, 64, 100]
    assert sweep_levels(3, 3) == [3]
    with pytest.raises(ValueError):
        sweep_levels(0, 4)
    with pytest.raises(ValueError):
        sweep_levels(8, 4)


def test_batch_plan_splits_the_calls() -> None:
    assert batch_plan(1000, 250) == [250] * 4
    assert batch_plan(1001, 250) == [250] * 4 + [1]
    assert batch_plan(10, 250) == [10]
    with pytest.raises(ValueError):
        batch_plan(0, 10)


def test_cpu_per_call_divides_by_the_calls_each_process_served() -> None:
    before = {CONTROL_PLANE: 10.0, NODE: 5.0}
    after = {CONTROL_PLANE: 12.0, NODE: 5.4}
    result = cpu_per_call(before, after, 1000)
    assert result[CONTROL_PLANE] == pytest.approx(2.0)  # 2 s over 1000 gateway calls
    assert result[NODE] == pytest.approx(0.2)  # 0.4 s over 2000 calls of both paths
    assert cpu_per_call({CONTROL_PLANE: None}, {CONTROL_PLANE: 1.0}, 10) == {}
    with pytest.raises(ValueError):
        cpu_per_call(before, after, 0)

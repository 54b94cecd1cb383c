"""Offered load: definition, independence of the cache policy, Poisson arrivals for a load."""

from __future__ import annotations

import statistics

import pytest

from nodeagent.bench.load import (
    OFFERED_LOAD_DEFINITION,
    arrivals_for_load,
    offered_load,
    rate_for_load,
    workflow_works,
    workload_work_seconds,
)
from nodeagent.sim.costmodel import CostModel
from nodeagent.workloads.model import ROOT, Workload, with_arrivals
from nodeagent.workloads.synthetic import generate
from nodeagent.workloads.tenants import assign_tenants, parse_tenants

CM = CostModel("a100-llama3-70b-tp4")


def mean_gap(w: Workload) -> float:
    times = sorted(x.arrival_s for x in w.workflows)
    return statistics.mean(b - a for a, b in zip(times, times[1:], strict=False))


def test_definition_is_stated() -> None:
    for phrase in ("perfect unbounded prefix cache", "instances", "independent of the cache"):
        assert phrase in OFFERED_LOAD_DEFINITION


def test_doubling_load_halves_mean_interarrival() -> None:
    w = generate("mix", 200, seed=1)
    one = arrivals_for_load(w, CM, 16, 0.5, seed=9)
    two = arrivals_for_load(w, CM, 16, 1.0, seed=9)
    assert mean_gap(two) == pytest.approx(mean_gap(one) / 2, rel=1e-9)
    assert rate_for_load(w, CM, 16, 1.0) == pytest.approx(2 * rate_for_load(w, CM, 16, 0.5))
    assert rate_for_load(w, CM, 8, 1.0) == pytest.approx(rate_for_load(w, CM, 16, 1.0) / 2)


def test_offered_load_of_evenly_spaced_arrivals() -> None:
    w = generate("swe", 50, seed=2)
    rate = rate_for_load(w, CM, 16, 0.8)
    even = with_arrivals(w, [i / rate for i in range(len(w.workflows))])
    assert offered_load(even, CM, 16) == pytest.approx(0.8, rel=1e-9)
    timed = arrivals_for_load(w, CM, 16, 0.8, seed=1)
    assert offered_load(timed, CM, 16) == pytest.approx(0.8, rel=0.35)  # Poisson sampling


def brute_force_works(w: Workload, cm: CostModel) -> list[float]:
    """Perfect cache by brute force: a call's cached part is the longest prefix it shares with
    anything computed before (earlier prompts and re-sent outputs), pairwise."""
    done: list[int] = []  # segments whose full path has been computed
    out: list[float] = []
    for wf in w.workflows:
        work = 0.0
        for c in wf.calls:
            cached = max((w.tree.common_prefix_tokens(c.prompt_segment, d) for d in done),
                         default=0)
            work += cm.call_work_seconds(c.input_tokens - cached, cached, c.output_tokens)
            done.append(c.prompt_segment)
            if c.output_segment != ROOT:
                done.append(c.output_segment)
        out.append(work)
    return out


def test_work_equals_brute_force_perfect_cache() -> None:
    w = generate("mix", 12, seed=4)
    assert workflow_works(w, CM) == pytest.approx(brute_force_works(w, CM), rel=1e-9)


def test_work_does_not_depend_on_order_timing_or_tenants() -> None:
    w = generate("mix", 40, seed=6)
    total = workload_work_seconds(w, CM)
    reversed_order = Workload(w.name, w.source, w.tree, list(reversed(w.workflows)), w.tenants)
    assert workload_work_seconds(reversed_order, CM) == pytest.approx(total, rel=1e-9)
    timed = arrivals_for_load(assign_tenants(w, parse_tenants("a:1,n:1:noisy")), CM, 4, 2.0)
    assert workload_work_seconds(timed, CM) == pytest.approx(total, rel=1e-9)


def test_shared_system_prompt_is_paid_once() -> None:
    w = generate("swe", 2, seed=1)
    works = workflow_works(w, CM)
    first_root = w.tree.path(w.workflows[0].calls[0].prompt_segment)[0]
    assert w.tree.path(w.workflows[1].calls[0].prompt_segment)[0] == first_root
    alone = workflow_works(Workload(w.name, w.source, w.tree, [w.workflows[1]], w.tenants), CM)
    assert alone[0] > works[1]  # without the first workflow it pays for the system prompt


def test_bad_load_arguments() -> None:
    w = generate("swe", 3, seed=1)
    with pytest.raises(ValueError, match="load must be > 0"):
        rate_for_load(w, CM, 16, 0.0)
    with pytest.raises(ValueError, match="n_instances"):
        rate_for_load(w, CM, 0, 1.0)

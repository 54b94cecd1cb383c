"""``saga bench`` end to end on a small synthetic workload, and its bad-input handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodeagent.bench.cli import main

SMALL = ["--workload", "synthetic:mix", "--sessions", "10", "--gpus", "8", "--seed", "2",
         "--quiet"]


def _run(tmp_path: Path, *extra: str) -> dict:  # type: ignore[type-arg]
    out = tmp_path / "out"
    assert main([*SMALL, "--out", str(out), *extra]) == 0
    return json.loads((out / "results.json").read_text())


def test_bench_writes_results_and_a_self_contained_report(tmp_path: Path) -> None:
    res = _run(tmp_path, "--policies", "baseline,saga,mine=ttl:least-loaded:vtc",
               "--tenants", "a:1,b:1:noisy")
    assert res["reference_policy"] == "baseline"
    assert list(res["policies"]) == ["baseline", "saga", "mine"]
    assert res["wall_seconds"] > 0
    for name, figs in res["policies"].items():
        for key in ("tasks", "calls_completed", "calls_lost", "tct_p50_s", "tct_p95_s",
                    "tct_p99_s", "tct_geomean_speedup", "tct_speedup_ci95", "p_value",
                    "slo_attainment", "recompute_tokens", "recompute_vs_belady",
                    "kv_useful_utilisation", "throughput_tasks_per_hour"):
            assert key in figs, (name, key)
        assert figs["calls_lost"] == 0
        assert figs["calls_completed"] == res["workload"]["calls"]
        assert 0.0 <= figs["slo_attainment"] <= 1.0
        assert 0.0 <= figs["kv_useful_utilisation"] <= 1.0
        assert figs["tct_p50_s"] <= figs["tct_p95_s"] <= figs["tct_p99_s"]
        assert set(figs["tenants"]) == {"a", "b"}
    base = res["policies"]["baseline"]
    assert base["tct_geomean_speedup"] == 1.0 and base["p_value"] is None
    assert res["policies"]["mine"]["policy_set"] == {"eviction": "ttl",
                                                     "routing": "least-loaded",
                                                     "admission": "priority",
                                                     "fairness": "vtc"}
    page = (tmp_path / "out" / "report.html").read_text()
    # nothing is fetched at view time: no external script or stylesheet, plotly.js is inline
    # (the library itself mentions a topojson CDN default, used only by geo maps)
    assert "<script src" not in page and "<link" not in page
    assert "Plotly.newPlot" in page and len(page) > 1_000_000


def test_sweep_reports_peak_throughput(tmp_path: Path) -> None:
    res = _run(tmp_path, "--policies", "baseline,saga", "--sweep", "0.5,1.0", "--load", "0.5",
               "--no-belady")
    assert set(res["sweep"]) == {"0.5", "1"}
    for figs in res["policies"].values():
        peak = figs["peak_throughput_tasks_per_hour"]
        assert peak == max(res["sweep"][x][n]["throughput_tasks_per_hour"]
                           for x in res["sweep"] for n in [next(
                               k for k, v in res["policies"].items() if v is figs)])
        assert figs["recompute_vs_belady"] is None


@pytest.mark.parametrize("args, fragment", [
    (["--workload", "weka:/nonexistent/file.tar.xz"], "--workload"),
    (["--workload", "bogus:thing"], "--workload"),
    (["--policies", "baseline,nosuchset"], "--policies"),
    (["--policies", "x=lru:nosuch:fcfs"], "--policies"),
    (["--load", "0"], "--load"),
    (["--load", "-1"], "--load"),
    (["--profile", "tpu-v9"], "--profile"),
    (["--gpus", "6"], "--gpus"),
    (["--sweep", "0.5,abc"], "--sweep"),
    (["--half", "tune"], "--workload"),  # halves are a Weka notion
])
def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         args: list[str], fragment: str) -> None:
    base = ["--workload", "synthetic:mix", "--sessions", "2", "--gpus", "8", "--quiet",
            "--out", str(tmp_path / "o")]
    # later flags win in argparse, so the bad one overrides the good default
    assert main([*base, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and fragment in err
    assert not (tmp_path / "o" / "results.json").exists()


def test_register_adds_the_bench_subcommand(tmp_path: Path) -> None:
    import argparse

    from nodeagent.bench.cli import register

    parser = argparse.ArgumentParser(prog="saga")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(["bench", "--workload", "synthetic:swe", "--sessions", "2",
                              "--gpus", "4", "--quiet", "--no-belady",
                              "--out", str(tmp_path / "r")])
    assert args.func(args) == 0
    assert (tmp_path / "r" / "results.json").exists()


def test_workflows_too_large_for_any_instance_are_excluded() -> None:
    from nodeagent.bench.runner import exclude_oversized
    from tests.sim.simkit import chain_workload

    wl = chain_workload(n_workflows=3, calls=2, task_tokens=1000)
    big = wl.workflows[1].calls[-1]
    limit = big.input_tokens + big.output_tokens - 1
    kept, excluded = exclude_oversized(wl, limit)
    assert excluded == ["wf001", "wf002"]  # task size grows with the workflow index
    assert [w.workflow_id for w in kept.workflows] == ["wf000"]

"""The README's load-sweep plot: drawn from a real sweep's results, refused without one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodeagent.bench import sweep_plot
from nodeagent.bench.cli import main as bench

pytest.importorskip("matplotlib")


def test_plot_of_a_sweep_has_every_set_but_the_reference(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert bench(["--workload", "synthetic:mix", "--sessions", "8", "--gpus", "8", "--quiet",
                  "--policies", "baseline,saga,kvflow", "--sweep", "0.5,1.0", "--no-belady",
                  "--out", str(out)]) == 0
    svg = tmp_path / "sweep.svg"
    assert sweep_plot.main([str(out / "results.json"), "--out", str(svg)]) == 0
    text = svg.read_text()
    assert "offered load" in text and "speedup over baseline" in text
    assert "saga" in text and "kvflow" in text and "baseline = 1" in text
    results = json.loads((out / "results.json").read_text())
    # the run's own load (0.8 by default) is a point of the sweep too
    assert sorted(sweep_plot.by_load(results), key=float) == ["0.5", "0.8", "1"]


def test_results_without_a_sweep_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps({"policies": {}, "workload": {"name": "x"}}))
    assert sweep_plot.main([str(bad), "--out", str(tmp_path / "x.svg")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no sweep" in err and "\n" not in err

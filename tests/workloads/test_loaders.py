"""load_workload specs, the bundled sample and the compact JSON format."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from nodeagent.workloads.compact import load_compact, save_compact, workload_to_dict
from nodeagent.workloads.loaders import SAMPLE_PATH, load_workload
from nodeagent.workloads.model import WorkloadError
from nodeagent.workloads.tenants import assign_tenants, parse_tenants

PROVENANCE = SAMPLE_PATH.parent / "PROVENANCE.md"


def test_sample_ships_with_provenance_and_is_small() -> None:
    w = load_workload("sample")
    w.validate()
    assert SAMPLE_PATH.stat().st_size < 400_000
    assert "kv-cache-tester" in w.source and "Apache-2.0" in w.source
    text = PROVENANCE.read_text()
    assert "Apache-2.0" in text and "weka_sample.json" in text
    assert sum(x.template == "claude-code" for x in w.workflows) == 20
    assert len(load_workload("sample", sessions=5).workflows) == 5
    assert json.loads(SAMPLE_PATH.read_text())["licence"].startswith("Apache-2.0")


def test_specs_dispatch() -> None:
    assert load_workload("synthetic:swe", sessions=3, seed=1).name == "synthetic-swe-3"
    assert {w.template for w in load_workload("synthetic:webarena", 4).workflows} == {
        "webarena"}
    assert load_workload("sample:weka", sessions=2).workflows


@pytest.mark.parametrize("spec", ["", "weka", "weka:", "foo:bar", "synthetic", "parquet:x"])
def test_unknown_specs_raise_listing_the_valid_ones(spec: str) -> None:
    with pytest.raises(WorkloadError, match="synthetic:swe") as info:
        load_workload(spec)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("spec", ["weka:/no/such/dir", "mooncake:/no/such.jsonl",
                                  "azure:/no/such.csv", "json:/no/such.json"])
def test_missing_files_raise_workload_error(spec: str) -> None:
    with pytest.raises(WorkloadError, match="not found"):
        load_workload(spec)


def test_bad_sessions_and_kind() -> None:
    with pytest.raises(WorkloadError, match="sessions must be >= 1"):
        load_workload("synthetic:swe", sessions=0)
    with pytest.raises(WorkloadError, match="unknown synthetic kind"):
        load_workload("synthetic:chat")


def test_compact_roundtrip(tmp_path: Path) -> None:
    w = assign_tenants(load_workload("synthetic:mix", 20, seed=3),
                       parse_tenants("a:2:slo=3@99,n:1:noisy"))
    path = tmp_path / "w.json"
    save_compact(w, path, licence="test")
    back = load_compact(path)
    assert back.workflows == w.workflows and back.tenants == w.tenants
    assert back.tree.to_lists() == w.tree.to_lists()
    assert load_workload(f"json:{path}", sessions=4).workflows == w.workflows[:4]


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.pop("format"), "not a saga-workload/1 file"),
    (lambda d: d["workflows"][0].pop("calls"), "malformed"),
    (lambda d: d["workflows"][0]["calls"][0].__setitem__(1, 12345), "input_tokens 12345"),
    (lambda d: d["tree"]["parent"].__setitem__(0, 99), "invalid parent"),
])
def test_compact_rejects_malformed(tmp_path: Path, mutate: Callable[[dict], object],
                                   message: str) -> None:
    data = workload_to_dict(load_workload("synthetic:swe", 2, seed=1))
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(WorkloadError, match=message):
        load_compact(path)

"""One entry point for every workload source: ``load_workload(spec, sessions, seed)``.

Specs:
  ``weka:PATH``        Weka Claude Code sessions (dir of JSON, one JSON, .tar/.tar.xz) - weka.py
  ``mooncake:PATH``    Mooncake JSONL(.xz) request trace - request_traces.py
  ``azure:PATH``       Azure LLM inference CSV(.xz) trace - request_traces.py
  ``synthetic:KIND``   KIND = swe | webarena | mix - synthetic.py (no files needed)
  ``sample``           the bundled demo sample (data/weka_sample.json, 20 Weka sessions)
  ``json:PATH``        a compact saga-workload/1 JSON file - compact.py

``sessions`` limits the number of workflows (Weka: sessions, the first N by id, or a seeded
random N when ``seed`` is given; synthetic: how many to generate, default 100; others: the first
N). ``seed`` drives Weka sampling, Mooncake timestamp jitter and synthetic generation (None = 0
except for Weka). Every failure is a WorkloadError with a one-line message.
"""

from __future__ import annotations

from pathlib import Path

from nodeagent.workloads.compact import load_compact
from nodeagent.workloads.model import Workload, WorkloadError
from nodeagent.workloads.request_traces import load_azure, load_mooncake
from nodeagent.workloads.synthetic import DEFAULT_SYNTHETIC_WORKFLOWS, SYNTHETIC_KINDS, generate
from nodeagent.workloads.weka import load_weka

__all__ = ["WorkloadError", "load_workload", "load_weka", "load_mooncake", "load_azure",
           "load_compact", "load_sample", "SAMPLE_PATH", "WORKLOAD_SPECS"]

SAMPLE_PATH = Path(__file__).parent / "data" / "weka_sample.json"
WORKLOAD_SPECS = ("weka:PATH", "mooncake:PATH", "azure:PATH",
                  *(f"synthetic:{k}" for k in SYNTHETIC_KINDS), "sample", "json:PATH")


def _first(workload: Workload, n: int | None) -> Workload:
    if n is None or n >= len(workload.workflows):
        return workload
    return Workload(workload.name, workload.source, workload.tree, workload.workflows[:n],
                    dict(workload.tenants))


def load_sample(sessions: int | None = None) -> Workload:
    """The bundled demo sample (data/PROVENANCE.md), optionally its first N workflows."""
    return _first(load_compact(SAMPLE_PATH), sessions)


def load_workload(spec: str, sessions: int | None = None, seed: int | None = None,
                  half: str | None = None) -> Workload:
    """Load a workload from a spec (module doc); ``half`` (Weka only) keeps one half of the
    sessions (``weka.half_of``)."""
    if sessions is not None and sessions < 1:
        raise WorkloadError(f"sessions must be >= 1, got {sessions}")
    kind, sep, arg = spec.partition(":")
    if half is not None and kind != "weka":
        raise WorkloadError(f"half applies to weka workloads only, not {kind!r}")
    if kind == "sample" and (not sep or arg in ("", "weka")):
        return load_sample(sessions)
    if not sep or not arg:
        raise WorkloadError(f"unknown workload spec {spec!r}; expected one of "
                            f"{', '.join(WORKLOAD_SPECS)}")
    if kind == "weka":
        return load_weka(arg, sessions, seed, half)
    if kind == "mooncake":
        return _first(load_mooncake(arg, seed=seed or 0, limit=sessions), sessions)
    if kind == "azure":
        return load_azure(arg, limit=sessions)
    if kind == "synthetic":
        return generate(arg, sessions or DEFAULT_SYNTHETIC_WORKFLOWS, seed or 0)
    if kind == "json":
        return _first(load_compact(arg), sessions)
    raise WorkloadError(f"unknown workload spec {spec!r}; expected one of "
                        f"{', '.join(WORKLOAD_SPECS)}")

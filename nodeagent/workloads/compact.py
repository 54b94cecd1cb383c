"""Compact JSON form of a Workload, used for the bundled demo sample (data/) and for saving
generated or converted workloads.

Format ``saga-workload/1``::

    {"format": "saga-workload/1", "name": str, "source": str, "licence": str,
     "tree": {"parent": [int], "tokens": [int], "owner": [int]}, "owners": [str],
     "tenants": [{TenantSpec fields}],
     "workflows": [{"id": str, "tenant": str, "template": str, "arrival_s": float,
                    "calls": [[prompt_segment, input_tokens, output_tokens, tool|null,
                               gap_after_s, output_segment], ...]}]}

``tree.owner`` indexes ``owners`` (-1 = shared, owner None). A file is validated on load
(Workload.validate), so a hand-edited file with a broken tree fails with a clear message.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from nodeagent.workloads.model import (
    CallSpec,
    ContextTree,
    TenantSpec,
    WorkflowSpec,
    Workload,
    WorkloadError,
)

FORMAT = "saga-workload/1"


def workload_to_dict(workload: Workload, licence: str = "") -> dict[str, Any]:
    """Plain-JSON dict of ``workload`` (module doc)."""
    lists = workload.tree.to_lists()
    owners: dict[str, int] = {}
    owner_idx = [-1 if o is None else owners.setdefault(o, len(owners)) for o in lists["owner"]]
    return {
        "format": FORMAT,
        "name": workload.name,
        "source": workload.source,
        "licence": licence,
        "tree": {"parent": lists["parent"], "tokens": lists["tokens"], "owner": owner_idx},
        "owners": list(owners),
        "tenants": [dataclasses.asdict(t) for t in workload.tenants.values()],
        "workflows": [
            {"id": w.workflow_id, "tenant": w.tenant, "template": w.template,
             "arrival_s": w.arrival_s,
             "calls": [[c.prompt_segment, c.input_tokens, c.output_tokens, c.tool,
                        c.gap_after_s, c.output_segment] for c in w.calls]}
            for w in workload.workflows],
    }


def workload_from_dict(data: Any, where: str = "workload") -> Workload:
    """Inverse of ``workload_to_dict``; WorkloadError naming the bad field."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise WorkloadError(f"{where}: not a {FORMAT} file (missing or wrong 'format')")
    try:
        owners = data["owners"]
        t = data["tree"]
        owner = [None if i == -1 else str(owners[i]) for i in t["owner"]]
        tree = ContextTree.from_lists(t["parent"], t["tokens"], owner)
        tenants = {d["name"]: TenantSpec(**d) for d in data["tenants"]}
        workflows = [
            WorkflowSpec(str(w["id"]), str(w["tenant"]), str(w["template"]),
                         float(w["arrival_s"]),
                         tuple(CallSpec(int(c[0]), int(c[1]), int(c[2]),
                                        None if c[3] is None else str(c[3]), float(c[4]),
                                        int(c[5])) for c in w["calls"]))
            for w in data["workflows"]]
        workload = Workload(str(data["name"]), str(data["source"]), tree, workflows, tenants)
    except WorkloadError:
        raise
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise WorkloadError(f"{where}: malformed {FORMAT} data ({type(exc).__name__}: {exc})") \
            from None
    workload.validate()
    return workload


def save_compact(workload: Workload, path: str | Path, licence: str = "") -> None:
    """Write ``workload`` as compact JSON (no spaces)."""
    Path(path).write_text(json.dumps(workload_to_dict(workload, licence),
                                     separators=(",", ":")), encoding="utf-8")


def load_compact(path: str | Path) -> Workload:
    """Read a compact JSON workload; WorkloadError on a missing or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise WorkloadError(f"workload file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"{p}: invalid JSON: {exc}") from None
    return workload_from_dict(data, str(p))

"""Loaders for request-level traces: Mooncake (JSONL with global block hashes) and Azure (CSV).

These traces log requests, not agent workflows, so they are mostly one-call workflows; they
serve as non-agent background load and as a check that policies do no harm on chat traffic.

Mooncake: github.com/kvcache-ai/Mooncake @ 3b5a5941, FAST25-release/traces/ (Apache-2.0).
Fields ``timestamp`` (ms), ``input_length``, ``output_length``, ``hash_ids`` (512-token
blocks, ids global and chained: an id fixes its whole prefix, checked on both files: no id
appears at two positions; the last, partial block is hashed too, len = ceil(input/512)).
- Prefix tree: the longest run of leading ids already seen gives the earlier request (the
  latest one holding that block) and the shared tokens (512 x blocks, capped by both lengths).
  Segments reused across workflows are shared (owner None).
- Conversations: request k continues request j's workflow when it matches all of j's full
  blocks, is longer, and j is its workflow's latest call; it then extends j's whole prompt.
  The trace logs arrivals only, so ``gap_after_s(j) = t_k - t_j`` (includes j's service time).
- Timestamps come in 3 s buckets (PROVENANCE.md): each request gets seeded uniform jitter in
  [0, 3) s.

Azure: github.com/Azure/AzurePublicDataset @ b469a113, data/ (CC-BY-4.0). Columns TIMESTAMP,
ContextTokens, GeneratedTokens, no prefix information: every row is a one-call workflow with
its own segment, arriving at its timestamp relative to the first row. GeneratedTokens 0 is
counted as 1 (an engine always emits at least one token).
"""

from __future__ import annotations

import csv
import io
import json
import lzma
import random
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from nodeagent.workloads.model import (
    DEFAULT_TENANT,
    CallSpec,
    ContextTree,
    TenantSpec,
    WorkflowSpec,
    Workload,
    WorkloadError,
)
from nodeagent.workloads.prefix_builder import ChainCall, build_chains

MOONCAKE_SOURCE = ("Mooncake traces, github.com/kvcache-ai/Mooncake @ 3b5a5941 "
                   "FAST25-release/traces/ (Apache-2.0)")
AZURE_SOURCE = ("Azure LLM inference traces, github.com/Azure/AzurePublicDataset @ b469a113 "
                "data/ (CC-BY-4.0)")
MOONCAKE_BLOCK_TOKENS = 512
MOONCAKE_BUCKET_S = 3.0
MOONCAKE_TEMPLATE = "mooncake-chat"
AZURE_TEMPLATE = "azure-request"


def _open_text(path: Path, kind: str) -> IO[str]:
    if not path.exists():
        raise WorkloadError(f"{kind}: trace file not found: {path}")
    if path.is_dir():
        raise WorkloadError(f"{kind}: expected a file, got directory {path}")
    if path.suffix == ".xz":
        return io.TextIOWrapper(lzma.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _read_mooncake_rows(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    try:
        with _open_text(path, "mooncake") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    ts = float(row["timestamp"])
                    tin = int(row["input_length"])
                    tout = int(row["output_length"])
                    ids = row["hash_ids"]
                except json.JSONDecodeError:
                    raise WorkloadError(f"mooncake: {path.name} line {lineno}: invalid JSON") \
                        from None
                except (KeyError, TypeError, ValueError) as exc:
                    raise WorkloadError(f"mooncake: {path.name} line {lineno}: missing or bad "
                                        f"field {exc}") from None
                if tin < 1 or tout < 0 or not isinstance(ids, list):
                    raise WorkloadError(f"mooncake: {path.name} line {lineno}: input_length "
                                        "must be >= 1, output_length >= 0, hash_ids a list")
                rows.append({"t": ts / 1000.0, "in": tin, "out": max(1, tout), "ids": ids})
    except (lzma.LZMAError, UnicodeDecodeError, OSError) as exc:
        raise WorkloadError(f"mooncake: cannot read {path}: {exc}") from None
    if not rows:
        raise WorkloadError(f"mooncake: {path} holds no requests")
    return rows


def load_mooncake(path: str | Path, seed: int = 0, limit: int | None = None) -> Workload:
    """Load a Mooncake JSONL(.xz) trace (module doc); ``limit`` keeps the first N workflows."""
    p = Path(path)
    rows = _read_mooncake_rows(p)
    rng = random.Random(seed)
    for r in rows:
        r["t"] += rng.uniform(0.0, MOONCAKE_BUCKET_S)
    rows.sort(key=lambda r: r["t"])

    seen: dict[int, int] = {}  # block id -> latest request holding it
    wf_of: list[int] = []  # request -> workflow index
    wf_calls: list[list[int]] = []  # workflow -> its requests in order
    chain: list[ChainCall] = []
    for k, r in enumerate(rows):
        ids: list[int] = r["ids"]
        matched = 0
        while matched < len(ids) and ids[matched] in seen:
            matched += 1
        parent = seen[ids[matched - 1]] if matched else -1
        shared = 0
        wf = -1
        if parent >= 0:
            prev = rows[parent]
            shared = min(MOONCAKE_BLOCK_TOKENS * matched, prev["in"], r["in"])
            full_blocks = prev["in"] // MOONCAKE_BLOCK_TOKENS
            pw = wf_of[parent]
            if (matched >= max(1, full_blocks) and r["in"] > prev["in"]
                    and wf_calls[pw][-1] == parent):
                wf, shared = pw, prev["in"]
        if wf < 0:
            wf = len(wf_calls)
            wf_calls.append([])
        wf_calls[wf].append(k)
        wf_of.append(wf)
        chain.append(ChainCall(parent, shared, r["in"], r["out"], f"mc{wf:06d}"))
        for x in ids:
            seen[x] = k
        if limit is not None and len(wf_calls) > limit:
            break
    if limit is not None and len(wf_calls) > limit:
        # the last request opened workflow limit+1: drop it
        chain.pop()
        wf_calls.pop()
    tree = ContextTree()
    built = build_chains(tree, chain)
    workflows: list[WorkflowSpec] = []
    for w, ks in enumerate(wf_calls):
        calls = tuple(
            CallSpec(prompt_segment=built.prompt_segment[k], input_tokens=rows[k]["in"],
                     output_tokens=rows[k]["out"], tool=None,
                     gap_after_s=(rows[ks[i + 1]]["t"] - rows[k]["t"]) if i + 1 < len(ks)
                     else 0.0,
                     output_segment=built.output_segment[k])
            for i, k in enumerate(ks))
        workflows.append(WorkflowSpec(f"mc{w:06d}", DEFAULT_TENANT, MOONCAKE_TEMPLATE,
                                      rows[ks[0]]["t"], calls))
    workflows.sort(key=lambda w: w.arrival_s)
    return Workload(name=f"mooncake-{p.name.split('.')[0]}",
                    source=f"{MOONCAKE_SOURCE}: {p.name}, {len(chain)} requests, seeded "
                           f"jitter within {MOONCAKE_BUCKET_S:g} s buckets (seed {seed})",
                    tree=tree, workflows=workflows,
                    tenants={DEFAULT_TENANT: TenantSpec(DEFAULT_TENANT)})


def _parse_azure_time(text: str) -> datetime:
    """'2023-11-16 18:17:03.9799600' (7 fractional digits) -> datetime (microseconds)."""
    head, _, frac = text.strip().partition(".")
    base = datetime.strptime(head, "%Y-%m-%d %H:%M:%S")
    return base.replace(microsecond=int((frac + "000000")[:6])) if frac else base


def load_azure(path: str | Path, limit: int | None = None) -> Workload:
    """Load an Azure LLM inference CSV(.xz) trace (module doc)."""
    p = Path(path)
    tree = ContextTree()
    workflows: list[WorkflowSpec] = []
    t0: datetime | None = None
    try:
        with _open_text(p, "azure") as fh:
            reader = csv.DictReader(fh)
            need = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"}
            if reader.fieldnames is None or not need <= set(reader.fieldnames):
                raise WorkloadError(f"azure: {p.name}: expected columns {sorted(need)}, got "
                                    f"{reader.fieldnames}")
            for lineno, row in enumerate(reader, 2):
                try:
                    ts = _parse_azure_time(row["TIMESTAMP"])
                    tin = int(row["ContextTokens"])
                    tout = max(1, int(row["GeneratedTokens"]))
                except (TypeError, ValueError) as exc:
                    raise WorkloadError(f"azure: {p.name} line {lineno}: bad value ({exc})") \
                        from None
                if tin < 1:
                    raise WorkloadError(f"azure: {p.name} line {lineno}: ContextTokens < 1")
                t0 = ts if t0 is None else t0
                wid = f"az{len(workflows):06d}"
                seg = tree.add(-1, tin, wid)
                workflows.append(WorkflowSpec(
                    wid, DEFAULT_TENANT, AZURE_TEMPLATE, (ts - t0).total_seconds(),
                    (CallSpec(seg, tin, tout, None, 0.0),)))
                if limit is not None and len(workflows) >= limit:
                    break
    except (lzma.LZMAError, UnicodeDecodeError, csv.Error, OSError) as exc:
        raise WorkloadError(f"azure: cannot read {p}: {exc}") from None
    if not workflows:
        raise WorkloadError(f"azure: {p} holds no requests")
    workflows.sort(key=lambda w: w.arrival_s)
    return Workload(name=f"azure-{p.name.split('.')[0]}",
                    source=f"{AZURE_SOURCE}: {p.name}, {len(workflows)} requests",
                    tree=tree, workflows=workflows,
                    tenants={DEFAULT_TENANT: TenantSpec(DEFAULT_TENANT)})

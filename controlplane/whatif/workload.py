"""A window of recorded live traffic as a replayable workload (``nodeagent.workloads.model``).

What is recorded and replayed as it was: each workflow's tenant, template and submission; each
completed call's prompt, cached and output token counts and its queued/finished times (so the
gaps between calls, tools and think time alike, are the recorded ones) and the tool that ran
after it; each call's prompt structure as keyed block digests (``controlplane.whatif.digests``),
which gives prefix reuse within a workflow and across workflows. What is estimated is listed in
``Recorded.estimated`` and shown with every result:

* the KV of a call's output is kept for the next call, which is taken to re-send all of it
  (agents re-send the conversation; a tool call rendered shorter than its output is not);
* a call without a recorded structure (recorded before structures were) extends its previous
  call's prompt, or starts a private prompt of its own;
* calls that did not complete are not replayed (their time is the agent's, as the SLO
  accounting counts it); calls an agent made in parallel are replayed one after the other;
* the expected-output forecasts start cold (the replay learns its own execution graphs).

Per workflow, the agent's time before its first call and after its last (``head_s``,
``tail_s``) is kept beside the workload, so replayed TCTs and slowdowns compare with the live
ones (``controlplane.slo.isolated`` counts them the same way).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings

from controlplane.whatif.digests import split_chain
from controlplane.whatif.errors import WhatIfInputError
from nodeagent.workloads.model import (
    ROOT,
    CallSpec,
    ContextTree,
    TenantSpec,
    WorkflowSpec,
    Workload,
)

DEFAULT_MAX_WINDOW_S = 7 * 24 * 3600


def max_window_s() -> int:
    return int(getattr(settings, "SAGA_WHATIF_MAX_WINDOW_S", DEFAULT_MAX_WINDOW_S))


@dataclass
class Recorded:
    workload: Workload
    estimated: list[str]
    counts: dict[str, int]
    live: dict[str, dict[str, Any]]
    """Per workflow id: tenant, state, tct_s, isolated_s, head_s, tail_s (live figures)."""
    nodes: list[int] = field(default_factory=list)
    start: datetime | None = None


def check_window(since: datetime, until: datetime) -> None:
    if until <= since:
        raise WhatIfInputError("until", f"empty window: until ({until.isoformat()}) is not "
                               f"after since ({since.isoformat()})")
    span = (until - since).total_seconds()
    if span > max_window_s():
        raise WhatIfInputError("since", f"window of {span:.0f} s is larger than the limit of "
                               f"{max_window_s()} s (SAGA_WHATIF_MAX_WINDOW_S)")


def build(since: datetime, until: datetime, tenants: list[str] | tuple[str, ...] = ()
          ) -> Recorded:
    """The workflows submitted in [since, until) of ``tenants`` (all when empty)."""
    from controlplane.tenants.models import Tenant
    from controlplane.workflows.models import Call, CallOutcome, ToolCall, Workflow

    check_window(since, until)
    workflows = Workflow.objects.filter(submitted_at__gte=since, submitted_at__lt=until)
    chosen = {t.slug: t for t in Tenant.objects.all()}
    if tenants:
        unknown = [s for s in tenants if s not in chosen]
        if unknown:
            raise WhatIfInputError("tenants", f"unknown tenant {unknown[0]!r}")
        workflows = workflows.filter(tenant__slug__in=list(tenants))
    rows = list(workflows.order_by("submitted_at", "id").values(
        "id", "tenant__slug", "template__name", "submitted_at", "finished_at", "state",
        "tct_s", "est_isolated_s"))
    seen_tenants = {r["tenant__slug"] for r in rows}
    for slug in tenants:
        if slug not in seen_tenants:
            raise WhatIfInputError("tenants", f"tenant {slug!r} has no traffic in the window")
    if not rows:
        raise WhatIfInputError("since", "no recorded traffic in the window "
                               f"{since.isoformat()} .. {until.isoformat()}")
    ids = [r["id"] for r in rows]
    calls: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for c in (Call.objects.filter(workflow_id__in=ids, outcome=CallOutcome.COMPLETED)
              .order_by("workflow_id", "seq")
              .values("id", "workflow_id", "node_id", "prompt_tokens", "output_tokens",
                      "queued_at", "finished_at", "prompt_structure__digests",
                      "prompt_structure__block_tokens")):
        calls[c["workflow_id"]].append(c)
    tools = dict(ToolCall.objects.filter(workflow_id__in=ids, after_call__isnull=False)
                 .values_list("after_call_id", "name"))
    builder = _TreeBuilder()
    specs: list[WorkflowSpec] = []
    live: dict[str, dict[str, Any]] = {}
    counts: Counter[str] = Counter(workflows=0, calls=0, calls_estimated_structure=0,
                                   workflows_without_completed_calls=0, calls_overlapping=0)
    nodes: set[int] = set()
    firsts = [calls[r["id"]][0]["queued_at"] for r in rows if calls.get(r["id"])]
    if not firsts:
        raise WhatIfInputError("since", "the window's workflows have no completed call")
    t0 = min(firsts)
    for r in rows:
        mine = calls.get(r["id"], [])
        if not mine:
            counts["workflows_without_completed_calls"] += 1
            continue
        wf_id = str(r["id"])
        call_specs = builder.workflow(wf_id, mine, counts)
        call_specs = [
            CallSpec(s.prompt_segment, s.input_tokens, s.output_tokens,
                     tools.get(c["id"]), _gap(c, nxt, counts) if nxt else 0.0, s.output_segment)
            for s, c, nxt in zip(call_specs, mine, [*mine[1:], None], strict=True)]
        nodes.update(c["node_id"] for c in mine if c["node_id"] is not None)
        specs.append(WorkflowSpec(wf_id, r["tenant__slug"], r["template__name"],
                                  (mine[0]["queued_at"] - t0).total_seconds(),
                                  tuple(call_specs)))
        counts["workflows"] += 1
        counts["calls"] += len(mine)
        head = (mine[0]["queued_at"] - r["submitted_at"]).total_seconds()
        tail = ((r["finished_at"] - mine[-1]["finished_at"]).total_seconds()
                if r["finished_at"] else None)
        live[wf_id] = {"tenant": r["tenant__slug"], "state": r["state"], "tct_s": r["tct_s"],
                       "isolated_s": r["est_isolated_s"], "head_s": max(head, 0.0),
                       "tail_s": None if tail is None else max(tail, 0.0)}
    specs.sort(key=lambda w: w.arrival_s)
    used = {w.tenant for w in specs}
    tenant_specs = {slug: TenantSpec(slug, weight=t.weight, slo_slowdown=t.slo_slowdown,
                                     slo_percentile=t.slo_percentile)
                    for slug, t in chosen.items() if slug in used}
    name = f"recorded {since.isoformat(timespec='seconds')}..{until.isoformat(timespec='seconds')}"
    workload = Workload(name, "live traffic recorded by the gateway (saga replay)",
                        builder.tree, specs, tenant_specs)
    workload.validate()
    estimated = [
        "output KV reuse: each call's output is taken to be re-sent in full by the next call",
        "expected-output forecasts start cold (the replay learns its own execution graphs)",
    ]
    if counts["calls_estimated_structure"]:
        estimated.append(f"prompt structure of {counts['calls_estimated_structure']} calls "
                         "(recorded without one): taken to extend the previous call's prompt")
    if counts["calls_overlapping"]:
        estimated.append(f"{counts['calls_overlapping']} calls overlapped their predecessor "
                         "(parallel calls): replayed one after the other")
    if counts["workflows_without_completed_calls"]:
        estimated.append(f"{counts['workflows_without_completed_calls']} workflows without a "
                         "completed call are not replayed")
    return Recorded(workload, estimated, dict(counts), live, sorted(nodes), t0)


def _gap(call: dict[str, Any], nxt: dict[str, Any], counts: Counter[str]) -> float:
    gap = (nxt["queued_at"] - call["finished_at"]).total_seconds()
    if gap < 0:
        counts["calls_overlapping"] += 1
    return max(gap, 0.0)


class _TreeBuilder:
    """One ContextTree for the window. A call that re-sends its predecessor's prompt (its digest
    chain starts with the predecessor's) goes on from the predecessor's output; any other call
    is walked block by block through the digests every first prompt registered, which is where
    workflows share (a template's system prompt)."""

    def __init__(self) -> None:
        self.tree = ContextTree()
        self.blocks: dict[bytes, int] = {}

    def workflow(self, wf_id: str, calls: list[dict[str, Any]], counts: Counter[str]
                 ) -> list[CallSpec]:
        tree = self.tree
        out: list[CallSpec] = []
        prev_chain: list[bytes] | None = None
        prev_end_seg = ROOT  # the previous call's output segment
        prev_end = 0  # tokens up to the end of its output
        for c in calls:
            prompt = max(int(c["prompt_tokens"]), 1)
            output = max(int(c["output_tokens"]), 1)
            raw = c["prompt_structure__digests"]
            chain = split_chain(bytes(raw)) if raw is not None else None
            if chain is None:
                counts["calls_estimated_structure"] += 1
            extends = prev_chain is not None and prompt >= prev_end and (
                chain is None or chain[:len(prev_chain)] == prev_chain)
            if extends:
                seg = prev_end_seg
                if prompt > prev_end:
                    seg = tree.add(prev_end_seg, prompt - prev_end, wf_id)
            elif chain is None:
                seg = tree.add(ROOT, prompt, wf_id)
            else:
                block = int(c["prompt_structure__block_tokens"])
                seg = self._walk(wf_id, chain[:prompt // block], block)
                rest = prompt - (tree.end_tokens(seg) if seg != ROOT else 0)
                if rest > 0:
                    seg = tree.add(seg, rest, wf_id)
            out_seg = tree.add(seg, output, wf_id)
            out.append(CallSpec(seg, prompt, output, None, 0.0, out_seg))
            prev_chain = chain if chain is not None else prev_chain
            prev_end_seg, prev_end = out_seg, prompt + output
        return out

    def _walk(self, wf_id: str, chain: list[bytes], block: int) -> int:
        tree, parent = self.tree, ROOT
        for digest in chain:
            seg = self.blocks.get(digest)
            if seg is None:
                seg = tree.add(parent, block, wf_id)
                self.blocks[digest] = seg
            elif tree.owner(seg) not in (None, wf_id):
                tree.mark_shared(seg)
            parent = seg
        return parent

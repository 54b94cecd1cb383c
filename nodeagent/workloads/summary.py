"""Shape statistics of a workload, in the terms PROVENANCE.md uses for the real traces.

Lets a report (or a test) put a loaded or generated workload next to the published figures:
calls per workflow, input/output tokens per call, tool gaps, and how much of each call's input
repeats the previous call's prompt (97.4% on the Weka traces).
"""

from __future__ import annotations

from collections import Counter

from nodeagent.workloads.model import Workload


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of ``values``; 0.0 for an empty list."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return float(ordered[rank])


def summarize(workload: Workload) -> dict[str, float | int | dict[str, int]]:
    """Counts and percentiles of the workload's shape (keys are self-describing)."""
    tree = workload.tree
    calls_per = [len(w.calls) for w in workload.workflows]
    inputs = [c.input_tokens for w in workload.workflows for c in w.calls]
    outputs = [c.output_tokens for w in workload.workflows for c in w.calls]
    tool_gaps = [c.gap_after_s for w in workload.workflows for c in w.calls if c.tool]
    reused = total = 0
    for w in workload.workflows:
        for a, b in zip(w.calls, w.calls[1:], strict=False):
            total += b.input_tokens
            reused += tree.common_prefix_tokens(a.prompt_segment, b.prompt_segment)
    shared_tokens = sum(tree.tokens(s) for s in tree.segments() if tree.owner(s) is None)
    arrivals = [w.arrival_s for w in workload.workflows]
    return {
        "workflows": len(workload.workflows),
        "calls": len(inputs),
        "segments": len(tree),
        "calls_per_workflow_p50": percentile(calls_per, 50),
        "calls_per_workflow_p90": percentile(calls_per, 90),
        "input_tokens_p50": percentile(inputs, 50),
        "input_tokens_p90": percentile(inputs, 90),
        "output_tokens_p50": percentile(outputs, 50),
        "output_tokens_p90": percentile(outputs, 90),
        "tool_gap_s_p25": percentile(tool_gaps, 25),
        "tool_gap_s_p50": percentile(tool_gaps, 50),
        "tool_gap_s_p90": percentile(tool_gaps, 90),
        "prefix_reuse": reused / total if total else 0.0,
        "shared_tokens": shared_tokens,
        "arrival_span_s": (max(arrivals) - min(arrivals)) if arrivals else 0.0,
        "templates": dict(Counter(w.template for w in workload.workflows)),
        "tenants": dict(Counter(w.tenant for w in workload.workflows)),
    }

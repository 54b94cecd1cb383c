"""How closely the simulated engine reproduced the real one on a replay, against the targets.

Targets (issue 12): total prefix-hit tokens within 2%, the same number of preemptions, the same
admission order. Per-call cached tokens are compared as well (how many calls saw exactly the
same prefix-cache hit at their first admission). Where two replays part, the first event that
differs says where to look (``ReplayResult.events``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from nodeagent.fidelity.replay import ReplayResult

HIT_TOKENS_TOLERANCE = 0.02


@dataclass(frozen=True, slots=True)
class Agreement:
    policy_set: str
    calls: int
    calls_same_cached: int
    max_cached_diff: int
    hit_tokens_vllm: int
    hit_tokens_sim: int
    preemptions_vllm: int
    preemptions_sim: int
    same_admission_order: bool
    first_order_difference: int | None
    """Index of the first call admitted in a different place (None when the orders agree)."""
    first_event_difference: tuple[Any, Any] | None
    vllm_prefix_cache: dict[str, int]
    """vLLM's own prefix-cache statistics over the replay (queries and hits, first admissions;
    the preempted_* ones for re-admissions)."""

    @property
    def hit_tokens_error(self) -> float:
        """Relative difference of the simulator's total prefix-hit tokens from vLLM's."""
        if self.hit_tokens_vllm == 0:
            return 0.0 if self.hit_tokens_sim == 0 else float("inf")
        return abs(self.hit_tokens_sim - self.hit_tokens_vllm) / self.hit_tokens_vllm

    @property
    def hits_within_target(self) -> bool:
        return self.hit_tokens_error <= HIT_TOKENS_TOLERANCE

    @property
    def preemptions_equal(self) -> bool:
        return self.preemptions_vllm == self.preemptions_sim

    @property
    def meets_targets(self) -> bool:
        return self.hits_within_target and self.preemptions_equal and self.same_admission_order

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(hit_tokens_error=self.hit_tokens_error,
                   hits_within_target=self.hits_within_target,
                   preemptions_equal=self.preemptions_equal, meets_targets=self.meets_targets)
        return out


def _first_difference(a: Sequence[Any], b: Sequence[Any]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _first_event_difference(vllm: ReplayResult, sim: ReplayResult) -> tuple[Any, Any] | None:
    """The first (kind, call) that differs, within a step's events taken as a set (both sides
    list one step's admissions in their own order)."""
    def steps(events: Sequence[tuple[float, str, str]]) -> list[tuple[str, frozenset[Any]]]:
        out: list[tuple[str, frozenset[Any]]] = []
        group: list[tuple[str, str]] = []
        for i, (_t, kind, call) in enumerate(events):
            group.append((kind, call))
            nxt = events[i + 1][0] if i + 1 < len(events) else None
            if nxt is None or abs(nxt - events[i][0]) > 1e-9:
                out.append((f"{events[i][0]:.6f}", frozenset(group)))
                group = []
        return out

    a, b = steps(vllm.events), steps(sim.events)
    i = _first_difference([g for _, g in a], [g for _, g in b])
    if i is None:
        return None
    def pick(s: list[tuple[str, frozenset[Any]]]) -> Any:
        return (s[i][0], sorted(s[i][1])) if i < len(s) else None

    return pick(a), pick(b)


def compare(vllm: ReplayResult, sim: ReplayResult) -> Agreement:
    calls = sorted(set(vllm.cached_tokens) | set(sim.cached_tokens))
    same = sum(1 for c in calls if vllm.cached_tokens.get(c) == sim.cached_tokens.get(c))
    diff = max((abs(vllm.cached_tokens.get(c, 0) - sim.cached_tokens.get(c, 0)) for c in calls),
               default=0)
    order = _first_difference(vllm.admission_order, sim.admission_order)
    stats = {k: int(v) for k, v in vllm.engine_stats.items()}
    return Agreement(
        policy_set=vllm.policy_set, calls=len(calls), calls_same_cached=same,
        max_cached_diff=diff, hit_tokens_vllm=vllm.hit_tokens, hit_tokens_sim=sim.hit_tokens,
        preemptions_vllm=vllm.preemptions, preemptions_sim=sim.preemptions,
        same_admission_order=order is None, first_order_difference=order,
        first_event_difference=_first_event_difference(vllm, sim), vllm_prefix_cache=stats)


def table(rows: Sequence[Agreement]) -> str:
    """The agreement table (plain text, one row per policy set)."""
    head = ("policies", "calls same cached", "prefix-hit tokens vLLM / sim (err)",
            "preemptions vLLM / sim", "admission order", "targets")
    lines = [head]
    for r in rows:
        order = "same" if r.same_admission_order else f"differs at #{r.first_order_difference}"
        lines.append((
            r.policy_set, f"{r.calls_same_cached}/{r.calls}",
            f"{r.hit_tokens_vllm:,} / {r.hit_tokens_sim:,} ({100 * r.hit_tokens_error:.1f}%)",
            f"{r.preemptions_vllm} / {r.preemptions_sim}", order,
            "met" if r.meets_targets else "missed"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
           for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)

"""The workload data model shared by loaders, generators, the simulated engine and the bench.

A workload is a set of agent workflows. Each workflow is a chain of LLM calls separated by tool
runs (or user think time). What makes agent serving special is that call k+1 re-sends call k's
prompt plus its output plus the tool result, so prompts are paths in one global prefix tree of
content segments (`ContextTree`). Caches in the engine hold cached prefixes of segments, which is
far more compact than one object per KV block and still exact at block granularity.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

ROOT = -1
"""Parent id meaning "the segment starts at the beginning of the prompt"."""


class WorkloadError(ValueError):
    """Bad workload input (missing file, unknown format, malformed record).

    The message is a single line that names the offending file/field; the CLI prints it and
    exits with status 2.
    """


class ContextTree:
    """Global prefix tree of content segments, stored as parallel lists (no object per node).

    A segment is a run of tokens whose content is identical wherever it appears; its parent is
    the segment that precedes it in every prompt containing it. A call's prompt is the path from
    the root to its ``prompt_segment``. ``owner`` is the workflow that created the segment, or
    None for content shared across workflows (e.g. a template's system prompt), which is what
    lets an engine tell private from shared cached context.
    """

    __slots__ = ("_parent", "_tokens", "_start", "_owner")

    def __init__(self) -> None:
        self._parent: list[int] = []
        self._tokens: list[int] = []
        self._start: list[int] = []
        self._owner: list[str | None] = []

    def add(self, parent: int, tokens: int, owner: str | None = None) -> int:
        """Append a segment of ``tokens`` (>= 1) after ``parent`` (ROOT = -1); return its id."""
        if tokens < 1:
            raise ValueError(f"segment tokens must be >= 1, got {tokens}")
        if parent == ROOT:
            start = 0
        else:
            if not 0 <= parent < len(self._parent):
                raise ValueError(f"unknown parent segment {parent}")
            start = self._start[parent] + self._tokens[parent]
        self._parent.append(parent)
        self._tokens.append(int(tokens))
        self._start.append(start)
        self._owner.append(owner)
        return len(self._parent) - 1

    def __len__(self) -> int:
        return len(self._parent)

    def mark_shared(self, seg: int) -> None:
        """Set owner None on ``seg`` and its ancestors: content reused by another workflow."""
        owner, parent = self._owner, self._parent
        while seg != ROOT and owner[seg] is not None:
            owner[seg] = None
            seg = parent[seg]

    def parent(self, seg: int) -> int:
        """Parent segment id, ROOT (-1) for a segment that starts the prompt."""
        return self._parent[seg]

    def tokens(self, seg: int) -> int:
        """Number of tokens in the segment itself."""
        return self._tokens[seg]

    def start_tokens(self, seg: int) -> int:
        """Tokens on the path before ``seg`` (its offset inside every prompt that contains it)."""
        return self._start[seg]

    def end_tokens(self, seg: int) -> int:
        """Tokens on the path root..seg inclusive (the prompt length if ``seg`` ends a prompt)."""
        return self._start[seg] + self._tokens[seg]

    def owner(self, seg: int) -> str | None:
        """Workflow that created the segment; None for content shared across workflows."""
        return self._owner[seg]

    def path(self, seg: int) -> list[int]:
        """Segment ids from the root down to ``seg`` inclusive."""
        out: list[int] = []
        parent = self._parent
        while seg != ROOT:
            out.append(seg)
            seg = parent[seg]
        out.reverse()
        return out

    def depth(self, seg: int) -> int:
        """Number of segments on the path root..seg."""
        n = 0
        parent = self._parent
        while seg != ROOT:
            n += 1
            seg = parent[seg]
        return n

    def is_ancestor(self, anc: int, seg: int) -> bool:
        """True when ``anc`` lies on the path root..seg (a segment is its own ancestor)."""
        start_anc = self._start[anc]
        parent, start = self._parent, self._start
        while seg != ROOT and start[seg] >= start_anc:
            if seg == anc:
                return True
            seg = parent[seg]
        return False

    def common_prefix_tokens(self, a: int, b: int) -> int:
        """Tokens shared by the prompts ending at ``a`` and ``b`` (end of their deepest common
        ancestor; 0 if they share none). Used to measure how much of a prompt another reuses."""
        if a == ROOT or b == ROOT:
            return 0
        parent, start = self._parent, self._start
        while a != b:
            if a == ROOT or b == ROOT:
                return 0
            if start[a] >= start[b]:
                a = parent[a]
            else:
                b = parent[b]
        return self._start[a] + self._tokens[a] if a != ROOT else 0

    def segments(self) -> Iterator[int]:
        """All segment ids in creation order (a parent always precedes its children)."""
        return iter(range(len(self._parent)))

    def to_lists(self) -> dict[str, list]:
        """Plain-list form for JSON serialisation (see ``from_lists``)."""
        return {"parent": list(self._parent), "tokens": list(self._tokens),
                "owner": list(self._owner)}

    @classmethod
    def from_lists(cls, parent: Sequence[int], tokens: Sequence[int],
                   owner: Sequence[str | None]) -> ContextTree:
        """Rebuild a tree from ``to_lists`` output, validating parent order and sizes."""
        if not len(parent) == len(tokens) == len(owner):
            raise WorkloadError("context tree: parent/tokens/owner lists differ in length")
        tree = cls()
        for i, (p, t, o) in enumerate(zip(parent, tokens, owner, strict=True)):
            if p != ROOT and not 0 <= p < i:
                raise WorkloadError(f"context tree: segment {i} has invalid parent {p}")
            try:
                tree.add(int(p), int(t), o)
            except ValueError as exc:
                raise WorkloadError(f"context tree: segment {i}: {exc}") from None
        return tree


@dataclass(frozen=True, slots=True)
class CallSpec:
    """One LLM call of a workflow.

    ``prompt_segment`` ends the call's prompt, so
    ``input_tokens == tree.end_tokens(prompt_segment)``. The next call's prompt extends this
    prompt + output + tool result. ``tool`` is the tool that runs after this call (None = user
    think time, or the end of the workflow); ``gap_after_s`` is the time from this call's end to
    the next call's arrival (0 for the last call).

    ``output_segment`` (added to the contract) is the child of ``prompt_segment`` that holds this
    call's output as the next call re-sends it, so an engine can keep the decoded tokens' KV as
    that segment; ROOT (-1) when the output is not re-sent as such (last call, or unknown).
    """

    prompt_segment: int
    input_tokens: int
    output_tokens: int
    tool: str | None
    gap_after_s: float
    output_segment: int = ROOT


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    """One agent task: the unit SAGA schedules. ``arrival_s`` is when its first call arrives."""

    workflow_id: str
    tenant: str
    template: str
    arrival_s: float
    calls: tuple[CallSpec, ...]


@dataclass(frozen=True, slots=True)
class TenantSpec:
    """A tenant: fair-share weight, task-level SLO (slowdown vs. running alone at a percentile),
    and whether it is the noisy neighbour (submits many more workflows, in bursts).

    ``share`` (added to the contract) is the tenant's relative share of submitted workflows,
    independent of its fair-share ``weight`` (tenants.py assigns workflows by share)."""

    name: str
    weight: float = 1.0
    slo_slowdown: float = 2.0
    slo_percentile: float = 95.0
    noisy: bool = False
    share: float = 1.0


DEFAULT_TENANT = "default"


@dataclass
class Workload:
    """Workflows over one shared ContextTree, with provenance (``source``) and tenants."""

    name: str
    source: str
    tree: ContextTree
    workflows: list[WorkflowSpec]
    tenants: dict[str, TenantSpec] = field(
        default_factory=lambda: {DEFAULT_TENANT: TenantSpec(DEFAULT_TENANT)})

    def with_arrivals(self, arrivals_s: Sequence[float]) -> Workload:
        """Same workload with workflow i arriving at ``arrivals_s[i]`` (see module function)."""
        return with_arrivals(self, arrivals_s)

    @property
    def n_calls(self) -> int:
        return sum(len(w.calls) for w in self.workflows)

    def validate(self) -> None:
        """Check the invariants engines rely on; raise WorkloadError naming the first violation."""
        n = len(self.tree)
        seen: set[str] = set()
        for wf in self.workflows:
            if wf.workflow_id in seen:
                raise WorkloadError(f"workflow {wf.workflow_id}: duplicate workflow_id")
            seen.add(wf.workflow_id)
            if wf.tenant not in self.tenants:
                raise WorkloadError(f"workflow {wf.workflow_id}: unknown tenant {wf.tenant!r}")
            if not wf.calls:
                raise WorkloadError(f"workflow {wf.workflow_id}: no calls")
            for i, c in enumerate(wf.calls):
                where = f"workflow {wf.workflow_id} call {i}"
                if not 0 <= c.prompt_segment < n:
                    raise WorkloadError(f"{where}: prompt_segment {c.prompt_segment} not in tree")
                if self.tree.end_tokens(c.prompt_segment) != c.input_tokens:
                    raise WorkloadError(f"{where}: input_tokens {c.input_tokens} != "
                                        f"tree.end_tokens {self.tree.end_tokens(c.prompt_segment)}")
                if c.output_tokens < 1:
                    raise WorkloadError(f"{where}: output_tokens must be >= 1")
                if c.gap_after_s < 0:
                    raise WorkloadError(f"{where}: negative gap_after_s")
                if c.output_segment != ROOT and (
                        not 0 <= c.output_segment < n
                        or self.tree.parent(c.output_segment) != c.prompt_segment
                        or self.tree.tokens(c.output_segment) != c.output_tokens):
                    raise WorkloadError(f"{where}: output_segment must be a child of the prompt "
                                        "segment holding output_tokens tokens")


def with_arrivals(workload: Workload, arrivals_s: Sequence[float]) -> Workload:
    """Return a copy of ``workload`` whose workflow i arrives at ``arrivals_s[i]``.

    Workflows are re-sorted by arrival so engines can consume them in order. The tree is shared
    (it is append-only and never mutated after loading).
    """
    if len(arrivals_s) != len(workload.workflows):
        raise ValueError(f"arrivals_s has {len(arrivals_s)} entries for "
                         f"{len(workload.workflows)} workflows")
    wfs = [dataclasses.replace(w, arrival_s=float(a))
           for w, a in zip(workload.workflows, arrivals_s, strict=True)]
    wfs.sort(key=lambda w: w.arrival_s)
    return Workload(workload.name, workload.source, workload.tree, wfs, dict(workload.tenants))


def poisson_arrivals(n: int, rate_per_s: float, seed: int, start_s: float = 0.0) -> list[float]:
    """``n`` arrival times of a Poisson process of ``rate_per_s`` (seeded, deterministic).

    The first arrival is at ``start_s`` so a replay does not begin with idle time.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not rate_per_s > 0:
        raise ValueError(f"rate_per_s must be > 0, got {rate_per_s}")
    rng = random.Random(seed)
    out: list[float] = []
    t = start_s
    for i in range(n):
        if i:
            t += rng.expovariate(rate_per_s)
        out.append(t)
    return out


def cap_gaps(workload: Workload, max_gap_s: float) -> Workload:
    """Copy of ``workload`` with every ``gap_after_s`` capped at ``max_gap_s``.

    Real sessions contain user pauses of hours to days (Weka trace_0004 spans 3.4 days); a
    replay that studies serving, not idleness, can cap them. Tool latencies below the cap are
    kept exactly.
    """
    if not max_gap_s >= 0:
        raise ValueError(f"max_gap_s must be >= 0, got {max_gap_s}")
    wfs = [dataclasses.replace(w, calls=tuple(
        c if c.gap_after_s <= max_gap_s else dataclasses.replace(c, gap_after_s=max_gap_s)
        for c in w.calls)) for w in workload.workflows]
    return Workload(workload.name, workload.source, workload.tree, wfs, dict(workload.tenants))

"""The request traces ``saga fidelity`` replays, and the token ids a real engine sees for them.

A trace is an ordinary :class:`~nodeagent.workloads.model.Workload` (prefix structure, prompt
and output lengths, arrival order, tool pauses), so the simulated side replays it with the
bench's own cluster harness unchanged. The built-in generator makes agent loops small enough
for a CPU engine with a tiny model: a system prompt every workflow shares, a task per workflow,
then per step the previous output (re-sent, so its KV is reusable) and a tool result.

The real engine needs token ids: every segment gets a fixed pseudo-random run of ids (seeded by
the segment id), except output segments, whose ids are whatever the engine generated for that
call, as an agent re-sends the model's own answer.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from nodeagent.workloads.model import (
    ROOT,
    CallSpec,
    ContextTree,
    TenantSpec,
    WorkflowSpec,
    Workload,
    WorkloadError,
)

TEMPLATE = "fidelity-agent"
TOOLS = ("bash", "read_file", "edit", "search")
FIRST_TOKEN_ID = 16
"""Prompt ids start here (below are the tiny model's special tokens)."""


@dataclass(frozen=True, slots=True)
class TraceSpec:
    """Shape of a generated trace (token counts are prompt tokens of the tiny model).

    ``pause_s`` and ``spacing_s`` are simulated seconds: tool pauses between a workflow's calls
    and the gap between workflow arrivals (uniform in the ranges)."""

    workflows: int = 6
    calls: int = 4
    seed: int = 1
    system_tokens: int = 160
    task_tokens: tuple[int, int] = (48, 200)
    output_tokens: tuple[int, int] = (6, 40)
    tool_tokens: tuple[int, int] = (24, 160)
    pause_s: tuple[float, float] = (0.005, 0.08)
    spacing_s: tuple[float, float] = (0.0, 0.03)

    def __post_init__(self) -> None:
        if self.workflows < 1 or self.calls < 1:
            raise WorkloadError("trace: workflows and calls must be >= 1")
        for name in ("task_tokens", "output_tokens", "tool_tokens", "pause_s", "spacing_s"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise WorkloadError(f"trace: {name} must be a range 0 <= low <= high")
        if self.system_tokens < 1 or self.output_tokens[0] < 1 or self.task_tokens[0] < 1:
            raise WorkloadError("trace: token counts must be >= 1")


def generate(spec: TraceSpec) -> Workload:
    """Closed-loop agent workflows over one shared system prompt (deterministic in ``seed``)."""
    rng = random.Random(spec.seed)
    tree = ContextTree()
    system = tree.add(ROOT, spec.system_tokens, owner=None)
    workflows: list[WorkflowSpec] = []
    arrival = 0.0
    for w in range(spec.workflows):
        wf_id = f"wf{w:03d}"
        seg = tree.add(system, rng.randint(*spec.task_tokens), owner=wf_id)
        calls: list[CallSpec] = []
        for c in range(spec.calls):
            out = rng.randint(*spec.output_tokens)
            last = c == spec.calls - 1
            out_seg = ROOT if last else tree.add(seg, out, owner=wf_id)
            tool = None if last else TOOLS[rng.randrange(len(TOOLS))]
            pause = 0.0 if last else rng.uniform(*spec.pause_s)
            calls.append(CallSpec(prompt_segment=seg, input_tokens=tree.end_tokens(seg),
                                  output_tokens=out, tool=tool, gap_after_s=pause,
                                  output_segment=out_seg))
            if not last:
                seg = tree.add(out_seg, rng.randint(*spec.tool_tokens), owner=wf_id)
        workflows.append(WorkflowSpec(wf_id, "default", TEMPLATE, arrival, tuple(calls)))
        arrival += rng.uniform(*spec.spacing_s)
    workload = Workload(f"fidelity-{spec.workflows}x{spec.calls}-s{spec.seed}",
                        "saga fidelity's generator (nodeagent.fidelity.trace)", tree, workflows,
                        {"default": TenantSpec("default")})
    workload.validate()
    return workload


def check_fits(workload: Workload, max_model_len: int) -> None:
    """Every call's prompt plus output must fit the engine's context (WorkloadError if not)."""
    for wf in workload.workflows:
        for i, call in enumerate(wf.calls):
            if call.input_tokens + call.output_tokens > max_model_len:
                raise WorkloadError(
                    f"trace: workflow {wf.workflow_id} call {i} needs "
                    f"{call.input_tokens + call.output_tokens} tokens, more than the engine's "
                    f"context of {max_model_len}")


class TraceTokens:
    """Token ids of every prompt of a trace, for a real engine (see the module docstring)."""

    def __init__(self, workload: Workload, vocab_size: int, seed: int = 0) -> None:
        if vocab_size <= FIRST_TOKEN_ID + 1:
            raise ValueError(f"vocab_size must be > {FIRST_TOKEN_ID + 1}, got {vocab_size}")
        self.tree = workload.tree
        self.vocab_size = vocab_size
        self.seed = seed
        self._outputs = {c.output_segment for wf in workload.workflows for c in wf.calls
                         if c.output_segment != ROOT}
        self._generated: dict[int, list[int]] = {}
        self._fixed: dict[int, list[int]] = {}

    def segment(self, seg: int) -> list[int]:
        if seg in self._outputs:
            try:
                return self._generated[seg]
            except KeyError:
                raise KeyError(f"output segment {seg} has not been generated yet") from None
        ids = self._fixed.get(seg)
        if ids is None:
            rng = random.Random(self.seed * 1_000_003 + seg)
            ids = [rng.randrange(FIRST_TOKEN_ID, self.vocab_size)
                   for _ in range(self.tree.tokens(seg))]
            self._fixed[seg] = ids
        return ids

    def prompt(self, prompt_segment: int) -> list[int]:
        return [t for seg in self.tree.path(prompt_segment) for t in self.segment(seg)]

    def generated(self, output_segment: int, token_ids: list[int]) -> None:
        """The engine produced ``token_ids`` for the call whose output is ``output_segment``."""
        if output_segment == ROOT:
            return
        if len(token_ids) != self.tree.tokens(output_segment):
            raise ValueError(f"output segment {output_segment} holds "
                             f"{self.tree.tokens(output_segment)} tokens, the engine generated "
                             f"{len(token_ids)}")
        self._generated[output_segment] = list(token_ids)


def tagged(workload: Workload, tag: str, start_s: float = 0.0) -> Workload:
    """The same trace with workflow (and segment owner), tenant and template names prefixed by
    ``tag`` and every arrival moved by ``start_s``: each replay on a long-lived engine then
    meets policies that have learned nothing about its workflows, as a fresh simulator does."""

    lists = workload.tree.to_lists()
    tree = ContextTree.from_lists(lists["parent"], lists["tokens"],
                                  [None if o is None else f"{tag}{o}" for o in lists["owner"]])
    tenants = {f"{tag}{name}": dataclasses.replace(t, name=f"{tag}{name}")
               for name, t in workload.tenants.items()}
    workflows = [dataclasses.replace(wf, workflow_id=f"{tag}{wf.workflow_id}",
                                     tenant=f"{tag}{wf.tenant}", template=f"{tag}{wf.template}",
                                     arrival_s=wf.arrival_s + start_s)
                 for wf in workload.workflows]
    return Workload(workload.name, workload.source, tree, workflows, tenants)

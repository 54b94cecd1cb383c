"""Seeded synthetic agent workloads, so the product runs without any trace files.

Two templates, the SAGA paper's workload pair (SWE-bench coding agents + WebArena browser
agents, SAGA.md). Every parameter names its source:

  [WEKA]   ../shared/traces/PROVENANCE.md and our measurement of the 500 Weka Claude Code
           dev sessions with nodeagent.workloads.weka (calls/session p50 35, p90 154; output
           p50 234, p90 916; per-step context growth beyond the output p25 86, p50 330,
           p90 2,768 tokens; system+tool prompt p50 14.7k; tool gap p25 6, p50 9, p90 67 s).
  [SWEPRO] SWE-agent on SWE-Bench Pro, median trajectory 29-78 steps across four models
           (nilenso.github.io/swe-bench-pro-cost-token-time-analysis).
  [SWEA]   Yang et al., "SWE-agent", arXiv 2405.15793: the agent-computer interface (file
           viewer, search, edit, shell/python, submit) the tool mix follows.
  [WA]     Zhou et al., "WebArena", arXiv 2307.13854, and its reference agent
           github.com/web-arena-x/webarena: run.py (max_steps 30, max_obs_length 1920 tokens,
           max_tokens 384, sleep_after_execution 2.0 s) and the CoT prompt
           agent/prompts/raw/p_cot_id_actree_2s.py (4,703 characters of instructions and two
           examples; per step "OBSERVATION / URL / OBJECTIVE / PREVIOUS ACTION").
  [EST]    engineering estimate, labelled.

SWE-like task (template ``swe-agent``): prompt = shared system+tool prompt (one segment, owner
None) -> task (issue + repo summary) -> for every step, the previous output and the tool's
result, so each call extends the previous prompt (the 97% prefix reuse of [WEKA]). When the
context passes ``SWE_CONTEXT_LIMIT`` the agent compacts: the next prompt is system + task +
a summary, a new branch (as Claude Code does, visible as partial-prefix calls in [WEKA]).

WebArena-like task (template ``webarena``), laid out as the WebArena reference agent builds
its prompt [WA]: shared system prompt (instructions + two examples) -> this step's page
observation (accessibility tree truncated to 1,920 tokens) + URL, objective and previous action.
The observation comes first, so consecutive calls share only the system prompt: short
contexts, little reuse, many quick calls; the output is not re-sent (no output_segment).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from nodeagent.workloads.model import (
    DEFAULT_TENANT,
    ROOT,
    CallSpec,
    ContextTree,
    TenantSpec,
    WorkflowSpec,
    Workload,
    WorkloadError,
)

SWE_TEMPLATE = "swe-agent"
WEBARENA_TEMPLATE = "webarena"
SYNTHETIC_SOURCE = ("synthetic generator nodeagent.workloads.synthetic (parameters from the Weka "
                    "Claude Code traces, SWE-agent arXiv 2405.15793, SWE-Bench Pro trajectory "
                    "analysis, WebArena arXiv 2307.13854; see module doc)")


@dataclass(frozen=True, slots=True)
class LogNormal:
    """Log-normal by its median and log-space sigma (p90 = median x exp(1.2816 sigma))."""

    median: float
    sigma: float
    low: float
    high: float

    def draw(self, rng: random.Random) -> float:
        x = self.median * math.exp(self.sigma * rng.gauss(0.0, 1.0))
        return min(self.high, max(self.low, x))


def sigma_for(median: float, p90: float) -> float:
    """Log-space sigma of a log-normal with the given median and 90th percentile."""
    return math.log(p90 / median) / 1.2815515655446004


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the agent calls: how often, how many tokens its result adds, how long it runs."""

    name: str
    weight: float
    result_tokens: LogNormal
    latency_s: LogNormal


# --- SWE-bench-like coding agent -------------------------------------------------------------
SWE_SYSTEM_TOKENS = 14_669  # [WEKA] system_tokens + tool_tokens, median over sessions
SWE_TASK_TOKENS = LogNormal(1_500, 0.6, 300, 8_000)  # issue text + repo summary [EST]
SWE_CALLS = LogNormal(35, sigma_for(35, 154), 3, 250)  # [WEKA] p50 35, p90 154; [SWEPRO] 29-78
SWE_OUTPUT_TOKENS = LogNormal(234, sigma_for(234, 916), 16, 8_192)  # [WEKA] p50 234, p90 916
SWE_CONTEXT_LIMIT = 128_000  # Llama-3.1 context window; compaction beyond it [EST]
SWE_SUMMARY_TOKENS = LogNormal(3_000, 0.4, 500, 12_000)  # compaction summary [EST]
SWE_TOOLS: tuple[ToolSpec, ...] = (
    # Mix over the SWE-agent interface [SWEA]; result sizes and latencies tuned so that the
    # mixture matches [WEKA]: growth p25/p50/p90 ~ 86/330/2.8k tokens, gap p25/p50/p90 ~ 6/9/67 s
    # (tests/workloads/test_synthetic.py checks the match).
    ToolSpec("view", 0.28, LogNormal(700, 1.2, 20, 40_000), LogNormal(8, 0.5, 1, 600)),
    ToolSpec("search", 0.18, LogNormal(250, 1.1, 10, 20_000), LogNormal(8, 0.5, 1, 600)),
    ToolSpec("edit", 0.25, LogNormal(120, 0.9, 10, 8_000), LogNormal(9, 0.5, 1, 600)),
    ToolSpec("bash", 0.17, LogNormal(350, 1.4, 10, 40_000), LogNormal(20, 1.3, 1, 1_800)),
    ToolSpec("test", 0.12, LogNormal(1_500, 1.1, 50, 40_000), LogNormal(90, 1.0, 5, 1_800)),
)

# --- WebArena-like browser agent -------------------------------------------------------------
WEBARENA_SYSTEM_TOKENS = 1_200  # 4,703 characters at ~4 characters per token [WA]
WEBARENA_CALLS = LogNormal(10, 0.55, 2, 30)  # max_steps 30 [WA]; median [EST]
WEBARENA_OBSERVATION_TOKENS = LogNormal(1_500, 0.35, 200, 1_920)  # truncated at 1,920 [WA]
WEBARENA_STEP_TAIL_TOKENS = LogNormal(80, 0.4, 20, 400)  # URL + objective + previous action [EST]
WEBARENA_OUTPUT_TOKENS = LogNormal(120, 0.5, 20, 384)  # CoT + action, max_tokens 384 [WA]
WEBARENA_SETTLE_S = 2.0  # sleep_after_execution after every action [WA]
WEBARENA_TOOL = ToolSpec("browser", 1.0, WEBARENA_OBSERVATION_TOKENS,
                         LogNormal(1.0, 0.6, 0.1, 60))  # action + a11y-tree extraction [EST]


def _pick_tool(rng: random.Random, tools: tuple[ToolSpec, ...]) -> ToolSpec:
    x = rng.random() * sum(t.weight for t in tools)
    for t in tools:
        x -= t.weight
        if x < 0:
            return t
    return tools[-1]


def swe_workflow(tree: ContextTree, system_seg: int, wid: str,
                 rng: random.Random) -> WorkflowSpec:
    """One SWE-bench-like task (module doc)."""
    task = tree.add(system_seg, round(SWE_TASK_TOKENS.draw(rng)), wid)
    n_calls = round(SWE_CALLS.draw(rng))
    prompt = task
    calls: list[CallSpec] = []
    for k in range(n_calls):
        out = round(SWE_OUTPUT_TOKENS.draw(rng))
        last = k == n_calls - 1
        if last:
            calls.append(CallSpec(prompt, tree.end_tokens(prompt), out, None, 0.0))
            break
        tool = _pick_tool(rng, SWE_TOOLS)
        result = round(tool.result_tokens.draw(rng))
        gap = round(tool.latency_s.draw(rng), 3)
        if tree.end_tokens(prompt) + out + result > SWE_CONTEXT_LIMIT:
            # compaction: the next prompt restarts from the task with a summary; the output
            # is not re-sent verbatim, so it gets no output segment
            calls.append(CallSpec(prompt, tree.end_tokens(prompt), out, tool.name, gap))
            prompt = tree.add(task, round(SWE_SUMMARY_TOKENS.draw(rng)) + result, wid)
        else:
            out_seg = tree.add(prompt, out, wid)
            calls.append(CallSpec(prompt, tree.end_tokens(prompt), out, tool.name, gap,
                                  out_seg))
            prompt = tree.add(out_seg, result, wid)
    return WorkflowSpec(wid, DEFAULT_TENANT, SWE_TEMPLATE, 0.0, tuple(calls))


def webarena_workflow(tree: ContextTree, system_seg: int, wid: str,
                      rng: random.Random) -> WorkflowSpec:
    """One WebArena-like task (module doc)."""
    n_calls = round(WEBARENA_CALLS.draw(rng))
    calls: list[CallSpec] = []
    for k in range(n_calls):
        step = (round(WEBARENA_OBSERVATION_TOKENS.draw(rng))
                + round(WEBARENA_STEP_TAIL_TOKENS.draw(rng)))
        prompt = tree.add(system_seg, step, wid)
        out = round(WEBARENA_OUTPUT_TOKENS.draw(rng))
        if k == n_calls - 1:
            calls.append(CallSpec(prompt, tree.end_tokens(prompt), out, None, 0.0))
            break
        gap = round(WEBARENA_SETTLE_S + WEBARENA_TOOL.latency_s.draw(rng), 3)
        calls.append(CallSpec(prompt, tree.end_tokens(prompt), out, WEBARENA_TOOL.name, gap))
    return WorkflowSpec(wid, DEFAULT_TENANT, WEBARENA_TEMPLATE, 0.0, tuple(calls))


SYNTHETIC_KINDS = ("swe", "webarena", "mix")
DEFAULT_SYNTHETIC_WORKFLOWS = 100
MIX_SWE_FRACTION = 0.5
"""synthetic:mix draws each workflow's template with this probability of swe-agent (the paper
mixes the two benchmarks; it does not publish the ratio) [EST]."""


def generate(kind: str, n_workflows: int = DEFAULT_SYNTHETIC_WORKFLOWS,
             seed: int = 0) -> Workload:
    """``n_workflows`` synthetic workflows of ``kind`` ("swe", "webarena" or "mix"), all
    arriving at 0.0 (set arrivals with load.arrivals_for_load). Same seed, same workload."""
    if kind not in SYNTHETIC_KINDS:
        raise WorkloadError(f"unknown synthetic kind {kind!r}; expected one of "
                            f"{', '.join(SYNTHETIC_KINDS)}")
    if n_workflows < 1:
        raise WorkloadError(f"synthetic: number of workflows must be >= 1, got {n_workflows}")
    rng = random.Random(f"saga-synthetic-{kind}-{seed}")
    tree = ContextTree()
    system: dict[str, int] = {}
    workflows: list[WorkflowSpec] = []
    for i in range(n_workflows):
        swe = kind == "swe" or (kind == "mix" and rng.random() < MIX_SWE_FRACTION)
        template = SWE_TEMPLATE if swe else WEBARENA_TEMPLATE
        if template not in system:
            size = SWE_SYSTEM_TOKENS if swe else WEBARENA_SYSTEM_TOKENS
            system[template] = tree.add(ROOT, size, None)  # shared by all tasks of the template
        wid = f"{'swe' if swe else 'web'}-{i:05d}"
        make = swe_workflow if swe else webarena_workflow
        workflows.append(make(tree, system[template], wid, rng))
    return Workload(name=f"synthetic-{kind}-{n_workflows}",
                    source=f"{SYNTHETIC_SOURCE}; kind={kind}, seed={seed}",
                    tree=tree, workflows=workflows,
                    tenants={DEFAULT_TENANT: TenantSpec(DEFAULT_TENANT)})

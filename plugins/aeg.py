"""Agent Execution Graph (AEG): what an agent template does next, learned online.

SAGA's first mechanism. Per agent template the graph has the states ``call`` (an LLM call),
``tool:<name>`` (a tool run) and ``end``; edges count observed transitions. Alongside it keeps
compact distributions: tool latency per tool and the user's think time between calls without a
tool (log-normal fits by running moments of log-time, so the expected *remaining* time given the
time already spent is available in closed form), output length, context growth per call, and
the fraction of the previous context that the next call re-reads.

For a live workflow it predicts the probability of another LLM call, the expected time until
it (conditioned on the time already spent in the current tool: log-normal tool times have a
mean residual life that grows with elapsed time, so a tool that has run long is expected to run
longer still) and the prefix that call will reuse.

Priors. A new template starts from :class:`AEGPrior`, whose values are pseudo-observations
(Bayesian-style: a prior of weight ``k`` counts as ``k`` observations and is outweighed as
evidence arrives). Defaults come from the Weka Claude Code traces (../shared/traces/PROVENANCE.md:
tool gap p50 9 s / p90 72 s, output p50 216 tokens, 97.4% of input tokens are the previous
call's prefix, p50 46 calls per session). A tool seen for the first time inherits the template's
pooled tool-latency fit as its prior.

The graph serialises to JSON (stored on the control plane's AgentTemplate) and back.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from plugins.views import Prediction, WorkflowEvent

Z90 = 1.2815515655446004
"""Standard normal 90th percentile: a log-normal's p90 is exp(mu + Z90 * sigma)."""
_SQRT2 = math.sqrt(2.0)
_MIN_DURATION_S = 1e-3
_MIN_TOKENS = 1.0
CALL = "call"
END = "end"
TOOL_PREFIX = "tool:"
ANY_TOOL = "tool:*"
"""The pooled tool state: carries the prior's tool mass and every tool's observations."""
_MAX_JOURNAL = 4096
"""Events kept per live workflow for merging pushed graphs (a workflow has ~2 per call)."""
FORMAT = "saga-aeg"
FORMAT_VERSION = 1


class LogNormalFit:
    """Running moments of log(x) with prior pseudo-observations (a log-normal fit).

    Welford's update started from ``n0`` pseudo-observations at the prior's mean and variance is
    the conjugate-style combination of prior and data, so the fit moves smoothly from the prior
    to the evidence.
    """

    __slots__ = ("m2", "mu", "n")

    def __init__(self, n: float, mu: float, m2: float) -> None:
        self.n = n
        self.mu = mu
        self.m2 = m2

    @classmethod
    def from_quantiles(cls, median: float, p90: float, weight: float) -> LogNormalFit:
        """Prior from a median and a 90th percentile, worth ``weight`` observations."""
        if not (median > 0 and p90 > median):
            raise ValueError(f"need 0 < median < p90, got median={median}, p90={p90}")
        sigma = (math.log(p90) - math.log(median)) / Z90
        return cls(weight, math.log(median), sigma * sigma * weight)

    def copy(self, weight: float | None = None) -> LogNormalFit:
        """The same fit, optionally rescaled to be worth ``weight`` observations."""
        if weight is None or self.n <= 0:
            return LogNormalFit(self.n, self.mu, self.m2)
        w = min(weight, self.n)
        return LogNormalFit(w, self.mu, self.m2 * w / self.n)

    def add(self, x: float, floor: float) -> None:
        lx = math.log(max(x, floor))
        self.n += 1.0
        delta = lx - self.mu
        self.mu += delta / self.n
        self.m2 += delta * (lx - self.mu)

    @property
    def sigma(self) -> float:
        return math.sqrt(self.m2 / self.n) if self.n > 0 else 0.0

    @property
    def median(self) -> float:
        return math.exp(self.mu)

    @property
    def mean(self) -> float:
        s = self.sigma
        return math.exp(self.mu + 0.5 * s * s)

    def quantile(self, z: float) -> float:
        """Value at the standard-normal score ``z`` (Z90 gives the p90)."""
        return math.exp(self.mu + z * self.sigma)

    def mean_residual(self, elapsed: float) -> float:
        """E[X - e | X > e]: expected remaining time after ``elapsed`` already spent."""
        mean = self.mean
        if elapsed <= 0.0:
            return mean
        s = self.sigma
        if s < 1e-9:
            return max(math.exp(self.mu) - elapsed, 0.0)
        z = (math.log(elapsed) - self.mu) / s
        survival = 0.5 * math.erfc(z / _SQRT2)
        if survival < 1e-12:
            # Far tail: the log-normal hazard is ~ z / (s * e), so the mean residual is ~ s * e / z.
            return elapsed * s / max(z, 1.0)
        tail_mass = mean * 0.5 * math.erfc((z - s) / _SQRT2)  # E[X; X > e]
        return max(tail_mass / survival - elapsed, 0.0)

    def to_list(self) -> list[float]:
        return [self.n, self.mu, self.m2]

    @classmethod
    def from_list(cls, data: Any, field: str) -> LogNormalFit:
        values = _floats(data, 3, field)
        if values[0] < 0 or values[2] < 0:
            raise ValueError(f"{field}: weight and m2 must be >= 0")
        return cls(*values)


class RunningMean:
    """A mean with prior pseudo-observations."""

    __slots__ = ("mean", "n")

    def __init__(self, n: float, mean: float) -> None:
        self.n = n
        self.mean = mean

    def add(self, x: float) -> None:
        self.n += 1.0
        self.mean += (x - self.mean) / self.n

    def to_list(self) -> list[float]:
        return [self.n, self.mean]

    @classmethod
    def from_list(cls, data: Any, field: str) -> RunningMean:
        values = _floats(data, 2, field)
        if values[0] < 0:
            raise ValueError(f"{field}: weight must be >= 0")
        return cls(*values)


def _floats(data: Any, length: int, field: str) -> list[float]:
    if not isinstance(data, list | tuple) or len(data) != length:
        raise ValueError(f"{field}: expected a list of {length} numbers, got {data!r}")
    try:
        values = [float(v) for v in data]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field}: expected numbers, got {data!r}") from exc
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{field}: values must be finite, got {data!r}")
    return values


@dataclass(frozen=True, slots=True)
class AEGPrior:
    """Where a new template starts; every figure is worth ``*_weight`` observations.

    Sources: Weka Claude Code traces (PROVENANCE.md): tool gap median 9 s, p90 72 s; output median
    216 tokens; 97.4% of input tokens are the previous call's prefix; p50 46 calls per session
    (so P(end) after a call ~ 1/46 ~ 0.02). Assumptions (no trace figure): 90% of calls are
    followed by a tool, 8% by user think time (median 20 s, p90 120 s); output p90 1,000 tokens;
    context growth 2,000 tokens per call (104k p50 input over ~46 calls); 5% of tools end the task.
    """

    p_tool_after_call: float = 0.90
    p_call_after_call: float = 0.08
    p_call_after_tool: float = 0.95
    transition_weight: float = 10.0
    tool_median_s: float = 9.0
    tool_p90_s: float = 72.0
    think_median_s: float = 20.0
    think_p90_s: float = 120.0
    latency_weight: float = 5.0
    output_median_tokens: float = 216.0
    output_p90_tokens: float = 1000.0
    output_weight: float = 5.0
    growth_tokens_per_call: float = 2000.0
    reuse_fraction: float = 0.974
    post_tool_delay_s: float = 0.2
    mean_weight: float = 5.0

    def __post_init__(self) -> None:
        probabilities = ("p_tool_after_call", "p_call_after_call", "p_call_after_tool")
        for name in (*probabilities, "reuse_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"AEGPrior.{name} must be in [0, 1], got {value}")
        if self.p_tool_after_call + self.p_call_after_call > 1.0:
            raise ValueError("AEGPrior: p_tool_after_call + p_call_after_call must be <= 1")


class AgentExecutionGraph:
    """The learned graph of one agent template (see the module docstring)."""

    def __init__(self, template: str, prior: AEGPrior | None = None) -> None:
        self.template = template
        self.prior = prior or AEGPrior()
        p = self.prior
        self.counts: dict[str, dict[str, float]] = {}
        self.tools: dict[str, LogNormalFit] = {}
        self.pooled_tool = LogNormalFit.from_quantiles(
            p.tool_median_s, p.tool_p90_s, p.latency_weight
        )
        self.think = LogNormalFit.from_quantiles(p.think_median_s, p.think_p90_s, p.latency_weight)
        self.output = LogNormalFit.from_quantiles(
            p.output_median_tokens, p.output_p90_tokens, p.output_weight
        )
        self.growth = RunningMean(p.mean_weight, p.growth_tokens_per_call)
        self.reuse = RunningMean(p.mean_weight, p.reuse_fraction)
        self.post_tool = RunningMean(p.mean_weight, p.post_tool_delay_s)
        self.workflows_seen = 0
        self._invalidate()

    def _invalidate(self) -> None:
        """Drop derived quantities; predictions recompute them lazily (cheap between events)."""
        self._call_summary: tuple[float, float, float] | None = None
        self._branches: list[tuple[float, LogNormalFit, float]] | None = None
        self._p_call: dict[str, float] = {}

    # ---------------------------------------------------------------- learning

    def count_transition(self, source: str, target: str) -> None:
        row = self.counts.setdefault(source, {})
        row[target] = row.get(target, 0.0) + 1.0
        self._invalidate()

    def add_tool_latency(self, tool: str, seconds: float) -> None:
        fit = self.tools.get(tool)
        if fit is None:
            fit = self.tools[tool] = self.pooled_tool.copy(self.prior.latency_weight)
        fit.add(seconds, _MIN_DURATION_S)
        self.pooled_tool.add(seconds, _MIN_DURATION_S)
        self._invalidate()

    def add_think(self, seconds: float) -> None:
        self.think.add(seconds, _MIN_DURATION_S)
        self._invalidate()

    def add_post_tool_delay(self, seconds: float) -> None:
        self.post_tool.add(max(seconds, 0.0))
        self._invalidate()

    # ---------------------------------------------------------------- probabilities

    def _prior_row(self, state: str) -> dict[str, float]:
        p, k = self.prior, self.prior.transition_weight
        if state == CALL:
            p_end = max(1.0 - p.p_tool_after_call - p.p_call_after_call, 0.0)
            return {
                ANY_TOOL: k * p.p_tool_after_call,
                CALL: k * p.p_call_after_call,
                END: k * p_end,
            }
        return {CALL: k * p.p_call_after_tool, END: k * (1.0 - p.p_call_after_tool)}

    def transition_probabilities(self, state: str) -> dict[str, float]:
        """P(next state | state), prior pseudo-counts included; ``tool:*`` = an unseen tool."""
        row = dict(self._prior_row(state if state == CALL else ANY_TOOL))
        if state.startswith(TOOL_PREFIX) and state != ANY_TOOL:
            # A specific tool borrows strength from all tools of the template, then its own data.
            pooled = self._pooled_tool_row()
            for target, value in pooled.items():
                row[target] = row.get(target, 0.0) + value
        elif state == ANY_TOOL:
            for target, value in self._pooled_tool_row().items():
                row[target] = row.get(target, 0.0) + value
        for target, value in self.counts.get(state, {}).items():
            row[target] = row.get(target, 0.0) + value
        total = sum(row.values())
        return {target: value / total for target, value in row.items()} if total > 0 else {}

    def _pooled_tool_row(self) -> dict[str, float]:
        """All tools' observed exits, scaled to at most the prior's weight (hierarchical prior)."""
        merged: dict[str, float] = {}
        for state, row in self.counts.items():
            if state.startswith(TOOL_PREFIX):
                for target, value in row.items():
                    merged[target] = merged.get(target, 0.0) + value
        total = sum(merged.values())
        cap = self.prior.transition_weight
        if total > cap:
            merged = {t: v * cap / total for t, v in merged.items()}
        return merged

    def p_call_after(self, state: str) -> float:
        value = self._p_call.get(state)
        if value is None:
            value = self._p_call[state] = self.transition_probabilities(state).get(CALL, 0.0)
        return value

    def tool_fit(self, tool: str) -> LogNormalFit:
        return self.tools.get(tool, self.pooled_tool)

    def _call_branches(self) -> list[tuple[float, LogNormalFit, float]]:
        """From the end of a call: (P(branch leads to a call), gap fit, extra delay) per branch."""
        if self._branches is not None:
            return self._branches
        branches: list[tuple[float, LogNormalFit, float]] = []
        post = max(self.post_tool.mean, 0.0)
        for target, prob in self.transition_probabilities(CALL).items():
            if target == CALL:
                branches.append((prob, self.think, 0.0))
            elif target.startswith(TOOL_PREFIX):
                tool = target[len(TOOL_PREFIX) :]
                fit = self.pooled_tool if target == ANY_TOOL else self.tool_fit(tool)
                branches.append((prob * self.p_call_after(target), fit, post))
        self._branches = branches
        return branches

    def call_summary(self) -> tuple[float, float, float]:
        """(P(another call after a call), expected gap to it, expected calls remaining after)."""
        if self._call_summary is None:
            branches = self._call_branches()
            p_next = sum(b[0] for b in branches)
            gap = sum(b[0] * (b[1].mean + b[2]) for b in branches) / p_next if p_next > 0 else 0.0
            p_cont = min(p_next, 0.999)
            self._call_summary = (p_next, gap, p_cont / (1.0 - p_cont))
        return self._call_summary

    # ---------------------------------------------------------------- serialisation

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "template": self.template,
            "workflows_seen": self.workflows_seen,
            "transitions": {s: dict(row) for s, row in self.counts.items()},
            "tools": {name: fit.to_list() for name, fit in self.tools.items()},
            "pooled_tool": self.pooled_tool.to_list(),
            "think": self.think.to_list(),
            "output": self.output.to_list(),
            "growth": self.growth.to_list(),
            "reuse": self.reuse.to_list(),
            "post_tool": self.post_tool.to_list(),
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], prior: AEGPrior | None = None
    ) -> AgentExecutionGraph:
        """Rebuild a graph; a malformed document raises ValueError naming the field."""
        if not isinstance(data, Mapping):
            raise ValueError("AEG document must be a JSON object")
        if data.get("format") != FORMAT:
            raise ValueError(f"format: expected {FORMAT!r}, got {data.get('format')!r}")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"version: unsupported {data.get('version')!r}")
        template = data.get("template")
        if not isinstance(template, str):
            raise ValueError("template: expected a string")
        graph = cls(template, prior)
        transitions = data.get("transitions", {})
        if not isinstance(transitions, Mapping):
            raise ValueError("transitions: expected an object")
        for state, row in transitions.items():
            if not isinstance(row, Mapping):
                raise ValueError(f"transitions.{state}: expected an object")
            graph.counts[str(state)] = {
                str(t): _floats([v], 1, f"transitions.{state}.{t}")[0] for t, v in row.items()
            }
        tools = data.get("tools", {})
        if not isinstance(tools, Mapping):
            raise ValueError("tools: expected an object")
        graph.tools = {str(n): LogNormalFit.from_list(v, f"tools.{n}") for n, v in tools.items()}
        graph.pooled_tool = LogNormalFit.from_list(data.get("pooled_tool"), "pooled_tool")
        graph.think = LogNormalFit.from_list(data.get("think"), "think")
        graph.output = LogNormalFit.from_list(data.get("output"), "output")
        graph.growth = RunningMean.from_list(data.get("growth"), "growth")
        graph.reuse = RunningMean.from_list(data.get("reuse"), "reuse")
        graph.post_tool = RunningMean.from_list(data.get("post_tool"), "post_tool")
        graph._invalidate()
        seen = data.get("workflows_seen", 0)
        if not isinstance(seen, int) or seen < 0:
            raise ValueError("workflows_seen: expected a non-negative integer")
        graph.workflows_seen = seen
        return graph


class _Live:
    """What the registry remembers about a workflow in flight."""

    __slots__ = ("context", "output", "prev", "prompt", "since", "state", "template", "tool")

    def __init__(self, template: str) -> None:
        self.template = template
        self.state = "new"  # new | call | after_call | tool | after_tool
        self.prev: str | None = None  # last completed step, for transitions: "call" or "tool:x"
        self.tool: str | None = None
        self.since = 0.0
        self.prompt = 0
        self.output = 0
        self.context = 0


class AEGRegistry:
    """All templates' graphs plus the live workflows; the policy manager owns one.

    ``observe`` learns from events; ``predict`` forecasts a live workflow. Thread-safe (one lock;
    uncontended in the simulator).
    """

    def __init__(self, prior: AEGPrior | None = None) -> None:
        self.prior = prior or AEGPrior()
        self._graphs: dict[str, AgentExecutionGraph] = {}
        self._live: dict[str, _Live] = {}
        self._journal: dict[str, list[WorkflowEvent]] = {}
        """Events of the workflows still live here: what :meth:`load` merges into a pushed
        graph (the control plane learns a workflow only once it has completed)."""
        self._lock = threading.Lock()

    def graph(self, template: str) -> AgentExecutionGraph:
        """The template's graph, created from the prior when the template is new."""
        graph = self._graphs.get(template)
        if graph is None:
            graph = self._graphs[template] = AgentExecutionGraph(template, self.prior)
        return graph

    def templates(self) -> list[str]:
        return sorted(self._graphs)

    def to_json(self, template: str) -> dict[str, Any]:
        with self._lock:
            return self.graph(template).to_dict()

    def learn_output(self, template: str, output_tokens: int) -> None:
        """A completed call's output length, from a host that records calls but does not follow
        workflows live (the gateway): its forecasts' expected output then learns between the
        control plane's pushes, as a node's does from its events. The next :meth:`load` of the
        template replaces it (the pushed graph includes those calls once their workflows end)."""
        with self._lock:
            self.graph(template).output.add(float(output_tokens), _MIN_TOKENS)

    def load(self, data: Mapping[str, Any]) -> AgentExecutionGraph:
        """Install a graph the control plane learned (``AgentTemplate.aeg_stats``), merged with
        what this registry learned locally that the control plane cannot know yet: the events
        of the template's workflows still live here are replayed into it. Everything else local
        came from workflows that ended, which the pushed graph includes (it is learned from
        completed workflows), so nothing is counted twice."""
        graph = AgentExecutionGraph.from_dict(data, self.prior)
        with self._lock:
            scratch = AEGRegistry(self.prior)
            scratch._graphs[graph.template] = graph
            for workflow_id, live in self._live.items():
                if live.template == graph.template:
                    for event in self._journal.get(workflow_id, ()):
                        scratch._observe(event)
            self._graphs[graph.template] = graph
        return graph

    def observe_all(self, events: Iterable[WorkflowEvent]) -> None:
        for event in events:
            self.observe(event)

    def observe(self, event: WorkflowEvent) -> None:
        with self._lock:
            self._observe(event)

    def _observe(self, ev: WorkflowEvent) -> None:
        graph = self.graph(ev.template)
        live = self._live.get(ev.workflow_id)
        if live is None:
            if ev.kind == "workflow_end":
                return
            live = self._live[ev.workflow_id] = _Live(ev.template)
            graph.workflows_seen += 1
        journal = self._journal.setdefault(ev.workflow_id, [])
        if len(journal) < _MAX_JOURNAL:
            journal.append(ev)
        kind = ev.kind
        if kind == "call_start":
            if live.prev is not None:
                graph.count_transition(live.prev, CALL)
                if live.state == "after_call":
                    graph.add_think(ev.time_s - live.since)
                elif live.state == "after_tool":
                    graph.add_post_tool_delay(ev.time_s - live.since)
            if live.context > 0:
                reused = ev.prefix_tokens if ev.prefix_tokens > 0 else ev.cached_tokens
                graph.reuse.add(min(max(reused / live.context, 0.0), 1.0))
                graph.growth.add(float(max(ev.prompt_tokens - live.prompt, 0)))
            live.state, live.since, live.tool = "call", ev.time_s, None
            live.prompt, live.output = ev.prompt_tokens, 0
            live.context = ev.prompt_tokens
        elif kind == "call_end":
            graph.output.add(float(ev.output_tokens), _MIN_TOKENS)
            live.output = ev.output_tokens
            live.context = live.prompt + ev.output_tokens
            live.state, live.since, live.prev = "after_call", ev.time_s, CALL
        elif kind == "tool_start":
            tool = ev.tool_name or "unknown"
            state = TOOL_PREFIX + tool
            if live.prev is not None:
                graph.count_transition(live.prev, state)
            live.state, live.since, live.tool, live.prev = "tool", ev.time_s, tool, state
        elif kind == "tool_end":
            tool = live.tool or ev.tool_name or "unknown"
            if live.state == "tool":
                graph.add_tool_latency(tool, ev.time_s - live.since)
            live.state, live.since, live.tool = "after_tool", ev.time_s, tool
        elif kind == "workflow_end":
            if live.prev is not None:
                graph.count_transition(live.prev, END)
            del self._live[ev.workflow_id]
            self._journal.pop(ev.workflow_id, None)
        else:
            raise ValueError(f"kind: unknown workflow event kind {kind!r}")

    def forget(self, workflow_id: str) -> None:
        """Drop a live workflow without learning an end (cancelled, migrated away for good)."""
        with self._lock:
            self._live.pop(workflow_id, None)
            self._journal.pop(workflow_id, None)

    def predict(
        self, workflow_id: str, now_s: float | None = None, context_tokens: int | None = None
    ) -> Prediction:
        """Forecast the next call of a live workflow (see the module docstring).

        ``now_s`` conditions on the time spent in the current step; without it the forecast is
        taken at the step's start. A workflow never observed gets the neutral forecast (calls
        again at once and re-reads its context); a finished one gets ``p_next_call == 0``.
        """
        with self._lock:
            live = self._live.get(workflow_id)
            if live is None:
                ctx = float(context_tokens or 0)
                return Prediction(1.0, 0.0, ctx)
            elapsed = max(now_s - live.since, 0.0) if now_s is not None else 0.0
            context = float(context_tokens if context_tokens is not None else live.context)
            return self._forecast(self.graph(live.template), live.state, live.tool, elapsed,
                                  context)

    def forecast(self, template: str, state: str, *, context_tokens: int = 0,
                 elapsed_s: float = 0.0, tool: str | None = None) -> Prediction:
        """The forecast for a workflow of ``template`` in ``state`` (``call``: a call in flight;
        ``after_call``, ``tool``, ``after_tool``: between calls), without following it live.

        What a host that sees workflows only through its own records uses (the gateway routes a
        new workflow's first call with ``state="call"``), from the same learned graph."""
        with self._lock:
            return self._forecast(self.graph(template), state, tool, max(elapsed_s, 0.0),
                                  float(context_tokens))

    @staticmethod
    def _forecast(graph: AgentExecutionGraph, state: str, tool: str | None, elapsed: float,
                  context: float) -> Prediction:
        p_call, gap_call, remaining = graph.call_summary()
        expected_output = graph.output.mean
        if state == "call":
            context += expected_output
            p_next, gap = p_call, gap_call
        elif state == "after_call":
            branches = graph._call_branches()
            p_next = sum(b[0] for b in branches)
            gap = 0.0
            if p_next > 0:
                for prob, fit, extra in branches:
                    wait = fit.mean_residual(elapsed) if fit is graph.think else fit.mean
                    gap += prob * (wait + extra)
                gap /= p_next
        elif state == "tool":
            name = tool or "unknown"
            p_next = graph.p_call_after(TOOL_PREFIX + name)
            gap = graph.tool_fit(name).mean_residual(elapsed) + max(graph.post_tool.mean, 0.0)
        elif state == "after_tool":
            p_next = graph.p_call_after(TOOL_PREFIX + (tool or "unknown"))
            gap = max(graph.post_tool.mean - elapsed, 0.0)
        else:  # "new": the workflow exists but has not called yet
            p_next, gap = 1.0, 0.0
        reuse = graph.reuse.mean * context if state != "new" else context
        return Prediction(
            p_next_call=p_next,
            expected_gap_s=gap,
            reuse_tokens=reuse,
            expected_output_tokens=expected_output,
            growth_tokens_per_call=max(graph.growth.mean, 0.0),
            expected_remaining_calls=p_next * (1.0 + remaining),
        )

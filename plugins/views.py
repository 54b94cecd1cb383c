"""Engine-agnostic views: what a policy is allowed to see.

Policies run unchanged inside the simulated engine and inside vLLM, so they never touch an
engine's own objects. Each engine describes its state with these small frozen dataclasses and
asks its decisions through the hooks of :mod:`plugins.hookspecs`. The views are immutable
snapshots (``frozen=True``) so that a policy cannot change engine state behind the engine's
back, and they use ``slots=True`` because the simulator builds many of them per scheduling step.

Times are seconds on the engine's clock (simulated or wall); sizes are tokens unless a name says
``blocks``.

The contract. Every field below means the same on every host (the simulated engine, vLLM's
``SagaScheduler``, the gateway's routing); each view's docstring says, per field, its unit, what
it counts and when it changes. Hosts build NodeViews with :func:`node_view` and WorkflowViews
with :func:`workflow_view`, never with the constructors, so the one definition of ``load``,
``queue_delay_s``, ``tool_elapsed_s`` and ``isolated_s`` is the builders'. ``docs/architecture.md``
has the table and says, per host, where each input comes from; ``tests/conformance`` drives every
host through the same scenarios and checks they agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

WorkflowState = Literal["queued", "running", "waiting_tool", "done"]
"""Where a workflow is: a call waiting for admission, a call running, its agent in a tool, done."""

EventKind = Literal["call_start", "call_end", "tool_start", "tool_end", "workflow_end"]
"""The workflow events that feed the Agent Execution Graph and ``saga_observe``."""

WORKFLOW_STATES: tuple[str, ...] = ("queued", "running", "waiting_tool", "done")
EVENT_KINDS: tuple[str, ...] = ("call_start", "call_end", "tool_start", "tool_end", "workflow_end")


@dataclass(frozen=True, slots=True)
class TenantView:
    """A tenant as the fairness policies see it.

    ``weight`` is the tenant's share (a tenant of weight 2 is entitled to twice the service of a
    tenant of weight 1 while both are backlogged). ``slo_slowdown`` and ``slo_percentile`` state
    its objective: that percentile of its tasks must finish within ``slo_slowdown`` times their
    isolated run time.
    """

    name: str
    weight: float = 1.0
    slo_slowdown: float = 5.0
    slo_percentile: float = 99.0


@dataclass(frozen=True, slots=True)
class WorkflowView:
    """One agent workflow (task): the unit SAGA schedules.

    - ``state``: ``queued`` while a call of it waits for admission (a preempted call included),
      ``running`` while one is admitted (holding KV), ``waiting_tool`` between calls (its agent
      runs a tool or thinks), ``done`` after its last call. Changes at each call's arrival,
      admission, preemption and end.
    - ``arrival_s``: when the host first saw it (its first call's arrival), host clock.
    - ``calls_done``: calls that have finished; +1 at each call's end.
    - ``context_tokens``: tokens of its context: the current call's prompt while a call is in
      flight; that prompt plus its output once the call has ended.
    - ``cached_tokens``: tokens of its *own* context (blocks no other live workflow shares) whose
      KV is cached on its home node now, in whole blocks; rises as its calls compute, falls when
      those blocks are evicted. What moving the workflow elsewhere would throw away.
    - ``home_node``: the node its calls go to (None before its first call is routed).
    - ``tool_name``: the tool its agent runs, while between calls (None: thinking, or no tool
      reported); ``tool_elapsed_s``: seconds since its last call ended, while between calls
      (0 otherwise): what the AEG conditions the time to its next call on.
    - ``service_s``: engine seconds spent on its calls so far (each step's time split between the
      step's calls by scheduled tokens); rises as its calls are served.
    - ``isolated_s``: seconds its work so far would take alone on an idle node of this profile:
      the isolated time of its finished calls and of the gaps between them, plus the current
      call's isolated time while a call is in flight, or the time in the current gap while
      between calls. The denominator of AFS's slowdown.
    - ``elapsed_s``: now minus ``arrival_s``.
    """

    workflow_id: str
    tenant: str
    template: str
    state: str
    arrival_s: float
    calls_done: int
    context_tokens: int
    cached_tokens: int
    home_node: str | None
    tool_name: str | None
    tool_elapsed_s: float
    service_s: float
    isolated_s: float
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class CallView:
    """One LLM call (request) of a workflow; ``seq`` counts the workflow's calls from 0.

    ``prompt_tokens``: tokens of its prompt. ``cached_tokens``: the prompt's prefix whose KV is
    cached on the node it waits on, in whole blocks and short of the last prompt token (at least
    one token is always computed); taken when the call arrives. ``arrival_s``: when it arrived
    (host clock). ``node_cached_tokens`` is optional routing information: ``(node_id, tokens)``
    pairs giving how much of this prompt's prefix each node holds, where the host knows
    (prefix-aware routing).
    """

    call_id: str
    workflow_id: str
    tenant: str
    template: str
    seq: int
    prompt_tokens: int
    cached_tokens: int
    arrival_s: float
    node_cached_tokens: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class CacheEntryView:
    """One evictable prefix segment in a node's KV cache.

    The engine stores cached context as segments of a prefix tree; a leaf entry holds ``tokens``
    cached tokens in ``blocks`` blocks, preceded by ``depth_tokens`` tokens of ancestors. Evicting
    removes blocks from the tail of the segment. ``workflow_id`` is None when several workflows
    share the segment. ``next_use_s`` is only filled by the simulator for oracle policies
    (``requires_oracle = True``): the time of the next access, None when never used again.
    ``node_id`` names the node holding the entry (optional): it lets a policy see that an
    entry's workflow now lives elsewhere (migrated), so the entry is dead weight here.
    """

    entry_id: int
    workflow_id: str | None
    tenant: str | None
    tokens: int
    blocks: int
    depth_tokens: int
    last_access_s: float
    pinned: bool = False
    next_use_s: float | None = None
    node_id: str | None = None


@dataclass(frozen=True, slots=True)
class NodeView:
    """One inference instance (a vLLM engine or a simulated one). Built by :func:`node_view`.

    - ``waiting``: calls queued here and not admitted (preempted ones included).
    - ``running``: calls admitted (holding KV blocks), prefilling or decoding.
    - ``kv_total_tokens``: KV capacity, tokens (usable blocks x block size).
    - ``kv_free_tokens``: KV a new call can take *without evicting anything*: blocks holding
      neither a call's tokens nor a cached prefix nor a retention pin, x block size.
    - ``queue_delay_s``: seconds a call arriving now waits before its prefill starts: the prefill
      work ahead of it (running calls' prompt still to compute plus waiting calls' uncached
      prompt) times the node's seconds per prefill token at full chunks (its cost model; a real
      engine measures it).
    - ``load``: saturation, where >= 1.0 means saturated (llm-d's SaturationDetector): the larger
      of KV demand over KV capacity (demand: the tokens the node's running and waiting calls hold
      or must hold now, their prompts plus what they generated so far; never their unknown
      future output) and calls over batch slots (``(running + waiting) / max_num_seqs``).
    - ``cached_workflows``: workflows with private context cached here, when the host knows.
    """

    node_id: str
    waiting: int
    running: int
    kv_free_tokens: int
    kv_total_tokens: int
    queue_delay_s: float
    load: float
    cached_workflows: tuple[str, ...] = ()


def node_view(
    node_id: str,
    *,
    waiting: int,
    running: int,
    kv_total_tokens: int,
    kv_free_tokens: int,
    demand_tokens: int,
    pending_prefill_tokens: int,
    prefill_s_per_token: float,
    max_num_seqs: int,
    cached_workflows: tuple[str, ...] = (),
) -> NodeView:
    """The one definition of a NodeView's derived fields (see :class:`NodeView`)."""
    total = max(kv_total_tokens, 1)
    slots = (running + waiting) / max(max_num_seqs, 1)
    return NodeView(
        node_id=node_id, waiting=waiting, running=running,
        kv_free_tokens=min(max(kv_free_tokens, 0), kv_total_tokens),
        kv_total_tokens=kv_total_tokens,
        queue_delay_s=max(pending_prefill_tokens, 0) * prefill_s_per_token,
        load=max(demand_tokens / total, slots),
        cached_workflows=cached_workflows,
    )


def workflow_view(
    *,
    workflow_id: str,
    tenant: str,
    template: str,
    state: str,
    now_s: float,
    arrival_s: float,
    calls_done: int,
    context_tokens: int,
    cached_tokens: int,
    home_node: str | None,
    tool_name: str | None,
    gap_since_s: float | None,
    service_s: float,
    isolated_done_s: float,
    isolated_current_s: float,
) -> WorkflowView:
    """The one definition of a WorkflowView's derived fields (see :class:`WorkflowView`).

    ``gap_since_s``: when its last call ended (None before the first one ended);
    ``isolated_done_s``: isolated time of its finished calls and the gaps between them;
    ``isolated_current_s``: the call in flight's isolated time (ignored between calls).
    """
    between = state == "waiting_tool"
    elapsed_in_gap = max(now_s - gap_since_s, 0.0) if between and gap_since_s is not None else 0.0
    if between:
        isolated = isolated_done_s + elapsed_in_gap
    elif state == "done":
        isolated = isolated_done_s
    else:
        isolated = isolated_done_s + isolated_current_s
    return WorkflowView(
        workflow_id, tenant, template, state, arrival_s, calls_done, context_tokens,
        cached_tokens, home_node, tool_name if between else None, elapsed_in_gap, service_s,
        max(isolated, 1e-9), max(now_s - arrival_s, 0.0))


@dataclass(frozen=True, slots=True)
class Migration:
    """Move a workflow's home from ``source`` to ``target`` (work stealing)."""

    workflow_id: str
    source: str
    target: str


@dataclass(frozen=True, slots=True)
class WorkflowEvent:
    """Something that happened to a workflow, fed to the AEG and to ``saga_observe``.

    ``call_start`` carries the prompt and its cached prefix; ``call_end`` the output length;
    ``tool_start`` / ``tool_end`` the tool's name. ``prefix_tokens`` (optional, ``call_start``) is
    how many prompt tokens repeat the workflow's previous context whether cached or not; when the
    engine leaves it 0 the AEG learns reuse from ``cached_tokens`` (biased low by evictions).
    """

    kind: str
    workflow_id: str
    tenant: str
    template: str
    time_s: float
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    tool_name: str | None = None
    prefix_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Prediction:
    """The AEG's forecast for a live workflow.

    ``p_next_call``: probability that the workflow issues another LLM call; ``expected_gap_s``:
    expected seconds from now until that call (conditioned on time already spent in the current
    tool); ``reuse_tokens``: expected number of cached context tokens that call re-reads.
    The optional fields size a workflow's future: ``expected_output_tokens`` of its current or next
    call, ``growth_tokens_per_call`` (context added per call: output plus tool result) and
    ``expected_remaining_calls``.
    """

    p_next_call: float
    expected_gap_s: float
    reuse_tokens: float
    expected_output_tokens: float = 0.0
    growth_tokens_per_call: float = 0.0
    expected_remaining_calls: float = 0.0


@runtime_checkable
class SchedulingContext(Protocol):
    """What the engine provides to every hook call: the clock, the tenants, the nodes, lookups.

    ``predict`` is backed by the policy manager's Agent Execution Graph, so policies in any engine
    get the same forecasts.
    """

    @property
    def now_s(self) -> float: ...

    @property
    def tenants(self) -> Mapping[str, TenantView]: ...

    @property
    def nodes(self) -> Mapping[str, NodeView]: ...

    def workflow(self, workflow_id: str) -> WorkflowView | None: ...

    def predict(self, workflow_id: str) -> Prediction: ...


class Predictor(Protocol):
    """Anything that forecasts a workflow's next call (the policy manager, an AEG registry)."""

    def predict(self, workflow_id: str, now_s: float | None = None) -> Prediction: ...


@dataclass(slots=True)
class StaticContext:
    """A plain :class:`SchedulingContext` for tests, the CLI and engines with nothing better.

    ``predictor`` answers ``predict``; without one every workflow is predicted to call again
    immediately and re-read all its cached context (the neutral forecast).
    """

    now_s: float = 0.0
    tenants: Mapping[str, TenantView] = field(default_factory=dict)
    nodes: Mapping[str, NodeView] = field(default_factory=dict)
    workflows: Mapping[str, WorkflowView] = field(default_factory=dict)
    predictor: Predictor | None = None

    def workflow(self, workflow_id: str) -> WorkflowView | None:
        return self.workflows.get(workflow_id)

    def predict(self, workflow_id: str) -> Prediction:
        if self.predictor is not None:
            return self.predictor.predict(workflow_id, self.now_s)
        wf = self.workflow(workflow_id)
        reuse = float(wf.cached_tokens) if wf is not None else 0.0
        return Prediction(p_next_call=1.0, expected_gap_s=0.0, reuse_tokens=reuse)

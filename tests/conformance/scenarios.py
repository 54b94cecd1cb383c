"""The conformance scenarios, stated once and host-neutrally.

A scenario is a script of events (calls arriving, the engine running until a call is admitted or
finished, tool starts and ends, time passing, a live policy swap) played against a *host
driver* (:class:`NodeHost` for the node tier, :class:`ClusterHost` for the cluster tier), which
turns each event into that host's own entry points (see ``node_hosts.py``,
``tests/vllm/test_conformance.py``, ``cluster_hosts.py``). What every host must agree on is the
scenario's :class:`Observation`: the decisions the policy under test returned and the views it
returned them on (recorded by the recording policy, ``recording.py``), plus what the host did
(pins held, who was preempted, admission order, chosen node, migrations). ``expect`` adds the
scenario's absolute expectations per policy.

Prompts are block-aligned *runs* of distinct token ids (``RUNS``), so prefixes are shared
exactly where a scenario shares runs, on every host: vLLM gets the ids, the simulated node a
text of one 4-character piece per id (its stand-in tokenizer's unit), the bench cluster a
context-tree segment per run.

Nothing here imports Django or vLLM: the vLLM half (``make test-vllm``) and the rest
(``make test``) both import this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tests.conformance.policies import PolicyRow
from tests.conformance.recording import Recorder, steps_with_mixed_sets

BLOCK = 16
"""Block size of every host in the suite (vLLM's default, the profiles')."""
FIRST_TOKEN_ID = 3
"""Token ids start above the tiny Llama's special tokens (bos 1, eos 2)."""
MAX_TOKEN_IDS = 1000


# ---------------------------------------------------------------------------------------------
# calls and prompts


@dataclass(frozen=True)
class Call:
    """One LLM call of a scenario. ``call_id`` is ``<workflow>#<seq>`` on every host."""

    workflow: str
    seq: int
    prompt: tuple[str, ...]
    """Run names, concatenated; a later call re-sends its workflow's earlier runs."""
    output_tokens: int
    tenant: str = "acme"
    template: str = "agent"
    tool: str | None = None
    """Tool the agent runs after this call (the call ends with ``tool_calls``), or None."""

    @property
    def call_id(self) -> str:
        return f"{self.workflow}#{self.seq}"


@dataclass(frozen=True)
class Runs:
    """A scenario's token runs: name -> blocks, each run a distinct range of token ids."""

    blocks: Mapping[str, int]

    def __post_init__(self) -> None:
        total = sum(self.blocks.values()) * BLOCK
        assert total <= MAX_TOKEN_IDS, f"runs need {total} distinct token ids"

    def tokens(self, name: str) -> list[int]:
        offset = 0
        for run, n in self.blocks.items():
            if run == name:
                return [FIRST_TOKEN_ID + offset + i for i in range(n * BLOCK)]
            offset += n * BLOCK
        raise KeyError(name)

    def prompt_ids(self, prompt: Sequence[str]) -> list[int]:
        return [t for run in prompt for t in self.tokens(run)]

    def prompt_tokens(self, prompt: Sequence[str]) -> int:
        return sum(self.blocks[r] for r in prompt) * BLOCK


def token_text(ids: Sequence[int]) -> str:
    """The simulated node's text for token ids: one 4-character piece per id."""
    return "".join(f"{t:04d}" for t in ids)


@dataclass(frozen=True)
class NodeConfig:
    """One node's limits, identical on every host (vLLM's names). ``kv_blocks`` counts vLLM's
    pool including its null block, so ``kv_blocks - 1`` blocks are usable on every host."""

    kv_blocks: int = 1000
    max_num_seqs: int = 16
    max_num_batched_tokens: int = 4096

    @property
    def kv_tokens(self) -> int:
        return (self.kv_blocks - 1) * BLOCK


# ---------------------------------------------------------------------------------------------
# host drivers


class NodeHost(Protocol):
    """One node (SimBackend, or vLLM's SagaScheduler) driven through its own entry points.

    Time is the host's engine clock; every host starts at ``T0``. ``advance`` lets time pass
    while the engine keeps working (a step that begins before the target may end after it);
    ``run_until`` steps the engine until the predicate holds (a scenario bug if it never does).
    """

    name: str
    recorder: Recorder
    admitted: list[str]
    """Call ids in order of first admission."""
    admission_steps: dict[str, int]
    """Call id -> the host step (``recorder.step``) that first admitted it."""
    preempted: list[str]
    finished: list[str]

    def now(self) -> float: ...
    def arrive(self, call: Call) -> None: ...
    def advance(self, seconds: float) -> None: ...
    def run_until(self, what: str, done: Callable[[], bool]) -> None: ...
    def tool_start(self, workflow: str, tool: str) -> None: ...
    def tool_end(self, workflow: str) -> None: ...
    def workflow_end(self, workflow: str) -> None: ...
    def swap(self, kind: str, name: str, params: Mapping[str, Any]) -> None: ...
    def active(self, kind: str) -> str: ...
    def pinned_blocks(self, workflow: str) -> int: ...
    def node_view(self) -> dict[str, Any]:
        """The host's own NodeView of itself now (normalised)."""
        ...

    def settle(self) -> None:
        """Let the host apply what it defers to its next step (vLLM applies control-channel
        boundaries before its next step or arrival); a no-op where nothing is deferred."""
        ...


T0 = 1000.0
"""Every host's clock at the start of a scenario."""


def run_until_admitted(host: NodeHost, call_id: str) -> None:
    host.run_until(f"{call_id} admitted", lambda: call_id in host.admitted)


def run_until_finished(host: NodeHost, call_id: str) -> None:
    host.run_until(f"{call_id} finished", lambda: call_id in host.finished)


def run_until_all_finished(host: NodeHost, calls: Sequence[Call]) -> None:
    ids = [c.call_id for c in calls]
    host.run_until(f"{ids} finished", lambda: all(i in host.finished for i in ids))


# ---------------------------------------------------------------------------------------------
# observations


Observation = dict[str, Any]
"""Scenario key -> value; every key must be equal on every host (``disagreements.py`` says which
are measured, and within which tolerance)."""


def first(records: Sequence[Any]) -> Any:
    assert records, "the policy was never asked"
    return records[0]


def call_view_of(recorder: Recorder, call_id: str) -> dict[str, Any]:
    """The CallView the fairness policy priced ``call_id`` on (first time it was asked)."""
    return first(recorder.of("call_priority", where=lambda r: r.args["call"]["call_id"] == call_id)
                 ).args["call"]


def workflow_view_at_priority(recorder: Recorder, call_id: str) -> dict[str, Any]:
    return first(recorder.of("call_priority",
                             where=lambda r: r.args["call"]["call_id"] == call_id)).args["workflow"]


def decisive_admissions(host: NodeHost) -> list[dict[str, Any]]:
    """For each admission that had a choice (two calls or more waiting), the admission-order
    decision of that step: its waiting calls, the fairness priorities and the order."""
    out = []
    steps = host.admission_steps
    for call_id in host.admitted:
        step = steps.get(call_id)
        decided = host.recorder.of(
            "admission_order", where=lambda r, s=step: r.step == s and len(r.args["waiting"]) > 1)
        if decided:
            r = decided[-1]
            waiting = sorted(r.args["waiting"], key=lambda c: c["call_id"])  # order: no meaning
            out.append({"admitted": call_id, "waiting": waiting,
                        "priorities": r.args["priorities"], "order": r.result,
                        "node": r.args["node"], "policy": r.policy})
    return out


# ---------------------------------------------------------------------------------------------
# node-tier scenarios


@dataclass(frozen=True)
class NodeScenario:
    name: str
    kind_scope: str
    """The kind whose rows run it (see policies.SCENARIOS_BY_KIND)."""
    config: NodeConfig
    runs: Runs
    tenants: Mapping[str, float] = field(default_factory=lambda: {"acme": 1.0})
    script: Callable[[NodeHost, PolicyRow], Observation] = lambda host, row: {}
    expect: Callable[[Observation, PolicyRow], None] = lambda obs, row: None


# ---- a tool pause with retention, then the next call ------------------------------------------

RETENTION_RUNS = Runs({"A": 6, "Y": 10, "X": 26, "B": 2})
W0 = Call("W", 0, ("A",), 4, tool="bash")
Y0 = Call("Y", 0, ("Y",), 4)
X0 = Call("X", 0, ("X",), 1)
W1 = Call("W", 1, ("A", "B"), 4)


def retention_script(host: NodeHost, row: PolicyRow) -> Observation:
    """W's call ends and its agent runs a tool; Y runs, then X needs more KV than is free, so
    something cached must go; W's next call then finds what was kept of its context.

    40-block pool: W's 6 prompt blocks are the least recently used, so without a pin vLLM's LRU
    evicts them for X; a pin (ttl, aeg) keeps them and X evicts Y's instead."""
    host.arrive(W0)
    run_until_finished(host, W0.call_id)
    host.recorder.phase = "tool"
    host.tool_start("W", "bash")
    host.settle()
    pinned_at_start = host.pinned_blocks("W")
    host.advance(1.0)
    host.arrive(Y0)
    run_until_finished(host, Y0.call_id)
    host.arrive(X0)
    run_until_finished(host, X0.call_id)
    pinned_under_pressure = host.pinned_blocks("W")
    host.advance(1.0)
    host.tool_end("W")
    host.recorder.phase = "next call"
    host.arrive(W1)
    run_until_admitted(host, W1.call_id)
    pinned_after_admission = host.pinned_blocks("W")
    run_until_finished(host, W1.call_id)
    decision = first(host.recorder.of("tool_retention_s", phase="tool"))
    return {
        "retention_s": decision.result,
        "retention_view": decision.args["workflow"],
        "pinned_at_tool_start": pinned_at_start,
        "pinned_under_pressure": pinned_under_pressure,
        "pinned_after_admission": pinned_after_admission,
        "next_call_view": call_view_of(host.recorder, W1.call_id),
        "next_call_workflow_view": workflow_view_at_priority(host.recorder, W1.call_id),
        "finished": list(host.finished),
    }


def retention_expect(obs: Observation, row: PolicyRow) -> None:
    prompt = RETENTION_RUNS.prompt_tokens(W0.prompt)
    view = obs["retention_view"]
    assert view["state"] == "waiting_tool" and view["tool_name"] == "bash"
    assert view["calls_done"] == 1 and view["context_tokens"] == prompt + W0.output_tokens
    # view["cached_tokens"]: see test_known_workflow_cached_tokens_refresh (vLLM's is stale)
    assert view["tool_elapsed_s"] < 1e-3  # the tool just started (vLLM: clock epsilons)
    assert obs["pinned_after_admission"] == 0  # the next call holds its prefix itself
    keeps = obs["retention_s"] > 0
    assert (row.name == "ttl" and obs["retention_s"] == 60.0) or row.name != "ttl"
    if row.name in ("lru", "kvflow", "thunderagent"):  # never pin
        assert obs["retention_s"] == 0.0
    if keeps:
        assert obs["pinned_at_tool_start"] == prompt // BLOCK
        assert obs["pinned_under_pressure"] == prompt // BLOCK
        assert obs["next_call_view"]["cached_tokens"] == prompt
    else:
        assert obs["pinned_at_tool_start"] == 0
        assert obs["next_call_view"]["cached_tokens"] < prompt


RETENTION = NodeScenario(
    "retention", "eviction", NodeConfig(kv_blocks=40), RETENTION_RUNS,
    script=retention_script, expect=retention_expect)


# ---- preemption under KV pressure ------------------------------------------------------------

PREEMPTION_RUNS = Runs({"C": 4, "P": 10, "Q": 8, "D": 1})
C0 = Call("C", 0, ("C",), 4, tool="bash")
P0 = Call("P", 0, ("P",), 96)
Q0 = Call("Q", 0, ("Q",), 96)
C1 = Call("C", 1, ("C", "D"), 4)


def preemption_script(host: NodeHost, row: PolicyRow) -> Observation:
    """C's context is cached (and pinned if the policy keeps it across its tool); P then Q start
    on a 24-block pool and grow as they decode until the pool cannot hold both: cached blocks
    go first (in the eviction policy's order), then the running call the fairness policy values
    least (Q, the later arrival, under fcfs) is preempted, recomputed once P is done."""
    host.arrive(C0)
    run_until_finished(host, C0.call_id)
    host.tool_start("C", "bash")
    host.settle()
    pinned = host.pinned_blocks("C")
    host.advance(0.5)
    host.recorder.phase = "pressure"
    host.arrive(P0)
    host.advance(0.01)
    host.arrive(Q0)
    run_until_all_finished(host, [P0, Q0])
    host.recorder.phase = "return"
    host.tool_end("C")
    host.arrive(C1)
    run_until_finished(host, C1.call_id)
    return {
        "pinned_at_tool_start": pinned,
        "preempted": list(host.preempted),
        "admitted": list(host.admitted),
        "finished": list(host.finished),
        "return_call_view": call_view_of(host.recorder, C1.call_id),
    }


def preemption_expect(obs: Observation, row: PolicyRow) -> None:
    assert obs["preempted"] and set(obs["preempted"]) == {Q0.call_id}
    assert obs["finished"][:3] == [C0.call_id, P0.call_id, Q0.call_id]
    if row.name in ("lru", "kvflow", "thunderagent"):  # never pin
        assert obs["pinned_at_tool_start"] == 0
    if obs["pinned_at_tool_start"]:
        assert obs["return_call_view"]["cached_tokens"] == PREEMPTION_RUNS.prompt_tokens(C0.prompt)


PREEMPTION = NodeScenario(
    "preemption", "eviction", NodeConfig(kv_blocks=24, max_num_seqs=4, max_num_batched_tokens=512),
    PREEMPTION_RUNS, script=preemption_script, expect=preemption_expect)


# ---- admission order with two tenants of different weights -----------------------------------

ADMISSION_RUNS = Runs({"S": 8, "g1": 3, "g2": 1, "g3": 3, "b1": 1, "b2": 3, "b3": 1, "z": 1})
TENANTS = {"gold": 2.0, "bronze": 1.0}
WARM = Call("Z", 0, ("S", "z"), 1, tenant="bronze")
QUEUE = (
    Call("G1", 0, ("g1",), 8, tenant="gold"),
    Call("B1", 0, ("S", "b1"), 8, tenant="bronze"),
    Call("G2", 0, ("S", "g2"), 8, tenant="gold"),
    Call("B2", 0, ("b2",), 8, tenant="bronze"),
    Call("G3", 0, ("g3",), 8, tenant="gold"),
    Call("B3", 0, ("S", "b3"), 8, tenant="bronze"),
)
"""Uncached calls prefill 48 tokens, the ones re-reading the shared ``S`` prefix (cached by the
warm-up call) 16. They arrive together on an idle node with one batch slot, so every admission
is a choice among what is still queued, and every host has delivered the same service when it
chooses (arrivals in the middle of a call would meet service reported at different
granularities: per step on vLLM, per call segment on the simulated node, which the hookspec
allows; see disagreements.py, record_service_granularity)."""


def admission_script(host: NodeHost, row: PolicyRow) -> Observation:
    host.arrive(WARM)
    run_until_finished(host, WARM.call_id)
    host.advance(0.5)
    host.recorder.phase = "queue"
    for call in QUEUE:
        host.arrive(call)
    run_until_all_finished(host, QUEUE)
    return {
        "admitted": [c for c in host.admitted if c != WARM.call_id],
        "decisions": decisive_admissions(host),
        "call_views": {c.call_id: call_view_of(host.recorder, c.call_id) for c in QUEUE},
    }


def admission_expect(obs: Observation, row: PolicyRow) -> None:
    order = obs["admitted"]
    assert sorted(order) == sorted(c.call_id for c in QUEUE)
    for c in QUEUE:
        cached = obs["call_views"][c.call_id]["cached_tokens"]
        assert cached == (128 if "S" in c.prompt else 0), (c.call_id, cached)
    fcfs = sorted(c.call_id for c in QUEUE)  # same arrival time: call id breaks the tie
    assert len(obs["decisions"]) == len(QUEUE) - 1  # each admission but the last was a choice
    if row.kind == "fairness" and row.name in ("fcfs", "plas", "las"):
        assert order == fcfs  # plas, las: one call per program, none served before it waits
    if row.kind == "fairness" and row.name in ("vtc", "afs"):
        # weight 2: gold gets at least half of the first four slots, against the id order
        assert order != fcfs
        assert [c[0] for c in order[:4]].count("G") >= 2
    if row.kind == "admission":
        if row.name in ("priority", "thunderagent"):
            assert order == fcfs  # the fairness (fcfs) order (thunderagent: no program paused)
        else:  # cached prefixes first (lpm: longest prefix; saga: fewest prefill tokens in band)
            assert order[:3] == ["B1#0", "B3#0", "G2#0"], order


ADMISSION = NodeScenario(
    "admission_order", "fairness+admission", NodeConfig(max_num_seqs=1), ADMISSION_RUNS,
    tenants=TENANTS, script=admission_script, expect=admission_expect)


# ---- a live policy swap mid-stream -----------------------------------------------------------

KIND_HOOKS = {
    "eviction": ("saga_eviction_order", "saga_tool_retention_s"),
    "routing": ("saga_route_call", "saga_rebalance"),
    "admission": ("saga_admission_order",),
    "fairness": ("saga_call_priority", "saga_record_service"),
}
SWAP_QUEUE = tuple(
    Call(c.workflow, 0, c.prompt, 8, tenant=c.tenant, tool="bash") if c.workflow in ("G2", "B3")
    else Call(c.workflow, 0, c.prompt, 24, tenant=c.tenant) for c in QUEUE)
"""Tool calls end short: the simulated node renders a scripted tool call as a message of about
13 tokens, and caches decoded KV only as far as the rendered answer goes, where vLLM caches
every full block it computed (see disagreements.py, sim_tool_call_decoded_blocks)."""


SWAP_WARM = Call("Z", 0, ("S", "z"), 1, tenant="bronze", tool="bash")


def live_swap_script(host: NodeHost, row: PolicyRow) -> Observation:
    """The admission queue, with longer outputs: the first admission is a choice, and the
    warm-up call's tool start a retention decision, both by the old policy. Mid-stream (a call
    decoding, four queued) the row's kind is swapped from ``swap_source`` to the row's policy
    through the host's own control path; the rest of the
    queue, and the tool starts of G2 and B3, are decided by the new policy from the next step
    on. Nothing is lost or run twice, and no step mixes two policies of a kind."""
    host.arrive(SWAP_WARM)
    run_until_finished(host, SWAP_WARM.call_id)
    host.recorder.phase = "before swap"
    host.tool_start("Z", "bash")
    host.settle()
    host.advance(0.5)
    for call in SWAP_QUEUE:
        host.arrive(call)
    host.run_until("the first queued call admitted", lambda: len(host.admitted) >= 2)
    host.advance(0.05)
    assert host.admitted[1] not in host.finished, "swap while the first call decodes"
    step = host.recorder.step
    host.recorder.phase = "after swap"
    host.swap(row.kind, row.name, row.params)
    done: set[str] = set()

    def tools_started() -> bool:
        for c in SWAP_QUEUE:
            if c.tool and c.call_id in host.finished and c.call_id not in done:
                done.add(c.call_id)
                host.tool_start(c.workflow, c.tool)
        return all(c.call_id in host.finished for c in SWAP_QUEUE)

    host.run_until("the queue finished", tools_started)
    host.settle()
    hooks = KIND_HOOKS[row.kind]
    kind_records = [r for r in host.recorder.records if r.hook in hooks]
    before = [r for r in kind_records if r.step <= step]
    after = [r for r in kind_records if r.step > step]
    first_queued = host.admitted[1]
    return {
        "admitted": [c for c in host.admitted if c != SWAP_WARM.call_id],
        "finished": sorted(host.finished),
        "policies_before": sorted({r.policy for r in before}),
        "policies_after": sorted({r.policy for r in after}),
        "mixed_steps": steps_with_mixed_sets(host.recorder, hooks),
        "active": host.active(row.kind),
        "retention_after": [r.result for r in host.recorder.of("tool_retention_s")
                            if r.step > step],
        "decisions_after": [d for d in decisive_admissions(host)
                            if d["admitted"] not in (first_queued, SWAP_WARM.call_id)],
    }


def live_swap_expect(obs: Observation, row: PolicyRow) -> None:
    from tests.conformance.policies import swap_source

    ids = sorted([SWAP_WARM.call_id, *(c.call_id for c in SWAP_QUEUE)])
    assert obs["finished"] == ids  # every call exactly once
    assert obs["mixed_steps"] == []  # a swap never lands in the middle of a step
    assert obs["policies_after"] == [row.name]
    assert swap_source(row) in obs["policies_before"]
    assert obs["active"] == row.name
    if row.kind == "eviction":
        assert len(obs["retention_after"]) == 2


LIVE_SWAP = NodeScenario(
    "live_swap", "all", NodeConfig(max_num_seqs=1), ADMISSION_RUNS, tenants=TENANTS,
    script=live_swap_script, expect=live_swap_expect)

NODE_SCENARIOS = (RETENTION, PREEMPTION, ADMISSION, LIVE_SWAP)


def node_scenario(name: str) -> NodeScenario:
    return next(s for s in NODE_SCENARIOS if s.name == name)


# ---------------------------------------------------------------------------------------------
# cluster-tier scenarios: the bench cluster (nodeagent/sim/cluster.py) and the gateway


@dataclass(frozen=True)
class ClusterWorkflow:
    """A workflow of a cluster scenario: its calls, the gap after each (its tool), and where
    its calls go: ``place`` None lets the policy under test route them; ``"home"`` scripts them
    onto the probed workflow's home, ``"other"`` onto the other node (setup load, so that every
    host reaches the same node states whatever the policy would have done with them)."""

    workflow: str
    arrival_s: float
    calls: tuple[Call, ...]
    gaps_s: tuple[float, ...]
    place: str | None = None


@dataclass(frozen=True)
class ClusterScenario:
    name: str
    sizes: Mapping[str, int]
    """Tokens of each run (the bench cluster's prompts are context-tree segments, one per run;
    the gateway counts 4 characters per token)."""
    workflows: tuple[ClusterWorkflow, ...]
    base_profile: str
    kv_tokens: int
    max_num_seqs: int
    max_num_batched_tokens: int
    probe: str = "W"
    """The workflow whose routing (and moving) every host must decide alike."""
    expect: Callable[[Observation, PolicyRow], None] = lambda obs, row: None

    @property
    def nodes(self) -> tuple[str, str]:
        return ("node-0", "node-1")


    def prompt_tokens(self, prompt: Sequence[str]) -> int:
        return sum(self.sizes[r] for r in prompt)

    def workflow(self, name: str) -> ClusterWorkflow:
        return next(w for w in self.workflows if w.workflow == name)



ROUTING_W = ClusterWorkflow(
    "W", 0.0, (Call("W", 0, ("w",), 8, tool="bash"), Call("W", 1, ("w", "w2"), 8)), (1.0, 0.0))


def _background(place: str, arrival_s: float, prompt_blocks: Sequence[str], output_tokens: int,
                prefix: str = "bg") -> tuple[ClusterWorkflow, ...]:
    return tuple(
        ClusterWorkflow(f"{prefix}{i}", arrival_s, (Call(f"{prefix}{i}", 0, (run,),
                                                         output_tokens),), (0.0,), place)
        for i, run in enumerate(prompt_blocks))


def routing_expect(obs: Observation, row: PolicyRow) -> None:
    """W's next call: its home holds its 256-token context and runs three calls; the other node
    is idle."""
    home, other = obs["home"], obs["other"]
    route = obs["route"]
    nodes = {n["node_id"]: n for n in route["nodes"]}
    assert nodes[home]["running"] == 3 and nodes[other]["running"] == 0
    assert nodes[home]["load"] > nodes[other]["load"] == 0.0
    assert route["workflow"]["home_node"] == home and route["workflow"]["calls_done"] == 1
    chosen = route["result"]
    if row.name == "saga":
        assert chosen == home  # affinity: its cache lives there
    elif row.name == "session-affinity":
        assert chosen == obs["first_route"]["result"]  # the ring does not move
    elif row.name == "least-loaded":
        assert chosen == other
    elif row.name == "prefix-aware":
        assert chosen == home  # the longest cached prefix
    elif row.name == "round-robin":
        assert chosen != obs["first_route"]["result"]  # the next node in turn
    elif row.name == "thunderagent":
        assert chosen == home  # affinity: its last call ended under affinity_ttl_s ago
    assert obs["next_call_node"] == chosen


ROUTING = ClusterScenario(
    "routing", {"w": 256, "w2": 32, "bg1": 2000, "bg2": 2000, "bg3": 2000},
    (ROUTING_W, *_background("home", 0.2, ("bg1", "bg2", "bg3"), 300)),
    base_profile="h100-llama3-8b", kv_tokens=64_000, max_num_seqs=16,
    max_num_batched_tokens=4096, expect=routing_expect)
"""Routing with a cached home versus an idle node: W's first call is routed by the policy
(both nodes idle), three long calls are scripted onto its home, and its next call arrives while
they decode: the policy sees a loaded home that holds W's context and an idle node."""


STEALING_W = ClusterWorkflow(
    "W", 0.0, (Call("W", 0, ("w",), 8, tool="bash"), Call("W", 1, ("w", "w2"), 8)), (30.0, 0.0))


def stealing_expect(obs: Observation, row: PolicyRow) -> None:
    """W waits on a tool at its backlogged home (a queue of long prompts there); the other node
    is idle but its KV is mostly taken by a cached prefix, so only W fits there."""
    home, other = obs["home"], obs["other"]
    rebalance = obs["rebalance"]
    nodes = {n["node_id"]: n for n in rebalance["nodes"]}
    assert nodes[home]["waiting"] >= 1 and nodes[home]["queue_delay_s"] > 2.5
    assert nodes[other]["queue_delay_s"] == 0.0
    (w,) = rebalance["workflows"]
    assert w["state"] == "waiting_tool" and w["home_node"] == home and w["tool_name"] == "bash"
    if row.name == "saga":
        assert rebalance["result"] == [{"workflow_id": "W", "source": home, "target": other}]
        assert obs["next_call_node"] == other  # its next call goes to its new home
    else:
        assert rebalance["result"] == []  # request-level policies never move a workflow


STEALING = ClusterScenario(
    "work_stealing",
    {"w": 256, "w2": 32, "warm": 28_000, "bg1": 14_000, "bg2": 14_000, "bg3": 14_000},
    (STEALING_W,
     ClusterWorkflow("warm", 0.3, (Call("warm", 0, ("warm",), 1),), (0.0,), "other"),
     *_background("home", 7.0, ("bg1", "bg2", "bg3"), 64)),
    base_profile="a100-llama3-70b-tp4", kv_tokens=40_000, max_num_seqs=8,
    max_num_batched_tokens=8192, expect=stealing_expect)
"""Work stealing of a waiting workflow: W's first call is routed by the policy, then its agent
runs a 30 s tool; a 28,000-token prefix is cached on the other node (about 5 s of prefill; it
then stays idle, with 12,000 tokens free) and at 7 s three 14,000-token calls queue on W's
home. A work-stealing round then sees a
backlogged home, an idle node where only W fits, and W between calls."""


CLUSTER_SCENARIOS = (ROUTING, STEALING)

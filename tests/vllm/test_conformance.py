"""Conformance, node tier: every scenario of tests/conformance on vLLM's real SagaScheduler and
on the live simulated node, for every live policy of the table; both hosts must see the same
views and make the same decisions (``make test-vllm``).

Each case plays the scenario on both hosts through their own entry points (vLLM:
``add_request``, ``schedule()`` / ``update_from_output()``, ``saga_control``; the simulated node:
``generate``, ``tool_started``..., ``apply_policy`` and its engine's wake-ups), checks the
scenario's absolute expectations on vLLM (the simulated node's are checked by ``make test`` too,
tests/conformance/test_node_scenarios.py) and compares the two observations field by field
(tests/conformance/compare.py; measured fields within NODE_TOLERANCES). Each disagreement the
suite found has its own test below (``test_known_*``), which fails until the host is fixed, and
keeps a regression test once it is; see tests/conformance/disagreements.py.
"""

from __future__ import annotations

import pytest

from tests.vllm.fakes import VLLM_MISSING_REASON

pytest.importorskip("vllm", reason=VLLM_MISSING_REASON)

from pathlib import Path
from typing import Any

from plugins.base import PolicyConfigError
from tests.conformance import scenarios
from tests.conformance.compare import Tolerance, assert_same
from tests.conformance.disagreements import KNOWN, NODE_TOLERANCES, ignore_known
from tests.conformance.node_hosts import SimNodeHost
from tests.conformance.policies import BASELINE, POLICIES, PolicyRow
from tests.conformance.runner import case_id, node_cases, play
from tests.conformance.scenarios import Call, NodeConfig, NodeScenario, Observation, Runs
from tests.conformance.vllm_host import VllmNodeHost

HOSTS = ("sim", "vllm")
_played: dict[str, tuple[Any, Observation, Any, Observation]] = {}


def played(case: tuple[NodeScenario, PolicyRow], llama_dir: Path
           ) -> tuple[Any, Observation, Any, Observation]:
    """(sim host, its observation, vLLM host, its observation), played once per session."""
    key = case_id(case)
    if key not in _played:
        scenario, row = case
        sim, sim_obs = play(scenario, row, lambda s, p: SimNodeHost(s.config, s.runs, s.tenants,
                                                                    p))
        vllm, vllm_obs = play(scenario, row, lambda s, p: VllmNodeHost(
            llama_dir, s.config, s.runs, s.tenants, p))
        _played[key] = (sim, sim_obs, vllm, vllm_obs)
    return _played[key]


def case_named(name: str) -> tuple[NodeScenario, PolicyRow]:
    return next(c for c in node_cases() if case_id(c) == name)


@pytest.mark.parametrize("case", node_cases(), ids=case_id)
def test_scenario_agrees_on_vllm_and_the_simulated_node(
        case: tuple[NodeScenario, PolicyRow], llama_dir: Path) -> None:
    scenario, row = case
    _sim, sim_obs, _vllm, vllm_obs = played(case, llama_dir)
    scenario.expect(vllm_obs, row)
    assert_same(sim_obs, vllm_obs, NODE_TOLERANCES, HOSTS, case_id(case),
                ignore=ignore_known("node"))


def test_oracle_policies_are_refused_by_the_simulated_node() -> None:
    """The table leaves belady out of live hosts; the simulated node refuses to run it."""
    host = SimNodeHost(NodeConfig(), Runs({"a": 1}), {"acme": 1.0},
                       {k: (n, {}) for k, n in BASELINE.items()})
    for row in (r for r in POLICIES if not r.live):
        with pytest.raises(PolicyConfigError, match="simulator replays only"):
            host.swap(row.kind, row.name, row.params)
        assert host.active(row.kind) == BASELINE[row.kind]


def test_scheduler_control_refuses_oracle_policies(llama_dir: Path) -> None:
    """SagaScheduler's own control channel (``saga_control("activate")``) refuses belady as the
    simulated node does (found by this suite: it used to activate it)."""
    host = VllmNodeHost(llama_dir, NodeConfig(), Runs({"a": 1}), {"acme": 1.0},
                        {k: (n, {}) for k, n in BASELINE.items()})
    for row in (r for r in POLICIES if not r.live):
        with pytest.raises(PolicyConfigError, match="simulator replays only"):
            host.swap(row.kind, row.name, row.params)
        assert host.active(row.kind) == BASELINE[row.kind], (
            f"SagaScheduler activated {row.name}, which needs a trace's future")
    with pytest.raises(PolicyConfigError, match="simulator replays only"):
        host.scheduler.saga_control("activate_set", {"eviction": "belady"})
    assert host.active("eviction") == BASELINE["eviction"]


# ------------------------------------------------------------------ disagreements fixed
# Each host disagreement this suite found, once fixed, keeps a test of its own: the scenario
# comparisons check the fields again, these pin the exact situation that exposed it.

def _same(sim_value: Any, vllm_value: Any, what: str, tolerance: Tolerance | None = None
          ) -> None:
    tolerances = {} if tolerance is None else {"": tolerance, **{
        k: tolerance for k in ("isolated_s", "queue_delay_s")}}
    assert_same(sim_value, vllm_value, tolerances, HOSTS, what)


def test_admission_sees_the_workflows_cached_on_the_node(llama_dir: Path) -> None:
    """NodeView.cached_workflows in admission_order: was () on the simulated node."""
    _sim, sim_obs, _vllm, vllm_obs = played(case_named("live_swap-fairness-fcfs"), llama_dir)
    sim = [d["node"]["cached_workflows"] for d in sim_obs["decisions_after"]]
    vllm = [d["node"]["cached_workflows"] for d in vllm_obs["decisions_after"]]
    assert any(sim), "the scenario caches some workflows"
    assert sim == vllm


def test_cached_tokens_are_exact_right_after_a_call_ends(llama_dir: Path) -> None:
    """WorkflowView.cached_tokens at the tool start 33 ms after a call ended: vLLM recounted
    its block provenance at most once a second and reported 0; it is now kept exact at every
    free and eviction (and equal to a recount at every step: vllm_host._check_private_counts)."""
    _sim, sim_obs, _vllm, vllm_obs = played(case_named("retention-eviction-lru"), llama_dir)
    prompt = scenarios.RETENTION_RUNS.prompt_tokens(scenarios.W0.prompt)
    assert sim_obs["retention_view"]["cached_tokens"] == prompt
    assert vllm_obs["retention_view"]["cached_tokens"] == prompt


SAME_COST_MODEL = Tolerance(absolute=1e-5, relative=1e-6, why=(
    "both hosts read the node profile's cost model; only the clocks' epsilons differ"))


def test_isolated_s_in_flight_is_estimated_alike(llama_dir: Path) -> None:
    """WorkflowView.isolated_s while a call is queued: the simulated node used the call's
    scripted output length (which no live host knows), vLLM a per-token EWMA; both now estimate
    the call at the AEG's expected output until it ends, on the node's cost model."""
    _sim, sim_obs, _vllm, vllm_obs = played(case_named("retention-eviction-lru"), llama_dir)
    _same(sim_obs["retention_view"]["isolated_s"], vllm_obs["retention_view"]["isolated_s"],
          "isolated_s of a workflow between calls", SAME_COST_MODEL)
    _same(sim_obs["next_call_workflow_view"]["isolated_s"],
          vllm_obs["next_call_workflow_view"]["isolated_s"],
          "isolated_s of a workflow whose call is queued", SAME_COST_MODEL)


def test_queue_delay_prices_pending_prefill_at_full_chunks(llama_dir: Path) -> None:
    """NodeView.queue_delay_s: vLLM priced pending prefill at an EWMA per scheduled token over
    every prefill step (3-7x the full-chunk rate with short prompts)."""
    _sim, sim_obs, _vllm, vllm_obs = played(case_named("admission_order-fairness-fcfs"),
                                            llama_dir)
    sim = [d["node"]["queue_delay_s"] for d in sim_obs["decisions"]]
    vllm = [d["node"]["queue_delay_s"] for d in vllm_obs["decisions"]]
    assert any(sim), "the scenario queues prefill"
    _same(sim, vllm, "queue_delay_s of the admission decisions", SAME_COST_MODEL)


def test_service_is_recorded_per_call_segment(llama_dir: Path) -> None:
    """saga_record_service after a live swap of the fairness policy while a call decodes: vLLM
    charged every step and ranked its queue at steps where nothing could be admitted (lifting
    VTC's counters early); both hosts now charge per call segment and decide admission only
    when a slot is free."""
    _sim, sim_obs, _vllm, vllm_obs = played(case_named("live_swap-fairness-vtc"), llama_dir)
    sim = [d["priorities"] for d in sim_obs["decisions_after"]]
    vllm = [d["priorities"] for d in vllm_obs["decisions_after"]]
    _same(sim, vllm, "vtc priorities at every admission after the swap")


def test_a_tool_call_answer_caches_every_computed_block(llama_dir: Path) -> None:
    """One call that ends with a tool call after 24 output tokens: the simulated node cached
    only as far as the rendered tool-call message (one block less than vLLM)."""
    runs = Runs({"p": 3})
    call = Call("T", 0, ("p",), 24, tool="bash")
    free = {}
    for host in (SimNodeHost(NodeConfig(kv_blocks=64), runs, {"acme": 1.0},
                             {k: (n, {}) for k, n in BASELINE.items()}),
                 VllmNodeHost(llama_dir, NodeConfig(kv_blocks=64), runs, {"acme": 1.0},
                              {k: (n, {}) for k, n in BASELINE.items()})):
        host.arrive(call)
        scenarios.run_until_finished(host, call.call_id)
        free[host.name] = host.node_view()["kv_free_tokens"]
    assert free["sim"] == free["vllm"]


def test_preemption_ties_go_to_the_call_admitted_last(llama_dir: Path) -> None:
    """The preemption scenario's P and Q, arriving at the same instant (fcfs: equal priority
    and arrival): the simulated node preempted P, vLLM Q."""
    sc = scenarios.PREEMPTION
    policies = {k: (n, {}) for k, n in BASELINE.items()}
    victims = {}
    for host in (SimNodeHost(sc.config, sc.runs, sc.tenants, policies),
                 VllmNodeHost(llama_dir, sc.config, sc.runs, sc.tenants, policies)):
        host.arrive(scenarios.P0)
        host.arrive(scenarios.Q0)
        scenarios.run_until_all_finished(host, [scenarios.P0, scenarios.Q0])
        assert host.admitted == [scenarios.P0.call_id, scenarios.Q0.call_id]
        victims[host.name] = host.preempted
    assert victims["sim"] == [scenarios.Q0.call_id]
    assert victims["sim"] == victims["vllm"]


def test_every_known_node_disagreement_has_its_test() -> None:
    tests = {name.removeprefix("test_known_") for name in globals() if name.startswith(
        "test_known_")}
    node = {d.id for d in KNOWN if d.tier == "node"}
    assert node <= tests, node - tests

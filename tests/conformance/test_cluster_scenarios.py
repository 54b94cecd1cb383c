"""Conformance, cluster tier: routing with a cached home versus an idle node, and work stealing
of a waiting workflow, on the bench cluster and on the gateway, for every routing policy of
the table (``make test``).

The bench cluster replays the scenario through its own event loop; the gateway is then driven
through ``/v1`` and ``rebalance_homes`` with heartbeats that carry the node states the cluster's
policy decided on (tests/conformance/gateway_host.py). The two hosts' decisions and the views
they were made on are compared field by field; disagreements found by the suite have their own
tests below (``test_known_*``; tests/conformance/disagreements.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from controlplane.gateway import runtime
from tests.conformance.cluster_hosts import SimClusterHost, _route, only_probe
from tests.conformance.compare import assert_same
from tests.conformance.disagreements import CLUSTER_TOLERANCES, KNOWN, ignore_known
from tests.conformance.gateway_host import (
    NODE_KEY,
    GatewayHost,
    recording_directory,
    serve_node_api,
)
from tests.conformance.policies import PolicyRow, policy_set, rows
from tests.conformance.recording import Recorder
from tests.conformance.scenarios import CLUSTER_SCENARIOS, ClusterScenario, Observation
from tests.live import serve_control_plane

HOSTS = ("cluster", "gateway")
CASES = [(s, r) for s in CLUSTER_SCENARIOS for r in rows(s.name)]


def case_id(case: tuple[ClusterScenario, PolicyRow]) -> str:
    return f"{case[0].name}-{case[1].name}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_cluster_scenario_on_the_bench_cluster(case: tuple[ClusterScenario, PolicyRow]) -> None:
    scenario, row = case
    observation = SimClusterHost(scenario, policy_set(row)).play()
    scenario.expect(observation, row)


@pytest.fixture
def live_gateway(transactional_db: None, redis_url: str, settings: Any,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A live control plane whose gateway routes with recording policies, and two node APIs."""
    settings.SAGA_NODE_API_KEY = NODE_KEY
    recorder = Recorder()
    monkeypatch.setattr(runtime, "directory", recording_directory(recorder))
    runtime.routing_state().clear()
    with serve_node_api("node-0") as n0, serve_node_api("node-1") as n1, \
            serve_control_plane() as url:
        yield {"url": url, "nodes": {"node-0": n0, "node-1": n1}, "recorder": recorder}


def play_both(case: tuple[ClusterScenario, PolicyRow], live: dict[str, Any]
              ) -> tuple[Observation, Observation]:
    scenario, row = case
    recorder: Recorder = live["recorder"]
    gateway = GatewayHost(scenario, live["url"], live["nodes"], recorder)
    gateway.activate(row.kind, row.name, row.params)
    probe = scenario.probe
    host_id = gateway.create_workflow(probe)
    cluster = SimClusterHost(scenario, policy_set(row), ids={probe: host_id}).play()

    w0, w1 = scenario.workflow(probe).calls
    gateway.heartbeat(cluster["first_route"]["nodes"])
    gateway.call(w0)
    if "rebalance" in cluster:
        (wf,) = cluster["rebalance"]["workflows"]
        gateway.heartbeat(cluster["rebalance"]["nodes"],
                          {wf["home_node"]: {probe: wf["cached_tokens"]}})
        gateway.rebalance()
    before = cluster["route"]["workflow"]
    gateway.heartbeat(cluster["route"]["nodes"],
                      {before["home_node"]: {probe: before["cached_tokens"]}})
    next_node = gateway.call(w1)

    routes = [r for r in recorder.of("route_call") if r.args["call"]["workflow_id"] == probe]
    assert len(routes) == 2, [r.args["call"]["call_id"] for r in routes]
    home = routes[0].result
    observed: Observation = {
        "home": home, "other": next(n for n in scenario.nodes if n != home),
        "first_route": _route(routes[0]), "route": _route(routes[1]),
        "next_call_node": next_node,
    }
    rounds = [r for r in recorder.of("rebalance")
              if any(w["workflow_id"] == probe for w in r.args["workflows"])]
    if "rebalance" in cluster:
        assert len(rounds) == 1
        observed["rebalance"] = only_probe(rounds[0].args["nodes"], rounds[0].args["workflows"],
                                           rounds[0].result, probe)
    cluster.pop("rebalance_now_s", None)
    return cluster, observed


_played: dict[str, tuple[Observation, Observation]] = {}


def played(case: tuple[ClusterScenario, PolicyRow], request: pytest.FixtureRequest
           ) -> tuple[Observation, Observation]:
    """Both hosts' observations, played once per session (a live gateway only when needed)."""
    key = case_id(case)
    if key not in _played:
        _played[key] = play_both(case, request.getfixturevalue("live_gateway"))
    return _played[key]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_cluster_scenario_agrees_on_the_gateway(case: tuple[ClusterScenario, PolicyRow],
                                                request: pytest.FixtureRequest) -> None:
    scenario, row = case
    cluster, gateway = played(case, request)
    scenario.expect(gateway, row)
    assert_same(cluster, gateway, CLUSTER_TOLERANCES, HOSTS, case_id(case),
                ignore=ignore_known("cluster"))


# ------------------------------------------------------------------ disagreements fixed
# Each cluster-tier disagreement this suite found keeps a test of its own once fixed.

def _case(scenario: str, policy: str) -> tuple[ClusterScenario, PolicyRow]:
    return next(c for c in CASES if c[0].name == scenario and c[1].name == policy)


def _fields(obs: Observation, *path: str) -> Any:
    value: Any = obs
    for key in path:
        value = value[key]
    return value


@pytest.mark.django_db(transaction=True)
def test_gateway_call_view_sees_the_workflows_cache(request: pytest.FixtureRequest) -> None:
    """CallView.cached_tokens / node_cached_tokens when routing W's next call: the gateway
    passed 0 and (), so prefix-aware routed W away from its 256 cached tokens."""
    cluster, gateway = played(_case("routing", "prefix-aware"), request)
    assert _fields(gateway, "route", "call", "cached_tokens") > 0
    for field in ("cached_tokens", "node_cached_tokens"):
        assert _fields(cluster, "route", "call", field) == _fields(
            gateway, "route", "call", field)


@pytest.mark.django_db(transaction=True)
def test_gateway_node_view_names_the_cached_workflows(request: pytest.FixtureRequest) -> None:
    """NodeView.cached_workflows: always () on the gateway."""
    cluster, gateway = played(_case("routing", "saga"), request)
    cached = [n["cached_workflows"] for n in gateway["route"]["nodes"]]
    assert any(cached)
    assert [n["cached_workflows"] for n in cluster["route"]["nodes"]] == cached


@pytest.mark.django_db(transaction=True)
def test_gateway_workflow_service_is_what_its_node_reported(
        request: pytest.FixtureRequest) -> None:
    """WorkflowView.service_s after W's first call: 0.0 on the gateway (nodes did not report
    per-call service); now ``usage.saga_service_s``, summed on the workflow's row."""
    cluster, gateway = played(_case("routing", "saga"), request)
    assert _fields(gateway, "route", "workflow", "service_s") > 0
    assert _fields(cluster, "route", "workflow", "service_s") == pytest.approx(
        _fields(gateway, "route", "workflow", "service_s"), rel=0.05)


@pytest.mark.django_db(transaction=True)
def test_gateway_workflow_isolated_s_counts_the_call_being_routed(
        request: pytest.FixtureRequest) -> None:
    """WorkflowView.isolated_s of W's first call, queued: 1e-9 on the gateway (no current-call
    term). At a first call, isolated minus elapsed is the call's own estimate on every host
    (the gateway's elapsed time since submission is agent time, so it enters both). The
    estimate's output length is each host's execution-graph forecast, and the hosts have
    learned different things here (the bench live from every workflow it ran, the gateway
    from the calls it relayed: the background workflows exist for it only as heartbeats), so
    the value is compared by tests/gateway/test_routing_view.py, not across hosts."""
    cluster, gateway = played(_case("routing", "saga"), request)

    def estimate(obs: Observation) -> float:
        view = _fields(obs, "first_route", "workflow")
        return float(view["isolated_s"] - view["elapsed_s"])

    assert estimate(cluster) > 1e-6
    assert estimate(gateway) > 1e-6


@pytest.mark.django_db(transaction=True)
def test_context_tokens_between_calls_is_the_last_prompt_and_its_output(
        request: pytest.FixtureRequest) -> None:
    """WorkflowView.context_tokens between calls: the bench cluster read the NEXT prompt."""
    cluster, gateway = played(_case("work_stealing", "saga"), request)
    assert cluster["rebalance"]["workflows"][0]["context_tokens"] == gateway["rebalance"][
        "workflows"][0]["context_tokens"]


def test_every_known_cluster_disagreement_has_its_test() -> None:
    tests = {name.removeprefix("test_known_") for name in globals()
             if name.startswith("test_known_")}
    cluster = {d.id for d in KNOWN if d.tier == "cluster"}
    assert cluster <= tests, cluster - tests

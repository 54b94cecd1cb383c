"""Where the hosts do not (yet) agree, and how closely measured fields must agree.

``NODE_TOLERANCES`` / ``CLUSTER_TOLERANCES``: the only fields compared with a tolerance, each
with the reason it is measured rather than counted. Every other field must be equal.

``KNOWN``: disagreements found by this suite and reported to the host owners. Each names the
view field, the value each host computes and where; its own test (``test_<id>`` in
``tests/vllm/test_conformance.py`` for node-tier ones, ``tests/conformance/
test_cluster_scenarios.py`` for cluster-tier ones) asserts the hosts agree on it and *fails until
the host is fixed*. The scenario comparisons leave these fields out (``ignored``) so that each
disagreement fails exactly one test of its own, while its consequences on decisions (an
admission order, a route) still fail the scenarios they change. When a host is fixed, its
entry goes: the scenario comparisons then check the field again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tests.conformance.compare import Tolerance

CLOCK = Tolerance(absolute=1e-3, why=(
    "vLLM's scheduler clock is made strictly increasing (CLOCK_EPSILON_S = 1 us per read, "
    "nodeagent/vllm_hooks/scheduler.py), so its times run microseconds ahead of the simulated "
    "node's exact event times"))
SERVICE = Tolerance(absolute=1e-3, relative=1e-3, why=(
    "measured on vLLM (step time split by scheduled tokens, accounting.StepAccounting); its fake "
    "model steps take the simulated node's cost-model step times (vllm_host.VllmNodeHost), so "
    "the totals agree up to the clock epsilons"))
FAIRNESS = Tolerance(absolute=1e-3, why=(
    "fairness priorities are arrival times (fcfs, plas), token counters (vtc) or GPU seconds "
    "per weight (afs): the latter two inherit SERVICE's and CLOCK's tolerances"))

NODE_TOLERANCES: dict[str, Tolerance] = {
    "arrival_s": CLOCK,
    "elapsed_s": CLOCK,
    "tool_elapsed_s": CLOCK,
    "now_s": CLOCK,
    "isolated_s": Tolerance(absolute=1e-5, relative=1e-6, why=(
        "the cost model's call times (both hosts read the node profile) plus the tool gaps "
        "between calls, timed on each host's clock (CLOCK's epsilons)")),
    "service_s": SERVICE,
    "gpu_s": SERVICE,
    "priorities": FAIRNESS,
    "retention_s": Tolerance(absolute=1e-3, relative=1e-3, why=(
        "aeg pins for a multiple of the AEG's predicted gap, conditioned on the event times "
        "(CLOCK)")),
}

CLUSTER_TOLERANCES: dict[str, Tolerance] = {
    "arrival_s": Tolerance(absolute=float("inf"), why=(
        "the gateway's clock is the wall clock (workflow.submitted_at, time.time()), the bench "
        "cluster's simulated time: absolute times cannot agree; intervals are compared")),
    "now_s": Tolerance(absolute=float("inf"), why="as arrival_s"),
    "elapsed_s": Tolerance(absolute=float("inf"), why=(
        "wall time since the gateway first saw the workflow (HTTP round trips included) versus "
        "simulated time")),
    "tool_elapsed_s": Tolerance(absolute=float("inf"), why="as elapsed_s"),
    "isolated_s": Tolerance(absolute=float("inf"), why=(
        "its agent-time term is elapsed time outside calls, on each host's clock (as "
        "elapsed_s), and the call in flight is estimated at each host's execution-graph "
        "forecast, learned from different traffic here (cluster_test: "
        "test_gateway_workflow_isolated_s_counts_the_call_being_routed)")),
    "service_s": Tolerance(absolute=float("inf"), why=(
        "engine seconds its calls received: the gateway host's nodes serve only the probed "
        "workflow (the bench's other workflows exist there as heartbeats), so where the bench "
        "batches the probe's calls with theirs the engine time differs; "
        "test_gateway_workflow_service_is_what_its_node_reported checks it where both serve "
        "the probe alike")),
}


@dataclass(frozen=True)
class Disagreement:
    id: str
    tier: str  # "node": sim vs vLLM; "cluster": bench cluster vs gateway
    field: str
    paths: tuple[str, ...]
    """Regexes over observation paths (indexes stripped) that the scenario comparisons leave
    to this disagreement's own test."""
    summary: str
    where: str

    def ignores(self, path: str) -> bool:
        return any(re.search(p, path) for p in self.paths)


KNOWN: tuple[Disagreement, ...] = (
)


def ignored(tier: str) -> re.Pattern[str] | None:
    patterns = [p for d in KNOWN if d.tier == tier for p in d.paths]
    return re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None


def ignore_known(tier: str):  # type: ignore[no-untyped-def]
    pattern = ignored(tier)
    return (lambda path: bool(pattern.search(path))) if pattern is not None else None


def known(id: str) -> Disagreement:
    return next(d for d in KNOWN if d.id == id)

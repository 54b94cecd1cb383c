"""New workflows spread over equal nodes, live as in the simulator: the gateway counts what it
has just placed (in-flight leases) and routing policies break ties per workflow, not by name."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from controlplane.workflows.models import Call
from plugins.views import NodeView
from tests.gateway.conftest import tenant_key
from tests.sim.simkit import chain_workload, run_cluster

pytestmark = pytest.mark.django_db(transaction=True)
N = 200


def simulated_share(policy_set: str) -> float:
    """Share of N simultaneous new workflows the simulator homes on its first node."""
    workload = chain_workload(n_workflows=N, calls=1, arrivals=[0.0] * N)
    cluster, result = run_cluster(workload, policy_set, n_instances=2)
    assert result.calls_completed == N
    nodes = Counter(node for _wf, _seq, node, *_ in cluster.call_log)
    return nodes[sorted(nodes)[0]] / N


def test_simultaneous_new_workflows_split_like_the_simulator(cluster: dict[str, Any]) -> None:
    _tenant, key = tenant_key("acme")

    def one(i: int) -> int:
        return httpx.post(f"{cluster['url']}/v1/chat/completions", timeout=30,
                          headers={"Authorization": f"Bearer {key}",
                                   "X-Saga-Workflow": f"new-{i}"},
                          json={"model": "llama-3-8b", "max_tokens": 4,
                                "messages": [{"role": "user", "content": f"task {i} " * 50}]},
                          ).status_code

    with ThreadPoolExecutor(max_workers=32) as pool:
        assert set(pool.map(one, range(N))) == {200}
    live = Counter(Call.objects.values_list("node__name", flat=True))
    live_share = live["gpu-0"] / N
    sim_share = simulated_share("saga")
    assert 0.35 <= sim_share <= 0.65
    assert 0.35 <= live_share <= 0.65, live
    assert abs(live_share - sim_share) <= 0.15


@pytest.mark.parametrize("policy", ["saga", "least-loaded", "prefix-aware"])
def test_equal_nodes_share_new_workflows(policy: str) -> None:
    """The routing hook alone, on identical idle node views (what a burst of calls sees before
    any heartbeat reports them): the workflows spread instead of all going to node 'a'."""
    from plugins.manager import PolicyManager
    from plugins.views import CallView, StaticContext, WorkflowView

    manager = PolicyManager()
    manager.activate("routing", policy)
    ps = manager.current()
    nodes = [NodeView(n, 0, 0, 10**6, 10**6, 0.0, 0.0) for n in ("a", "b", "c", "d")]
    chosen = Counter()
    for i in range(400):
        wf = WorkflowView(f"w{i}", "t", "x", "queued", 0.0, 0, 1000, 0, None, None, 0.0, 0.0,
                          1.0, 0.0)
        call = CallView(f"w{i}#0", f"w{i}", "t", "x", 0, 1000, 0, 0.0)
        chosen[ps.route_call(StaticContext(nodes={n.node_id: n for n in nodes}), call, wf,
                             nodes)] += 1
    assert set(chosen) == {"a", "b", "c", "d"}
    assert max(chosen.values()) <= 140  # 100 each on average

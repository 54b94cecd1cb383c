"""The conformance policy table covers every installed policy, once, and only the simulator runs
the ones it keeps off live hosts (``make test``)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from plugins import cli
from plugins.base import PolicyConfigError
from plugins.registry import PolicyRegistry
from tests.conformance.node_hosts import SimNodeHost
from tests.conformance.policies import BASELINE, POLICIES, SCENARIOS_BY_KIND, rows
from tests.conformance.runner import node_cases
from tests.conformance.scenarios import CLUSTER_SCENARIOS, NODE_SCENARIOS, NodeConfig, Runs


def installed(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """``saga policies list --json``: what an operator can activate."""
    capsys.readouterr()
    assert cli.main(["policies", "list", "--json"]) == 0
    return json.loads(capsys.readouterr().out)["policies"]


def test_the_table_lists_every_installed_policy_once(capsys: pytest.CaptureFixture[str]) -> None:
    listed = Counter((r.kind, r.name) for r in POLICIES)
    assert all(n == 1 for n in listed.values()), listed.most_common(2)
    found = {(p["kind"], p["name"]) for p in installed(capsys)}
    assert found == {(i.kind, i.name) for i in PolicyRegistry.discover().infos()}
    missing = found - set(listed)
    assert not missing, (
        f"installed policies missing from tests/conformance/policies.py POLICIES: {missing}; "
        "add a row so that they run the conformance scenarios of their kind")
    assert set(listed) <= found


def test_every_row_validates_and_runs_its_kinds_scenarios() -> None:
    registry = PolicyRegistry.discover()
    names = {s.name for s in NODE_SCENARIOS} | {s.name for s in CLUSTER_SCENARIOS}
    assert {s for scenarios in SCENARIOS_BY_KIND.values() for s in scenarios} == names
    node = {(s.name, r.id) for s, r in node_cases()}
    for row in POLICIES:
        cls = registry.get(row.kind, row.name)
        cls.validate_params(dict(row.params))
        assert row.live is not cls.requires_oracle
        if not row.live:
            assert row.live_excluded_why
            continue
        for scenario in SCENARIOS_BY_KIND[row.kind]:
            assert row in rows(scenario)
            if scenario in {s.name for s in NODE_SCENARIOS}:
                assert (scenario, row.id) in node


def test_oracle_rows_are_refused_by_the_live_simulated_node() -> None:
    host = SimNodeHost(NodeConfig(), Runs({"a": 1}), {"acme": 1.0},
                       {k: (n, {}) for k, n in BASELINE.items()})
    oracle = [r for r in POLICIES if not r.live]
    assert oracle, "belady is the simulator's yardstick"
    for row in oracle:
        with pytest.raises(PolicyConfigError, match="simulator replays only"):
            host.swap(row.kind, row.name, row.params)
        assert host.active(row.kind) == BASELINE[row.kind]


@pytest.mark.django_db(transaction=True)
def test_oracle_rows_are_skipped_by_the_gateway() -> None:
    from controlplane.gateway.directory import ClusterDirectory
    from controlplane.policies.models import Policy
    from controlplane.policies.services import activate_policy

    directory = ClusterDirectory()
    before = directory.manager.active()
    for row in (r for r in POLICIES if not r.live):
        policy = Policy(kind=row.kind, plugin_name=row.name, params=dict(row.params))
        policy.full_clean()
        policy.save()
        activate_policy(policy, actor="conformance")
        directory.refresh(force=True)
        if row.kind in directory.manager.kinds:  # a routing oracle: skipped
            assert directory.manager.active()[row.kind].name == before[row.kind].name
        else:  # another tier's kind: the gateway holds none of it
            assert row.kind not in directory.manager.active()

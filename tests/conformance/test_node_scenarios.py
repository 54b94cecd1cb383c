"""Node-tier scenarios on the live simulated node (``make test``): each scenario's absolute
expectations for every policy of the table. The same scenarios run on vLLM's SagaScheduler
under ``make test-vllm`` (tests/vllm/test_conformance.py), which also checks that vLLM and the
simulated node agree field by field."""

from __future__ import annotations

import pytest

from tests.conformance.node_hosts import SimNodeHost
from tests.conformance.runner import case_id, node_cases, play


def sim_host(scenario, policies):  # type: ignore[no-untyped-def]
    return SimNodeHost(scenario.config, scenario.runs, scenario.tenants, policies)


@pytest.mark.parametrize("case", node_cases(), ids=case_id)
def test_node_scenario_on_the_simulated_node(case) -> None:  # type: ignore[no-untyped-def]
    scenario, row = case
    _host, observation = play(scenario, row, sim_host)
    scenario.expect(observation, row)

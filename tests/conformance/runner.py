"""Which scenario runs with which policies, for every host (shared by both halves)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.conformance.policies import PolicyRow, policy_set, rows, swap_source
from tests.conformance.scenarios import NODE_SCENARIOS, NodeHost, NodeScenario, Observation

HostFactory = Callable[[NodeScenario, dict[str, tuple[str, dict[str, Any]]]], NodeHost]


def node_cases(live: bool = True) -> list[tuple[NodeScenario, PolicyRow]]:
    """(scenario, policy row) for every node-tier scenario and every row it applies to."""
    cases = []
    for scenario in NODE_SCENARIOS:
        for row in rows(scenario.name, live=live):
            cases.append((scenario, row))
    return cases


def case_id(case: tuple[NodeScenario, PolicyRow]) -> str:
    scenario, row = case
    return f"{scenario.name}-{row.kind}-{row.name}"


def initial_policies(scenario: NodeScenario, row: PolicyRow
                     ) -> dict[str, tuple[str, dict[str, Any]]]:
    chosen = policy_set(row)
    if scenario.name == "live_swap":
        chosen[row.kind] = (swap_source(row), {})
    return chosen


def play(scenario: NodeScenario, row: PolicyRow, make_host: HostFactory
         ) -> tuple[NodeHost, Observation]:
    host = make_host(scenario, initial_policies(scenario, row))
    observation = scenario.script(host, row)
    return host, observation

"""The conformance policy table: every built-in policy joins the suite by being listed once.

Each row is (kind, name, params). The scenarios a row runs in follow from its kind (see
``SCENARIOS_BY_KIND``): eviction policies run the retention and preemption scenarios, routing
policies the routing and work-stealing ones (the cluster tier: bench cluster and gateway),
admission and fairness policies the admission-order one, and every node-tier policy is the
target of a live swap. A policy installed but not
listed here fails ``test_policy_table.py`` (the table must cover ``saga policies list``), so a
new built-in cannot silently skip the suite.

Modelled on llm-d's ``TestOrderingPolicyConformance``: the scenario states the behaviour every
implementation must have on every host; the table says who implements it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PolicyRow:
    kind: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    live: bool = True
    """False: the policy cannot run on a live host (the simulated node refuses it at
    activation, and so do vLLM's scheduler and the gateway); ``live_excluded_why`` says why."""
    live_excluded_why: str = ""

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.name}"


POLICIES: tuple[PolicyRow, ...] = (
    PolicyRow("eviction", "lru"),
    PolicyRow("eviction", "ttl"),
    PolicyRow("eviction", "aeg"),
    PolicyRow("eviction", "belady", live=False, live_excluded_why=(
        "Belady's MIN needs the trace's future (requires_oracle): only a simulator replay knows "
        "next uses, every live host refuses it (nodeagent.host.policies.check_runnable_live, "
        "the gateway's directory skips it)")),
    PolicyRow("eviction", "thunderagent"),
    PolicyRow("eviction", "kvflow"),
    PolicyRow("routing", "round-robin"),
    PolicyRow("routing", "least-loaded"),
    PolicyRow("routing", "session-affinity"),
    PolicyRow("routing", "prefix-aware"),
    PolicyRow("routing", "saga"),
    PolicyRow("routing", "thunderagent"),
    PolicyRow("admission", "priority"),
    PolicyRow("admission", "lpm"),
    PolicyRow("admission", "saga"),
    PolicyRow("admission", "thunderagent"),
    PolicyRow("fairness", "fcfs"),
    PolicyRow("fairness", "vtc"),
    PolicyRow("fairness", "plas"),
    PolicyRow("fairness", "afs"),
    PolicyRow("fairness", "las"),
)

SCENARIOS_BY_KIND: dict[str, tuple[str, ...]] = {
    "eviction": ("retention", "preemption", "live_swap"),
    "routing": ("routing", "work_stealing"),
    "admission": ("admission_order", "live_swap"),
    "fairness": ("admission_order", "live_swap"),
}

BASELINE = {"eviction": "lru", "routing": "session-affinity", "admission": "priority",
            "fairness": "fcfs"}
"""The policies a scenario runs with for the kinds it does not test (vLLM's behaviour)."""

SAGA = {"eviction": "aeg", "routing": "saga", "admission": "saga", "fairness": "afs"}


def rows(scenario: str, *, live: bool = True) -> list[PolicyRow]:
    """The table's rows that take part in ``scenario`` (live hosts: oracle policies left out)."""
    return [r for r in POLICIES if scenario in SCENARIOS_BY_KIND[r.kind] and (r.live or not live)]


def policy_set(row: PolicyRow) -> dict[str, tuple[str, dict[str, Any]]]:
    """``PolicyManager.activate_set`` arguments: the row's policy, baseline for the others."""
    chosen = {kind: (name, {}) for kind, name in BASELINE.items()}
    chosen[row.kind] = (row.name, dict(row.params))
    return chosen


def swap_source(row: PolicyRow) -> str:
    """What a live swap to ``row`` swaps from: the baseline policy of its kind, or SAGA's when
    the row is the baseline itself (a swap must change something)."""
    base = BASELINE[row.kind]
    return SAGA[row.kind] if row.name == base else base

"""Admission policies (the node tier): the order in which an engine admits its waiting calls.

Each takes the fairness policy's priorities and may regroup inside what fairness allows; the
engine (simulated or vLLM's SagaScheduler) admits in that order while memory and batch limits
allow. A gateway never calls them (``plugins.hookspecs.NODE_KINDS``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from pydantic import Field

from plugins.base import Policy, PolicyParams
from plugins.hookspecs import ADMISSION, hookimpl
from plugins.views import CallView, NodeView, SchedulingContext

_INF = math.inf


def priority_order(waiting: Sequence[CallView], priorities: Mapping[str, float]) -> list[str]:
    """Fairness order: priority (lower first), then arrival, then id (deterministic)."""
    get = priorities.get
    ordered = sorted(waiting, key=lambda c: (get(c.call_id, _INF), c.arrival_s, c.call_id))
    return [c.call_id for c in ordered]


def banded_order(
    waiting: Sequence[CallView],
    priorities: Mapping[str, float],
    band: float | None,
    cheaper_first: bool,
) -> list[str]:
    """Fairness order, regrouped inside priority bands so cached calls go first.

    Walking the fairness order, each band holds the calls whose priority is within ``band`` of
    the band's first (lowest) priority; inside a band the calls whose prompt is most cached go
    first: the fewest tokens left to prefill when ``cheaper_first``, else the longest cached
    prefix (SGLang's longest-prefix-match). Invariant, which keeps the fairness bounds: no call
    is placed ahead of a call whose priority is lower than its own by more than ``band``.
    ``band=None`` is a single band (pure cache order), ``band=0`` the plain fairness order.
    """
    get = priorities.get
    ordered = sorted(waiting, key=lambda c: (get(c.call_id, _INF), c.arrival_s, c.call_id))
    if cheaper_first:

        def cache_key(c: CallView) -> int:
            return c.prompt_tokens - c.cached_tokens

    else:

        def cache_key(c: CallView) -> int:
            return -c.cached_tokens

    if band is None:
        ordered.sort(key=cache_key)  # stable: fairness order among equals
        return [c.call_id for c in ordered]
    if band <= 0.0:
        return [c.call_id for c in ordered]
    out: list[str] = []
    i, n = 0, len(ordered)
    while i < n:
        limit = get(ordered[i].call_id, _INF) + band
        j = i + 1
        while j < n and get(ordered[j].call_id, _INF) <= limit:
            j += 1
        chunk = ordered[i:j]
        chunk.sort(key=cache_key)
        out.extend(c.call_id for c in chunk)
        i = j
    return out


class PriorityAdmission(Policy):
    """The fairness order as it is: priority (lower first), then arrival (vLLM's own order
    under its ``priority`` scheduling policy, FCFS under ``fcfs`` fairness)."""

    name = "priority"
    kind = ADMISSION
    version = "1.0"
    summary = "admit in the fairness policy's order (priority, then arrival)"

    @hookimpl
    def saga_admission_order(
        self,
        ctx: SchedulingContext,
        node: NodeView,
        waiting: Sequence[CallView],
        priorities: Mapping[str, float],
    ) -> list[str]:
        return priority_order(waiting, priorities)


class LongestPrefixParams(PolicyParams):
    admission_band: float | None = Field(
        None,
        ge=0.0,
        description="fairness-priority band inside which calls go longest cached prefix first; "
        "None = pure longest-prefix-match (SGLang), 0 = plain fairness order",
    )


class BandedAdmission(Policy):
    """Base of the admission policies that regroup the fairness order inside priority bands of
    ``params.admission_band`` (``banded_order``), cached calls first: ``cheaper_first`` says
    which cache order (fewest tokens left to prefill, or longest cached prefix)."""

    cheaper_first: bool

    @hookimpl
    def saga_admission_order(
        self,
        ctx: SchedulingContext,
        node: NodeView,
        waiting: Sequence[CallView],
        priorities: Mapping[str, float],
    ) -> list[str]:
        band = self.params.admission_band  # type: ignore[attr-defined]
        return banded_order(waiting, priorities, band, cheaper_first=self.cheaper_first)


class LongestPrefixAdmission(BandedAdmission):
    """SGLang's longest-prefix-match scheduling: the calls with the longest cached prefix first.

    Source: SGLang's RadixAttention scheduler (``lpm`` policy), which ignores fairness; with
    ``admission_band`` only within bands of fairness priority.
    """

    name = "lpm"
    kind = ADMISSION
    version = "1.0"
    summary = "longest cached prefix first (SGLang LPM), optionally within fairness bands"
    Params = LongestPrefixParams
    cheaper_first = False


class SagaAdmissionParams(PolicyParams):
    admission_band: float = Field(
        0.5,
        ge=0.0,
        description="fairness-priority band inside which calls go fewest-prefill-tokens first "
        "(priority units: normalised GPU seconds under afs); 0 = plain fairness order",
    )


class SagaAdmission(BandedAdmission):
    """SAGA's admission: the fairness order, regrouped inside bands of ``admission_band``
    priority units so calls with the least prefill left (cached prefixes) go first; a fairness
    bound grows by at most 2 x the band (``plugins.policies.fairness``'s property tests)."""

    name = "saga"
    kind = ADMISSION
    version = "1.0"
    summary = "SAGA: fairness order, fewest tokens to prefill first within a priority band"
    Params = SagaAdmissionParams
    cheaper_first = True

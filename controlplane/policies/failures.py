"""Policies that raised at run time: recorded from the gateway and from nodes, read by the API
and by ``/metrics``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from django.db.models import Count

from controlplane.policies.models import PolicyFailure
from plugins.events import PolicyEvent


def record_events(tier: str, reporter: str, events: Iterable[PolicyEvent]) -> int:
    """Store policy-manager ``failure`` events; returns how many."""
    rows = [PolicyFailure(tier=tier, reporter=reporter[:100], kind=e.kind or "",
                          policy=(e.name or "")[:100], hook=(e.hook or "")[:64],
                          error=(e.error or e.message)[:4000],
                          replaced_by=(e.replaced_by or "")[:100],
                          occurred_at=datetime.fromtimestamp(e.time, UTC)) for e in events]
    PolicyFailure.objects.bulk_create(rows)
    return len(rows)


def record_node_failure(node: str, kind: str, policy: str, error: str, hook: str = "",
                        replaced_by: str = "") -> None:
    """A node reported that its ``kind`` policy raised (in ``hook``) and it fell back (to
    ``replaced_by``)."""
    PolicyFailure.objects.create(tier=PolicyFailure.Tier.NODE, reporter=node[:100], kind=kind,
                                 policy=policy[:100], error=error[:4000], hook=hook[:64],
                                 replaced_by=replaced_by[:100], occurred_at=datetime.now(UTC))


def failure_counts() -> list[tuple[str, str, str, str, int]]:
    """(tier, kind, policy, hook, count) over all recorded failures (bounded labels)."""
    rows = (PolicyFailure.objects.values_list("tier", "kind", "policy", "hook")
            .annotate(n=Count("id")).order_by("tier", "kind", "policy", "hook"))
    return [(t, k, p, h, n) for t, k, p, h, n in rows]

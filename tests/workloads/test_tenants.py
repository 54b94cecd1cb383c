"""Tenant spec parsing, share-based assignment, noisy-neighbour bursts."""

from __future__ import annotations

import collections

import pytest

from nodeagent.workloads.model import TenantSpec, poisson_arrivals, with_arrivals
from nodeagent.workloads.synthetic import generate
from nodeagent.workloads.tenants import (
    NOISY_BURST_SIZE,
    NOISY_BURST_WINDOW_S,
    NOISY_SHARE,
    apply_noisy_bursts,
    assign_tenants,
    parse_tenants,
)


def test_parse_examples() -> None:
    assert parse_tenants("a:1,b:1") == {"a": TenantSpec("a"), "b": TenantSpec("b")}
    t = parse_tenants("prod:2:slo=2.0@95,noisy:1:noisy")
    assert t["prod"] == TenantSpec("prod", weight=2.0, slo_slowdown=2.0, slo_percentile=95.0)
    assert t["noisy"].noisy and t["noisy"].share == NOISY_SHARE and t["noisy"].weight == 1.0
    x = parse_tenants("x:1:share=3:slo=1.5, y")["x"]
    assert (x.share, x.slo_slowdown, x.slo_percentile) == (3.0, 1.5, 95.0)
    assert parse_tenants("n:noisy")["n"].noisy


@pytest.mark.parametrize(("spec", "message"), [
    ("", "empty"),
    ("a:1,,b", "empty part"),
    ("a:x", "part 'a:x': weight 'x' is not a number"),
    ("a:-1", "weight must be a positive"),
    ("a:1:slo=0.5", "SLO slowdown must be >= 1"),
    ("a:1:slo=2@150", "percentile must be in"),
    ("a:1:loud", "unknown option 'loud'"),
    ("a b:1", "bad tenant name"),
    ("a:1,a:2", "duplicate tenant 'a'"),
])
def test_parse_errors_name_the_bad_part(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_tenants(spec)


def test_assignment_follows_shares() -> None:
    w = generate("webarena", 3000, seed=1)
    tenants = parse_tenants("a:1,b:1,n:1:noisy")
    out = assign_tenants(w, tenants, seed=2)
    out.validate()
    counts = collections.Counter(wf.tenant for wf in out.workflows)
    total = sum(counts.values())
    assert counts["n"] / total == pytest.approx(NOISY_SHARE / (NOISY_SHARE + 2), abs=0.03)
    assert counts["a"] / total == pytest.approx(1 / (NOISY_SHARE + 2), abs=0.03)
    assert out.tenants == tenants
    same = assign_tenants(w, tenants, seed=2)
    assert [x.tenant for x in same.workflows] == [x.tenant for x in out.workflows]


def test_noisy_tenant_arrives_in_bursts_others_untouched() -> None:
    w = assign_tenants(generate("webarena", 400, seed=1), parse_tenants("a:1,n:1:noisy"), 3)
    timed = with_arrivals(w, poisson_arrivals(len(w.workflows), 0.5, seed=4))
    burst = apply_noisy_bursts(timed, seed=4)
    before = {x.workflow_id: x.arrival_s for x in timed.workflows}
    after = {x.workflow_id: x.arrival_s for x in burst.workflows}
    quiet = [x.workflow_id for x in timed.workflows if x.tenant == "a"]
    assert all(after[i] == before[i] for i in quiet)
    noisy = sorted((x for x in timed.workflows if x.tenant == "n"), key=lambda x: x.arrival_s)
    for b in range(0, len(noisy) - NOISY_BURST_SIZE, NOISY_BURST_SIZE):
        group = [after[x.workflow_id] for x in noisy[b:b + NOISY_BURST_SIZE]]
        assert max(group) - min(group) <= NOISY_BURST_WINDOW_S
    # without noisy tenants nothing changes
    plain = with_arrivals(generate("webarena", 10, seed=1), list(range(10)))
    assert apply_noisy_bursts(plain) is plain

"""Multi-tenant mixes: parse a tenant spec, assign workflows to tenants, burst a noisy neighbour.

Spec grammar (``parse_tenants``)::

    SPEC   := TENANT ("," TENANT)*
    TENANT := NAME [":" WEIGHT] (":" OPTION)*
    OPTION := "noisy" | "slo=" SLOWDOWN ["@" PERCENTILE] | "share=" SHARE

- NAME: letters, digits, ``_ . -``; unique.
- WEIGHT: fair-share weight > 0 (default 1). It only affects scheduling (AFS), never traffic.
- ``slo=2.0@95``: task-completion-time SLO: slowdown vs. running alone <= 2.0 for 95% of the
  tenant's workflows (defaults 2.0 @ 95; the percentile is optional).
- ``share=F``: relative share of the submitted workflows (default 1; ``NOISY_SHARE`` for a noisy
  tenant), so "a:1,b:1,n:1:noisy" sends a 1:1:4 traffic split with equal weights.
- ``noisy``: the noisy neighbour: a larger share, and its workflows arrive in bursts of
  ``NOISY_BURST_SIZE`` within ``NOISY_BURST_WINDOW_S`` (``apply_noisy_bursts``).

Examples: ``"a:1,b:1"``; ``"prod:2:slo=2.0@95,noisy:1:noisy"``; ``"x:1:share=3:slo=1.5"``.
Errors are ValueError naming the offending part.
"""

from __future__ import annotations

import dataclasses
import random
import re

from nodeagent.workloads.model import TenantSpec, Workload, with_arrivals

NOISY_SHARE = 4.0
"""Default share of a noisy tenant: it submits 4x the workflows of a normal tenant [EST]."""
NOISY_BURST_SIZE = 8
"""Consecutive noisy workflows that arrive together [EST]."""
NOISY_BURST_WINDOW_S = 2.0
"""A burst's workflows arrive within this many seconds of its first one [EST]."""

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _number(text: str, what: str, part: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"tenant spec part {part!r}: {what} {text!r} is not a number") from None
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"tenant spec part {part!r}: {what} must be a positive number")
    return value


def _parse_one(part: str) -> TenantSpec:
    fields = part.split(":")
    name = fields[0].strip()
    if not _NAME.match(name):
        raise ValueError(f"tenant spec part {part!r}: bad tenant name {name!r} "
                         "(letters, digits, _ . - only)")
    rest = [f.strip() for f in fields[1:]]
    weight = 1.0
    if rest and not (rest[0] == "noisy" or "=" in rest[0]):
        weight = _number(rest.pop(0), "weight", part)
    slo, pct, noisy, share = 2.0, 95.0, False, None
    for opt in rest:
        if opt == "noisy":
            noisy = True
        elif opt.startswith("slo="):
            value, _, percentile = opt[4:].partition("@")
            slo = _number(value, "SLO slowdown", part)
            if slo < 1.0:
                raise ValueError(f"tenant spec part {part!r}: SLO slowdown must be >= 1")
            if percentile:
                pct = _number(percentile, "SLO percentile", part)
                if pct > 100:
                    raise ValueError(f"tenant spec part {part!r}: SLO percentile must be "
                                     "in (0, 100]")
        elif opt.startswith("share="):
            share = _number(opt[6:], "share", part)
        else:
            raise ValueError(f"tenant spec part {part!r}: unknown option {opt!r} "
                             "(expected noisy, slo=X[@P] or share=F)")
    if share is None:
        share = NOISY_SHARE if noisy else 1.0
    return TenantSpec(name=name, weight=weight, slo_slowdown=slo, slo_percentile=pct,
                      noisy=noisy, share=share)


def parse_tenants(spec: str) -> dict[str, TenantSpec]:
    """Parse a tenant spec (module doc) into tenants by name, in spec order."""
    if not spec or not spec.strip():
        raise ValueError("tenant spec is empty (example: 'a:1,b:1,noisy:1:noisy')")
    tenants: dict[str, TenantSpec] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"tenant spec {spec!r}: empty part")
        t = _parse_one(part)
        if t.name in tenants:
            raise ValueError(f"tenant spec part {part!r}: duplicate tenant {t.name!r}")
        tenants[t.name] = t
    return tenants


def assign_tenants(workload: Workload, tenants: dict[str, TenantSpec],
                   seed: int = 0) -> Workload:
    """Copy of ``workload`` whose workflows are drawn to tenants in proportion to ``share``
    (seeded), then noisy tenants' arrivals are bunched into bursts (``apply_noisy_bursts``;
    a no-op while all arrivals are still equal, so this may run before or after arrivals)."""
    if not tenants:
        raise ValueError("assign_tenants needs at least one tenant")
    names = list(tenants)
    cum: list[float] = []
    total = 0.0
    for n in names:
        total += tenants[n].share
        cum.append(total)
    rng = random.Random(f"saga-tenants-{seed}")
    wfs = []
    for wf in workload.workflows:
        x = rng.random() * total
        idx = next(i for i, c in enumerate(cum) if x < c or i == len(cum) - 1)
        wfs.append(dataclasses.replace(wf, tenant=names[idx]))
    out = Workload(workload.name, workload.source, workload.tree, wfs, dict(tenants))
    return apply_noisy_bursts(out, seed)


def apply_noisy_bursts(workload: Workload, seed: int = 0) -> Workload:
    """Bunch each noisy tenant's workflows into bursts: every ``NOISY_BURST_SIZE`` consecutive
    ones arrive within ``NOISY_BURST_WINDOW_S`` after the first of them. Over a long run the
    tenant's rate is unchanged; locally it floods the cluster. Other tenants are untouched."""
    noisy = {n for n, t in workload.tenants.items() if t.noisy}
    if not noisy:
        return workload
    rng = random.Random(f"saga-bursts-{seed}")
    arrivals = [w.arrival_s for w in workload.workflows]
    for name in sorted(noisy):
        idx = [i for i, w in enumerate(workload.workflows) if w.tenant == name]
        idx.sort(key=lambda i: arrivals[i])
        for b in range(0, len(idx), NOISY_BURST_SIZE):
            group = idx[b:b + NOISY_BURST_SIZE]
            start = arrivals[group[0]]
            if all(arrivals[i] == start for i in group):
                continue  # arrivals not set yet (or already one instant): nothing to bunch
            for i in group[1:]:
                arrivals[i] = start + rng.uniform(0.0, NOISY_BURST_WINDOW_S)
    return with_arrivals(workload, arrivals)

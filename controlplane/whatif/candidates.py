"""The policy sets a what-if run replays, by name through the named-set API
(``plugins.named_sets``): ``baseline``, ``saga``, ``NAME=EV:RO:AD:FA[...]``, and ``active``:
the set that was in force over the window, its swaps replayed at their times."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controlplane.whatif.errors import WhatIfInputError

ACTIVE = "active"


@dataclass(frozen=True)
class Swap:
    """At ``at_s`` seconds into the replay, ``kind`` became ``name`` with ``params``."""

    at_s: float
    kind: str
    name: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Candidate:
    name: str
    choices: dict[str, Any]
    """``PolicyManager.activate_set`` arguments: per kind a name or (name, params)."""
    names: dict[str, str]
    swaps: tuple[Swap, ...] = field(default_factory=tuple)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "choices": self.choices, "names": self.names,
                "swaps": [s.__dict__ for s in self.swaps]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Candidate:
        choices = {k: (tuple(v) if isinstance(v, list) else v)
                   for k, v in data["choices"].items()}
        return cls(data["name"], choices, data["names"],
                   tuple(Swap(**s) for s in data["swaps"]))


def resolve(texts: list[str] | tuple[str, ...], since: datetime, until: datetime,
            start: datetime | None = None) -> list[Candidate]:
    """Each set validated by activating it on a fresh manager; WhatIfInputError('policies')."""
    from plugins.base import PolicyConfigError
    from plugins.manager import PolicyManager
    from plugins.named_sets import parse_policy_set

    if not texts:
        raise WhatIfInputError("policies", "at least one policy set is needed")
    out: list[Candidate] = []
    for text in texts:
        if text == ACTIVE:
            candidate = active_over(since, until, start or since)
        else:
            try:
                spec = parse_policy_set(text)
            except PolicyConfigError as exc:
                raise WhatIfInputError("policies", f"policies: {exc}") from None
            choices = spec.as_kwargs()
            candidate = Candidate(spec.name, choices, dict(zip(
                ("eviction", "routing", "admission", "fairness"), spec.names, strict=True)))
        try:
            PolicyManager().activate_set(**candidate.choices)
            for swap in candidate.swaps:
                PolicyManager().activate(swap.kind, swap.name, swap.params)
        except PolicyConfigError as exc:
            raise WhatIfInputError("policies", f"policies: {candidate.name}: {exc}") from None
        if any(c.name == candidate.name for c in out):
            raise WhatIfInputError("policies", f"policy set {candidate.name!r} listed twice")
        out.append(candidate)
    return out


def active_over(since: datetime, until: datetime, start: datetime) -> Candidate:
    """What ran live: per kind the activation in force at ``since`` (SAGA's default where none
    was), then every activation in force made before ``until``, at its time after ``start``
    (the replay's time 0: the window's first call)."""
    from controlplane.policies.models import PolicyActivation
    from plugins.builtin import SAGA_DEFAULTS

    choices: dict[str, Any] = {}
    names: dict[str, str] = {}
    swaps: list[Swap] = []
    for kind in ("eviction", "routing", "admission", "fairness"):
        chain = PolicyActivation.objects.in_force().filter(kind=kind).select_related("policy")
        first = chain.filter(activated_at__lte=since).order_by("-id").first()
        if first is None:
            choices[kind] = SAGA_DEFAULTS[kind]
        else:
            choices[kind] = ((first.policy.plugin_name, first.policy.params)
                             if first.policy.params else first.policy.plugin_name)
        names[kind] = first.policy.plugin_name if first else SAGA_DEFAULTS[kind]
        for later in chain.filter(activated_at__gt=since, activated_at__lt=until).order_by("id"):
            swaps.append(Swap(max((later.activated_at - start).total_seconds(), 0.0), kind,
                              later.policy.plugin_name, dict(later.policy.params)))
    swaps.sort(key=lambda s: s.at_s)
    return Candidate(ACTIVE, choices, names, tuple(swaps))

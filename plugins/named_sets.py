"""Named policy sets: the product's configurations and the peers it is measured against.

A set names one policy per kind (eviction, routing, admission, fairness). ``parse_policy_set``
reads the command-line form used by ``saga bench``: a named set (``baseline``) or
``NAME=EV:RO:AD:FA`` (or just ``EV:RO:AD:FA``, named after itself). Each policy may carry
parameters in brackets, ``name[key=value;key=value]`` (``;`` because ``saga bench --policies``
separates sets with commas); a value is read as JSON when it parses (numbers, true/false, null,
objects) and as a string otherwise: ``tuned=ttl[ttl_s=30]:saga[max_moves=2]:saga:afs``.

The three-part form ``EV:BA:FA`` of the releases before routing and admission were separate
kinds (one ``batching`` policy did both) is still read: ``BA`` is the routing policy and its
admission half is the admission policy that was part of it (``LEGACY_ADMISSION``); a
parameter of the old policy goes to whichever of the two declares it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from plugins.base import PolicyConfigError
from plugins.hookspecs import KINDS, ROUTING

POLICY_SETS: dict[str, tuple[str, str, str, str]] = {
    "baseline": ("lru", "session-affinity", "priority", "fcfs"),
    "saga": ("aeg", "saga", "saga", "afs"),
    "continuum": ("ttl", "session-affinity", "priority", "fcfs"),
    "autellix": ("lru", "least-loaded", "priority", "plas"),
    "vtc": ("lru", "session-affinity", "priority", "vtc"),
    "belady": ("belady", "session-affinity", "priority", "fcfs"),
    "lpm": ("lru", "prefix-aware", "lpm", "fcfs"),
    "thunderagent": ("thunderagent", "thunderagent", "thunderagent", "fcfs"),
    "llmd-las": ("lru", "prefix-aware", "priority", "las"),
    "kvflow": ("kvflow", "session-affinity", "lpm", "fcfs"),
    "throughput": ("lru", "least-loaded", "priority", "fcfs"),
}
"""baseline = vLLM (LRU prefix caching, FCFS) behind production-stack's session router; saga =
SAGA's defaults; the others swap in one peer's mechanism each (belady is the simulator-only
yardstick; lpm = SGLang-style longest-prefix-match). The 2026 peers, each as its publication
describes it (docs/policies.md cites them): thunderagent = Dynamo's ThunderAgent router (pause
at tool boundaries above 0.95 KV, resume smallest first, affinity with a TTL); llmd-las = llm-d's
router (prefix-cache scorer) with its program-aware least-attained-service fairness; kvflow =
KVFlow's steps-to-execution eviction on SGLang (session affinity, longest-prefix-match).
throughput = the capacity yardstick: every call to the least-loaded node (the fullest batches
everywhere), FCFS, plain LRU."""


LEGACY_ADMISSION: dict[str, str] = {
    "round-robin": "priority",
    "least-loaded": "priority",
    "session-affinity": "priority",
    "prefix-aware": "lpm",
    "saga": "saga",
}
"""The admission half of each former ``batching`` policy (what it did on a node)."""

LEGACY_ADMISSION_PARAMS = frozenset({"admission_band"})
"""The former ``batching`` policies' parameters that belong to their admission half."""


@dataclass(frozen=True, slots=True)
class PolicySetSpec:
    """A named (eviction, routing, admission, fairness) set, with optional parameters per kind."""

    name: str
    eviction: str
    routing: str
    admission: str
    fairness: str
    params: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, str, str, str]:
        return (self.eviction, self.routing, self.admission, self.fairness)

    def as_kwargs(self) -> dict[str, Any]:
        """Arguments for ``PolicyManager.activate_set``: a name, or (name, params)."""
        out: dict[str, Any] = {}
        for kind, name in zip(KINDS, self.names, strict=True):
            params = self.params.get(kind)
            out[kind] = (name, params) if params else name
        return out


_PART = re.compile(r"^([A-Za-z0-9_.-]+)(?:\[(.*)\])?$")


def _parse_part(text: str, kind: str) -> tuple[str, dict[str, Any]]:
    match = _PART.match(text)
    if match is None:
        raise PolicyConfigError(
            f"policy set: bad {kind} policy {text!r}; expected NAME or NAME[key=value;...]",
            field=kind,
        )
    name, body = match.group(1), match.group(2)
    params: dict[str, Any] = {}
    if body:
        for item in body.split(";"):
            key, sep, raw = item.partition("=")
            key, raw = key.strip(), raw.strip()
            if not sep or not key:
                raise PolicyConfigError(
                    f"policy set: bad parameter {item!r} of {kind} policy {name!r}; "
                    "expected key=value",
                    field=f"{kind}.params",
                )
            try:
                params[key] = json.loads(raw)
            except json.JSONDecodeError:
                params[key] = raw
    return name, params


def split_legacy_batching(name: str, params: dict[str, Any]) -> tuple[tuple[str, dict[str, Any]],
                                                                       tuple[str, dict[str, Any]]]:
    """A former ``batching`` policy and its parameters as (routing, admission) choices."""
    admission = LEGACY_ADMISSION.get(name)
    if admission is None:
        raise PolicyConfigError(
            f"policy set: {name!r} was not a batching policy; give the four-part form "
            "EVICTION:ROUTING:ADMISSION:FAIRNESS",
            field=ROUTING,
        )
    routing_params = {k: v for k, v in params.items() if k not in LEGACY_ADMISSION_PARAMS}
    admission_params = {k: v for k, v in params.items() if k in LEGACY_ADMISSION_PARAMS}
    return (name, routing_params), (admission, admission_params)


def parse_policy_set(text: str) -> PolicySetSpec:
    """``"baseline"`` -> the named set; ``"mine=aeg:saga:saga:vtc"`` or ``"aeg:saga:saga:vtc"`` ->
    that set; the legacy ``"aeg:saga:vtc"`` -> the same set (see the module docstring).

    Only the syntax is checked here; the manager checks that the names are installed policies of
    the right kinds, and the parameters, when it activates the set.
    """
    if not isinstance(text, str) or not text.strip():
        raise PolicyConfigError("policy set: empty specification", field="policy_set")
    text = text.strip()
    if "=" in text.split("[", 1)[0]:
        name, _, body = text.partition("=")
        name = name.strip()
        if not name:
            raise PolicyConfigError(f"policy set {text!r}: empty name before '='", field="name")
    elif ":" in text:
        name, body = text, text
    else:
        names = POLICY_SETS.get(text)
        if names is None:
            raise PolicyConfigError(
                f"unknown policy set {text!r}; named sets: {', '.join(POLICY_SETS)} "
                "(or give EVICTION:ROUTING:ADMISSION:FAIRNESS)",
                field="policy_set",
            )
        return PolicySetSpec(text, *names)
    parts = [p.strip() for p in body.split(":")]
    if len(parts) not in (3, 4) or not all(parts):
        raise PolicyConfigError(
            f"policy set {text!r}: expected EVICTION:ROUTING:ADMISSION:FAIRNESS, got {body!r}",
            field="policy_set",
        )
    if len(parts) == 3:
        eviction, batching, fairness = (
            _parse_part(part, kind)
            for part, kind in zip(parts, ("eviction", "batching", "fairness"), strict=True))
        routing, admission = split_legacy_batching(*batching)
        parsed = [eviction, routing, admission, fairness]
    else:
        parsed = [_parse_part(part, kind) for part, kind in zip(parts, KINDS, strict=True)]
    params = {kind: p for kind, (_, p) in zip(KINDS, parsed, strict=True) if p}
    return PolicySetSpec(name, *(n for n, _ in parsed), params=params)

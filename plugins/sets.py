"""Named policy sets: the product's configurations and the peers it is measured against.

A set names one policy per kind (eviction, batching, fairness). ``parse_policy_set`` reads the
command-line form used by ``saga bench``: a named set (``baseline``) or ``NAME=EV:BA:FA`` (or
just ``EV:BA:FA``, named after itself). Each policy may carry parameters in brackets,
``name[key=value;key=value]`` (``;`` because ``saga bench --policies`` separates sets with
commas); a value is read as JSON when it parses (numbers, true/false, null, objects) and as a
string otherwise: ``tuned=ttl[ttl_s=30]:saga[max_moves=2]:afs``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from plugins.base import PolicyConfigError

POLICY_SETS: dict[str, tuple[str, str, str]] = {
    "baseline": ("lru", "session-affinity", "fcfs"),
    "saga": ("aeg", "saga", "afs"),
    "continuum": ("ttl", "session-affinity", "fcfs"),
    "autellix": ("lru", "least-loaded", "plas"),
    "vtc": ("lru", "session-affinity", "vtc"),
    "belady": ("belady", "session-affinity", "fcfs"),
    "lpm": ("lru", "prefix-aware", "fcfs"),
}
"""baseline = vLLM (LRU prefix caching, FCFS) behind production-stack's session router; saga =
SAGA's defaults; the others swap in one peer's mechanism each (belady is the simulator-only
yardstick; lpm = SGLang-style longest-prefix-match)."""


@dataclass(frozen=True, slots=True)
class PolicySetSpec:
    """A named (eviction, batching, fairness) triple, with optional parameters per kind."""

    name: str
    eviction: str
    batching: str
    fairness: str
    params: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, str, str]:
        return (self.eviction, self.batching, self.fairness)

    def as_kwargs(self) -> dict[str, Any]:
        """Arguments for ``PolicyManager.activate_set``: a name, or (name, params)."""
        out: dict[str, Any] = {}
        for kind, name in zip(KINDS, self.names, strict=True):
            params = self.params.get(kind)
            out[kind] = (name, params) if params else name
        return out


KINDS = ("eviction", "batching", "fairness")
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


def parse_policy_set(text: str) -> PolicySetSpec:
    """``"baseline"`` -> the named set; ``"mine=aeg:saga:vtc"`` or ``"aeg:saga:vtc"`` -> a triple.

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
        triple = POLICY_SETS.get(text)
        if triple is None:
            raise PolicyConfigError(
                f"unknown policy set {text!r}; named sets: {', '.join(POLICY_SETS)} "
                "(or give EVICTION:BATCHING:FAIRNESS)",
                field="policy_set",
            )
        return PolicySetSpec(text, *triple)
    parts = [p.strip() for p in body.split(":")]
    if len(parts) != 3 or not all(parts):
        raise PolicyConfigError(
            f"policy set {text!r}: expected EVICTION:BATCHING:FAIRNESS, got {body!r}",
            field="policy_set",
        )
    parsed = [_parse_part(part, kind) for part, kind in zip(parts, KINDS, strict=True)]
    params = {kind: p for kind, (_, p) in zip(KINDS, parsed, strict=True) if p}
    return PolicySetSpec(name, parsed[0][0], parsed[1][0], parsed[2][0], params)

"""Reports the policy manager makes: activations, run-time failures, discovery errors.

A policy that raises is replaced, and the failure is *reported* here rather than swallowed; the
control plane subscribes to these events and shows them (and stores them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

ACTIVATED = "activated"
FAILURE = "failure"
DISCOVERY_ERROR = "discovery_error"


@dataclass(frozen=True, slots=True)
class PolicyEvent:
    """One report. ``type`` is ``activated``, ``failure`` or ``discovery_error``.

    For a failure: ``kind``/``name``/``version`` say which policy raised, ``hook`` in which hook,
    ``error`` the exception (``Type: message``), ``traceback`` where, and ``replaced_by`` the policy
    that answers from the next scheduling step on. ``generation`` is the policy-set generation
    the event produced (or saw).
    """

    type: str
    message: str
    time: float
    generation: int
    kind: str | None = None
    name: str | None = None
    version: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    hook: str | None = None
    error: str | None = None
    traceback: str | None = None
    replaced_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

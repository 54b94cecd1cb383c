"""Applying policies on a node, and what it reports about them, for every engine.

A live node runs only policies that need no knowledge of the future: an oracle policy
(``requires_oracle``, e.g. Belady) is refused with a reason naming the field, and the previous
policy stays. A policy that raises at run time has already been replaced by the manager (last
good, then default); its failure waits in the inbox until the node agent reports it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

from plugins.base import PolicyConfigError
from plugins.events import FAILURE, PolicyEvent
from plugins.manager import PolicyManager

MAX_KEPT_FAILURES = 100


def check_runnable_live(manager: PolicyManager, kind: str, name: str) -> None:
    """Raise PolicyConfigError when ``name`` cannot run on a live node (unknown, oracle)."""
    cls = manager.registry.get(kind, name)
    if cls.requires_oracle:
        raise PolicyConfigError(
            f"{kind} policy {name!r} needs the future of a trace: simulator replays only",
            field="name")


class PolicyHost:
    def __init__(self, manager: PolicyManager) -> None:
        self.manager = manager
        self._failures: deque[PolicyEvent] = deque(maxlen=MAX_KEPT_FAILURES)
        self._lock = threading.Lock()
        self.failures_total = 0
        manager.subscribe(self._on_event)

    def apply(self, kind: str, name: str, params: Mapping[str, Any] | None) -> None:
        """Activate from the next scheduling step; PolicyConfigError leaves the old one."""
        check_runnable_live(self.manager, kind, name)
        self.manager.activate(kind, name, dict(params or {}))

    def active(self) -> dict[str, str]:
        """kind -> "name@version" of what runs now."""
        return {kind: f"{p.name}@{p.version}" for kind, p in self.manager.active().items()}

    def _on_event(self, event: PolicyEvent) -> None:
        if event.type == FAILURE and event.kind is not None:
            with self._lock:
                self._failures.append(event)
                self.failures_total += 1

    def drain_failures(self) -> list[PolicyEvent]:
        """Failures since the last drain (the manager already fell back)."""
        with self._lock:
            failures = list(self._failures)
            self._failures.clear()
        return failures

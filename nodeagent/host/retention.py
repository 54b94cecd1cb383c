"""Keeping a workflow's KV blocks while its agent runs a tool, for every engine.

At ``tool_start`` the eviction policy says how long (``saga_tool_retention_s``); a positive time
pins what is still cached of the workflow's last call. The pin goes when the workflow's next
call has been *admitted* (that call then holds its own references on the prefix it reuses;
dropping the pin when the call merely arrives would expose the prefix to eviction while it
queues), when the time runs out, when the workflow ends, or when the engine cannot admit
anything while pins are held (retention may delay, never deadlock: then one pin at a time goes,
the workflow expected back last first, until the engine can admit). Engines provide the
mechanics, a :class:`Pinner`; this module decides when.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Pinner(Protocol):
    """How an engine holds and lets go of a workflow's cached blocks."""

    def pin(self, workflow_id: str, now_s: float) -> int:
        """Pin what is still cached of the workflow's last call; returns blocks pinned (0:
        nothing cached to keep)."""
        ...

    def unpin(self, workflow_id: str, now_s: float) -> int:
        """Let the workflow's pinned blocks go (they stay cached until evicted)."""
        ...


@dataclass(slots=True)
class _Held:
    deadline_s: float
    next_call_seq: int


class Retention:
    """Which workflows hold pins, until when, and until which call (see the module docstring)."""

    def __init__(self, pinner: Pinner) -> None:
        self.pinner = pinner
        self._held: dict[str, _Held] = {}

    @property
    def held(self) -> int:
        return len(self._held)

    def is_held(self, workflow_id: str) -> bool:
        return workflow_id in self._held

    def tool_started(self, workflow_id: str, ttl_s: float, now_s: float,
                     next_call_seq: int) -> int:
        """Pin for ``ttl_s`` (policy's answer); returns blocks pinned."""
        self.release(workflow_id, now_s)
        if not ttl_s > 0.0:
            return 0
        pinned = self.pinner.pin(workflow_id, now_s)
        if pinned:
            self._held[workflow_id] = _Held(now_s + ttl_s, next_call_seq)
        return pinned

    def call_admitted(self, workflow_id: str, seq: int, now_s: float) -> int:
        """A call of the workflow got its KV: a pin kept for it (or an older call) goes."""
        held = self._held.get(workflow_id)
        if held is None or seq < held.next_call_seq:
            return 0
        return self.release(workflow_id, now_s)

    def dropped(self, workflow_id: str) -> None:
        """The engine let the pin go by itself (to make room for a newer one)."""
        self._held.pop(workflow_id, None)

    def release(self, workflow_id: str, now_s: float) -> int:
        if self._held.pop(workflow_id, None) is None:
            return 0
        return self.pinner.unpin(workflow_id, now_s)

    def expire(self, now_s: float) -> list[str]:
        """Release the pins whose time is up; returns their workflows."""
        due = [w for w, h in self._held.items() if h.deadline_s <= now_s]
        for workflow_id in due:
            self.release(workflow_id, now_s)
        return due

    def next_deadline(self) -> float | None:
        return min((h.deadline_s for h in self._held.values()), default=None)

    def deadline(self, workflow_id: str) -> float | None:
        held = self._held.get(workflow_id)
        return held.deadline_s if held is not None else None

    def release_all(self, now_s: float) -> int:
        return sum(self.release(w, now_s) for w in list(self._held))

    def release_for_room(self, now_s: float) -> int:
        """The engine cannot admit anything while pins are held: let go of the pin whose
        workflow is expected back last (latest deadline), so retention delays the queue by as
        little as it can; the engine calls again while it still cannot admit. Returns blocks
        released (0: nothing was held)."""
        while self._held:
            workflow_id = max(self._held, key=lambda w: self._held[w].deadline_s)
            released = self.release(workflow_id, now_s)
            if released:
                return released
        return 0

"""The clock of the bench cluster's event loop.

The loop asks the clock to ``advance_to`` each event's simulated time before handling it;
:class:`SimulatedClock` jumps (benchmarks, what-if replays). Live simulated nodes need no clock
object: their time is the asyncio loop's, times ``speed`` (``nodeagent.agent.sim_backend``).
"""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    """Simulated time source of an event loop."""

    def now(self) -> float: ...

    def advance_to(self, t: float) -> None: ...


class SimulatedClock:
    """Jumps straight to each event: simulation as fast as the CPU allows."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now = start_s

    def now(self) -> float:
        return self._now

    def advance_to(self, t: float) -> None:
        if t > self._now:
            self._now = t

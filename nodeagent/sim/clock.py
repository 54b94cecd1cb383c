"""Clocks for the simulated engine: as fast as possible, or real time with a speed factor.

The event loop asks the clock to ``advance_to`` each event's simulated time before handling it.
:class:`SimulatedClock` jumps (benchmarks, what-if replays); :class:`RealTimeClock` sleeps so
that simulated time tracks wall time x ``speed`` (the demo and node agents, which stream tokens
through the engine's callbacks as they are produced).
"""

from __future__ import annotations

import time
from collections.abc import Callable
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


class RealTimeClock:
    """Sleeps until wall time catches up with simulated time / ``speed``.

    ``speed`` 1.0 is real time, 10.0 runs ten simulated seconds per wall second. ``sleep`` and
    ``monotonic`` are injectable so tests need not wait.
    """

    def __init__(self, speed: float = 1.0, start_s: float = 0.0,
                 sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.speed = speed
        self._sleep = sleep
        self._monotonic = monotonic
        self._sim0 = start_s
        self._wall0 = monotonic()
        self._now = start_s

    def now(self) -> float:
        return self._now

    def advance_to(self, t: float) -> None:
        if t <= self._now:
            return
        wall_target = self._wall0 + (t - self._sim0) / self.speed
        delay = wall_target - self._monotonic()
        if delay > 0:
            self._sleep(delay)
        self._now = t

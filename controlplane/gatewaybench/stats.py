"""Latency percentiles, throughput and the comparison of the direct and gateway paths.

Pure functions only (no clock, no I/O) so the maths is tested apart from the timing. Calls to
the node and through the gateway are not paired, so the added latency is the difference of the
two distributions' percentiles, never a percentile of per-call differences.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

PERCENTILES = (50.0, 95.0, 99.0)
CONTROL_PLANE = "control plane"
NODE = "node agent"
# A concurrency level whose throughput is less than this much above the best lower level is
# taken as the plateau: more clients only queue.
PLATEAU_GAIN = 0.05


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's
    default), so p50 of an even-sized sample is the mean of the two middle values."""
    if not values:
        raise ValueError("percentile of an empty sample")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class PathSummary:
    """One path (direct or gateway) at one concurrency: latencies in ms, calls per second."""

    calls: int
    errors: int
    busy_s: float
    calls_per_s: float
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(latencies_s: Sequence[float], errors: int, busy_s: float) -> PathSummary:
    """Summarize successful calls' latencies (seconds) over ``busy_s`` seconds of batches."""
    if errors < 0:
        raise ValueError(f"errors must be >= 0, got {errors}")
    if not busy_s > 0:
        raise ValueError(f"busy_s must be > 0, got {busy_s}")
    if not latencies_s:
        raise ValueError("no successful call to summarize")
    ms = [x * 1000.0 for x in latencies_s]
    return PathSummary(
        calls=len(ms), errors=errors, busy_s=busy_s, calls_per_s=len(ms) / busy_s,
        mean_ms=sum(ms) / len(ms), p50_ms=percentile(ms, 50.0), p95_ms=percentile(ms, 95.0),
        p99_ms=percentile(ms, 99.0), max_ms=max(ms),
    )


@dataclass(frozen=True, slots=True)
class Comparison:
    """Direct and gateway side by side at one concurrency; added_* = gateway minus direct."""

    concurrency: int
    direct: PathSummary
    gateway: PathSummary
    # CPU ms per call of the control plane (per gateway call) and of the node (per call of
    # either path); robust to other load on the machine, unlike latency. Empty when unknown.
    cpu_ms_per_call: dict[str, float] = field(default_factory=dict)

    @property
    def added_p50_ms(self) -> float:
        return self.gateway.p50_ms - self.direct.p50_ms

    @property
    def added_p95_ms(self) -> float:
        return self.gateway.p95_ms - self.direct.p95_ms

    @property
    def added_p99_ms(self) -> float:
        return self.gateway.p99_ms - self.direct.p99_ms

    def as_dict(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "direct": self.direct.as_dict(),
                "gateway": self.gateway.as_dict(), "added_p50_ms": self.added_p50_ms,
                "added_p95_ms": self.added_p95_ms, "added_p99_ms": self.added_p99_ms,
                "cpu_ms_per_call": dict(self.cpu_ms_per_call)}


def plateau_reached(throughputs: Sequence[float], gain: float = PLATEAU_GAIN) -> bool:
    """True when the last level's throughput is not ``gain`` above the best earlier level."""
    if gain < 0:
        raise ValueError(f"gain must be >= 0, got {gain}")
    if len(throughputs) < 2:
        return False
    return throughputs[-1] < max(throughputs[:-1]) * (1.0 + gain)


def sweep_levels(start: int, limit: int) -> list[int]:
    """Concurrency levels to try for the maximum throughput: doubling from ``start`` up to and
    including ``limit`` (which is appended when the doubling steps over it)."""
    if start < 1 or limit < start:
        raise ValueError(f"need 1 <= start <= limit, got start={start}, limit={limit}")
    levels = []
    level = start
    while level < limit:
        levels.append(level)
        level *= 2
    levels.append(limit)
    return levels


def batch_plan(calls: int, batch: int) -> list[int]:
    """Split ``calls`` into batch sizes of at most ``batch`` (the last may be smaller); each batch
    is sent once straight to the node and once through the gateway, alternately."""
    if calls < 1 or batch < 1:
        raise ValueError(f"calls and batch must be >= 1, got calls={calls}, batch={batch}")
    full, rest = divmod(calls, batch)
    return [batch] * full + ([rest] if rest else [])


def cpu_per_call(before: Mapping[str, float | None], after: Mapping[str, float | None],
                 calls_per_path: int) -> dict[str, float]:
    """CPU ms per call from two snapshots of each process's CPU seconds: the control plane
    serves only the gateway's calls, the node both paths' (2 x ``calls_per_path``)."""
    if calls_per_path < 1:
        raise ValueError(f"calls_per_path must be >= 1, got {calls_per_path}")
    served = {CONTROL_PLANE: calls_per_path, NODE: 2 * calls_per_path}
    result = {}
    for name, calls in served.items():
        start, end = before.get(name), after.get(name)
        if start is not None and end is not None:
            result[name] = max(end - start, 0.0) * 1000.0 / calls
    return result

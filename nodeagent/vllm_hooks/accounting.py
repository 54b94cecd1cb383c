"""Service delivered per request, for the fairness policies' ``record_service``.

An engine has no cost model of itself, so GPU time is measured: a step's time is the wall time
from its ``schedule()`` (or the previous step's output, whichever is later: with async scheduling
steps overlap) to its ``update_from_output``, split between the step's requests in proportion to
their scheduled tokens. Prefill tokens are those scheduled while a request's computed tokens
were below its prompt length; the rest are decode tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

MAX_PENDING_STEPS = 64
"""Steps awaiting their output; vLLM keeps at most a few in flight (async scheduling, PP)."""


@dataclass(frozen=True, slots=True)
class StepShare:
    request_id: str
    prefill_tokens: int
    decode_tokens: int
    gpu_s: float


@dataclass(slots=True)
class _Pending:
    scheduled_s: float
    split: dict[str, tuple[int, int]]
    output: object  # keeps the SchedulerOutput alive so its id() is not reused


class StepAccounting:
    """Pairs each scheduled step with its output and divides the step's time."""

    def __init__(self) -> None:
        self._pending: dict[int, _Pending] = {}
        self._last_output_s: float | None = None

    def scheduled(
        self,
        output: object,
        now_s: float,
        num_scheduled_tokens: Mapping[str, int],
        computed_before: Mapping[str, int],
        prompt_tokens: Mapping[str, int],
    ) -> None:
        split: dict[str, tuple[int, int]] = {}
        for request_id, tokens in num_scheduled_tokens.items():
            before = computed_before.get(request_id, 0)
            prefill = min(tokens, max(prompt_tokens.get(request_id, 0) - before, 0))
            split[request_id] = (prefill, tokens - prefill)
        if split:
            self._pending[id(output)] = _Pending(now_s, split, output)
            while len(self._pending) > MAX_PENDING_STEPS:  # outputs that never came back
                del self._pending[next(iter(self._pending))]

    def finished(self, output: object, now_s: float) -> list[StepShare]:
        pending = self._pending.pop(id(output), None)
        start = self._last_output_s
        self._last_output_s = now_s
        if pending is None:
            return []
        if start is None or start < pending.scheduled_s:
            start = pending.scheduled_s
        duration = max(now_s - start, 0.0)
        total = sum(p + d for p, d in pending.split.values())
        if total <= 0:
            return []
        return [
            StepShare(request_id, p, d, duration * (p + d) / total)
            for request_id, (p, d) in pending.split.items()
        ]

    def __len__(self) -> int:
        return len(self._pending)

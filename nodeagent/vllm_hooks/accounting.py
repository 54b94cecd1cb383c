"""Service delivered per request, for the fairness policies' ``record_service``.

An engine has no cost model of itself, so GPU time is measured: a step's time is the wall time
from its ``schedule()`` (or the previous step's output, whichever is later: with async scheduling
steps overlap) to its ``update_from_output``, split between the step's requests in proportion to
their scheduled tokens. Prefill tokens are a request's tokens in a step that computed part of its
prompt or several tokens at once (a preempted request recomputing its prompt and output, as the
simulated engine counts it); a decode token is the one token of a decode step. (Speculative
decoding's several tokens per step would count as prefill; SAGA nodes do not enable it.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from nodeagent.sim.isolated import MeasuredCost
from nodeagent.sim.profiles import DEFAULT_BLOCK_SIZE

MAX_PENDING_STEPS = 64
"""Steps awaiting their output; vLLM keeps at most a few in flight (async scheduling, PP)."""
DECAY = 0.02
"""Weight lost per observation by older steps in the prefill fits (a window of ~50 steps)."""
DECODE_WEIGHT = 0.1
"""Weight of the newest single-request decode step in its mean (decode steps are many)."""


class _AffineFit:
    """Exponentially weighted least squares of a step's time on its token count,
    ``t = fixed + per_token * n``: an engine step has a fixed cost (launch, sampling, the LM
    head) besides its per-token work, so a plain per-token average overstates short steps and
    understates full ones."""

    __slots__ = ("s0", "sn", "snn", "st", "snt")

    def __init__(self) -> None:
        self.s0 = self.sn = self.snn = self.st = self.snt = 0.0

    def add(self, tokens: int, seconds: float) -> None:
        keep = 1.0 - DECAY
        self.s0 = self.s0 * keep + 1.0
        self.sn = self.sn * keep + tokens
        self.snn = self.snn * keep + tokens * tokens
        self.st = self.st * keep + seconds
        self.snt = self.snt * keep + tokens * seconds

    @property
    def measured(self) -> bool:
        return self.s0 > 0.0

    def coefficients(self) -> tuple[float, float]:
        """(fixed seconds per step, seconds per token), both >= 0."""
        if not self.measured:
            return 0.0, 0.0
        det = self.s0 * self.snn - self.sn * self.sn
        if det > 1e-9 * max(self.s0 * self.snn, 1e-300):
            per_token = (self.s0 * self.snt - self.sn * self.st) / det
            fixed = (self.st - per_token * self.sn) / self.s0
            if per_token >= 0.0 and fixed >= 0.0:
                return fixed, per_token
            if per_token < 0.0:  # noise on nearly equal sizes: a constant step time
                return self.st / self.s0, 0.0
        # one size seen so far, or a negative intercept: proportional through the origin
        return 0.0, (self.snt / self.snn if self.snn > 0 else 0.0)


class MeasuredCosts:
    """The engine's own cost model, measured: what the contract's ``queue_delay_s`` and
    ``isolated_s`` need where the node has no profile to read them from.

    Prefill: two affine fits of step time on scheduled tokens, one over every step that
    prefilled (what a queue of prompts costs to clear, at full chunks: ``queue_s_per_token``),
    one over steps that prefilled a *single* request and nothing else (isolated time: queueing
    and batching never leak in). Decode: the mean time of steps that decoded a single request.
    :meth:`snapshot` is the isolated model as ``nodeagent.sim.isolated.MeasuredCost`` (the same
    class the control plane rebuilds from the node's heartbeat), None until both a prefill and
    a decode step were measured alone.
    """

    def __init__(self, chunk_tokens: int = 8192) -> None:
        self.chunk_tokens = max(int(chunk_tokens), 1)
        self._any_prefill = _AffineFit()
        self._alone_prefill = _AffineFit()
        self._alone_decode_s: float | None = None

    def observe(self, duration_s: float, split: Mapping[str, tuple[int, int]]) -> None:
        prefill = sum(p for p, _ in split.values())
        tokens = sum(p + d for p, d in split.values())
        if duration_s <= 0 or tokens <= 0:
            return
        if prefill:
            self._any_prefill.add(tokens, duration_s)
        if len(split) == 1:
            (p, d), = split.values()
            if p and not d:
                self._alone_prefill.add(p, duration_s)
            elif d == 1 and not p:
                old = self._alone_decode_s
                self._alone_decode_s = (duration_s if old is None
                                        else old + DECODE_WEIGHT * (duration_s - old))

    @property
    def queue_s_per_token(self) -> float | None:
        """Seconds per prompt token when a queue of prompts is cleared in full chunks."""
        if not self._any_prefill.measured:
            return None
        fixed, per_token = self._any_prefill.coefficients()
        return per_token + fixed / self.chunk_tokens

    def snapshot(self, block_size: int = DEFAULT_BLOCK_SIZE) -> MeasuredCost | None:
        if not self._alone_prefill.measured or self._alone_decode_s is None:
            return None
        fixed, per_token = self._alone_prefill.coefficients()
        if per_token <= 0.0 and fixed <= 0.0:
            return None
        return MeasuredCost(prefill_s_per_token=per_token, decode_s_per_token=self._alone_decode_s,
                            block_size=block_size, prefill_step_s=fixed,
                            chunk_tokens=self.chunk_tokens)


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

    def __init__(self, chunk_tokens: int = 8192) -> None:
        self._pending: dict[int, _Pending] = {}
        self._last_output_s: float | None = None
        self.costs = MeasuredCosts(chunk_tokens)

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
            if before < prompt_tokens.get(request_id, 0) or tokens > 1:
                split[request_id] = (tokens, 0)  # prompt, or a preempted call's recompute
            else:
                split[request_id] = (0, tokens)
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
        self.costs.observe(duration, pending.split)
        return [
            StepShare(request_id, p, d, duration * (p + d) / total)
            for request_id, (p, d) in pending.split.items()
        ]

    def __len__(self) -> int:
        return len(self._pending)

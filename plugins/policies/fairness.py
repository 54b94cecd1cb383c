"""Fairness policies: the priority of a waiting call and the accounting of delivered service.

Priorities are floats, lower admitted first. VTC and AFS keep per-tenant virtual counters with
VTC's *lift*: a tenant that becomes backlogged starts at the lowest counter among the backlogged
tenants (or the last served one's), so idle time is not banked as credit.
"""

from __future__ import annotations

import bisect
import math
import threading
from typing import Literal

from pydantic import Field, model_validator

from plugins.base import Policy, PolicyParams
from plugins.hookspecs import FAIRNESS, hookimpl
from plugins.views import CallView, SchedulingContext, TenantView, WorkflowEvent, WorkflowView


class AttainedService:
    """Service each workflow attained so far (PLAS's state, kept across activations)."""

    __slots__ = ("by_workflow", "lock")

    def __init__(self) -> None:
        self.by_workflow: dict[str, float] = {}
        self.lock = threading.Lock()


class FCFSParams(PolicyParams):
    by: Literal["call", "workflow"] = Field(
        "call",
        description="order by the call's arrival (vLLM) or the workflow's (program-level FCFS)",
    )


class FCFSFairness(Policy):
    """First come, first served: vLLM's default queue (``by="call"``).

    ``by="workflow"`` is Continuum's program-level FCFS: all calls of an older workflow go before
    those of a newer one. No tenant isolation: a noisy tenant's burst delays everyone.
    """

    name = "fcfs"
    kind = FAIRNESS
    version = "1.0"
    summary = "first come first served (per call, or per workflow as Continuum)"
    Params = FCFSParams

    def __init__(self, params: PolicyParams | None = None) -> None:
        super().__init__(params)
        validated: FCFSParams = self.params  # type: ignore[assignment]
        self._by_workflow = validated.by == "workflow"

    @hookimpl
    def saga_call_priority(
        self, ctx: SchedulingContext, call: CallView, workflow: WorkflowView, tenant: TenantView
    ) -> float:
        return workflow.arrival_s if self._by_workflow else call.arrival_s

    @hookimpl
    def saga_record_service(
        self,
        ctx: SchedulingContext,
        call: CallView,
        prefill_tokens: int,
        decode_tokens: int,
        gpu_s: float,
    ) -> None:
        return None


class LiftedCounters:
    """Per-tenant virtual counters with VTC's lift (Sheng et al., OSDI'24, Algorithm 2).

    A tenant is *backlogged* while it has calls waiting for admission: a call counts as waiting
    from its ``call_start`` until it first receives service (or ends). When a tenant with no
    waiting call gets one, its counter is lifted to ``max(own, P)`` where P is the minimum counter
    among the other backlogged tenants, or the last served tenant's counter when none is.
    Workflows have one call in flight at a time, so calls are keyed by workflow id.
    """

    __slots__ = ("counter", "last_served", "lock", "pending", "waiting")

    def __init__(self) -> None:
        self.counter: dict[str, float] = {}
        self.waiting: dict[str, int] = {}
        self.pending: dict[str, str] = {}  # workflow id -> tenant, call waiting for admission
        self.last_served: str | None = None
        self.lock = threading.Lock()

    def _lift_level(self, tenant: str) -> float:
        levels = [
            self.counter.get(t, 0.0) for t, n in self.waiting.items() if n > 0 and t != tenant
        ]
        if levels:
            return min(levels)
        if self.last_served is not None:
            return self.counter.get(self.last_served, 0.0)
        return 0.0

    def arrive(self, tenant: str, workflow_id: str) -> None:
        with self.lock:
            if workflow_id in self.pending:
                return
            if self.waiting.get(tenant, 0) == 0:
                self.counter[tenant] = max(self.counter.get(tenant, 0.0), self._lift_level(tenant))
            self.waiting[tenant] = self.waiting.get(tenant, 0) + 1
            self.pending[workflow_id] = tenant

    def leave_queue(self, workflow_id: str) -> None:
        with self.lock:
            tenant = self.pending.pop(workflow_id, None)
            if tenant is not None:
                self.waiting[tenant] -= 1

    def charge(self, tenant: str, workflow_id: str, amount: float) -> None:
        with self.lock:
            tenant_pending = self.pending.pop(workflow_id, None)
            if tenant_pending is not None:
                self.waiting[tenant_pending] -= 1
            self.counter[tenant] = self.value_unlocked(tenant) + amount
            self.last_served = tenant

    def value_unlocked(self, tenant: str) -> float:
        value = self.counter.get(tenant)
        if value is None:  # never seen an arrival (engine sent no events): lift on first sight
            value = self.counter[tenant] = self._lift_level(tenant)
        return value

    def value(self, tenant: str) -> float:
        value = self.counter.get(tenant)
        if value is not None:
            return value
        with self.lock:
            return self.value_unlocked(tenant)

    def observe(self, event: WorkflowEvent) -> None:
        if event.kind == "call_start":
            self.arrive(event.tenant, event.workflow_id)
        elif event.kind in ("call_end", "workflow_end"):
            self.leave_queue(event.workflow_id)


def _weight(ctx: SchedulingContext, tenant: str) -> float:
    view = ctx.tenants.get(tenant)
    return view.weight if view is not None and view.weight > 0 else 1.0


class VTCParams(PolicyParams):
    input_weight: float = Field(1.0, ge=0.0, description="counter cost of one prefill token")
    output_weight: float = Field(2.0, ge=0.0, description="counter cost of one decoded token")

    @model_validator(mode="after")
    def _some_weight(self) -> VTCParams:
        if self.input_weight == 0.0 and self.output_weight == 0.0:
            raise ValueError("input_weight and output_weight cannot both be 0")
        return self


class VTCFairness(Policy):
    """Virtual Token Counter (Sheng et al., "Fairness in Serving Large Language Models", OSDI'24).

    Each tenant's counter grows by ``(input_weight * prefill + output_weight * decode) / weight``
    as service is delivered (the paper's weighted VTC with h(n_p, n_q) = w_p n_p + w_q n_q,
    defaults 1 and 2); a waiting call's priority is its tenant's counter; counters are lifted when
    a tenant becomes backlogged (see :class:`LiftedCounters`).

    Bound (the paper's Theorem, restated for this implementation): for two tenants continuously
    backlogged over an interval, the difference of their counter increases is at most ``2 * U``,
    where ``U`` is the largest counter increase that the calls one tenant can have in flight at
    once can still receive (at most ``max in-flight calls x max per-call service / weight``).
    Approximation: with prefix caching only computed prefill tokens are charged (cache hits are
    free), a choice the paper did not face.
    """

    name = "vtc"
    kind = FAIRNESS
    version = "1.0"
    summary = "Virtual Token Counter (OSDI'24): least weighted token service first, with lift"
    Params = VTCParams

    State = LiftedCounters

    @property
    def counters(self) -> LiftedCounters:
        return self.state  # type: ignore[no-any-return]

    @hookimpl
    def saga_call_priority(
        self, ctx: SchedulingContext, call: CallView, workflow: WorkflowView, tenant: TenantView
    ) -> float:
        return self.counters.value(call.tenant)

    @hookimpl
    def saga_record_service(
        self,
        ctx: SchedulingContext,
        call: CallView,
        prefill_tokens: int,
        decode_tokens: int,
        gpu_s: float,
    ) -> None:
        params: VTCParams = self.params  # type: ignore[assignment]
        cost = params.input_weight * prefill_tokens + params.output_weight * decode_tokens
        self.counters.charge(call.tenant, call.workflow_id, cost / _weight(ctx, call.tenant))

    @hookimpl
    def saga_observe(self, ctx: SchedulingContext, event: WorkflowEvent) -> None:
        self.counters.observe(event)


class PLASParams(PolicyParams):
    first_quantum_s: float = Field(
        2.0, gt=0.0, description="attained GPU seconds at which a program leaves the top queue"
    )
    quantum_growth: float = Field(4.0, gt=1.0, description="each next queue's boundary factor")
    levels: int = Field(6, ge=1, le=64, description="number of priority queues")
    starvation_s: float = Field(
        60.0, gt=0.0, description="a call waiting this long is promoted to the top queue"
    )


_LEVEL_SPAN = 1e9
"""Priority distance between two PLAS queues: larger than any arrival time in seconds."""


class PLASFairness(Policy):
    """Autellix PLAS: program-level least attained service (Luo et al., arXiv 2502.13965).

    A call's priority comes from the attained service (GPU seconds) of its whole program (the
    workflow), not of the call: programs that have received little go first, so short agents are
    not stuck behind long ones. As in Autellix, attained service is discretised into
    ``levels`` queues with geometrically growing boundaries (FCFS inside a queue, which keeps
    batches stable) and a call that waited ``starvation_s`` is promoted to the top queue.
    Attained service = max(own accounting from ``record_service``, ``WorkflowView.service_s``).
    """

    name = "plas"
    kind = FAIRNESS
    version = "1.0"
    summary = "Autellix PLAS: least attained service of the program (workflow) first"
    Params = PLASParams

    State = AttainedService

    def __init__(self, params: PolicyParams | None = None, state: object = None) -> None:
        super().__init__(params, state)
        p: PLASParams = self.params  # type: ignore[assignment]
        self.boundaries = [p.first_quantum_s * p.quantum_growth**i for i in range(p.levels - 1)]
        self.attained = self.state.by_workflow  # type: ignore[union-attr]
        self._lock = self.state.lock  # type: ignore[union-attr]

    def level(self, attained_s: float) -> int:
        return bisect.bisect_right(self.boundaries, attained_s)

    @hookimpl
    def saga_call_priority(
        self, ctx: SchedulingContext, call: CallView, workflow: WorkflowView, tenant: TenantView
    ) -> float:
        p: PLASParams = self.params  # type: ignore[assignment]
        if ctx.now_s - call.arrival_s >= p.starvation_s:
            return call.arrival_s
        attained = max(self.attained.get(call.workflow_id, 0.0), workflow.service_s)
        return self.level(attained) * _LEVEL_SPAN + call.arrival_s

    @hookimpl
    def saga_record_service(
        self,
        ctx: SchedulingContext,
        call: CallView,
        prefill_tokens: int,
        decode_tokens: int,
        gpu_s: float,
    ) -> None:
        with self._lock:
            self.attained[call.workflow_id] = self.attained.get(call.workflow_id, 0.0) + gpu_s

    @hookimpl
    def saga_observe(self, ctx: SchedulingContext, event: WorkflowEvent) -> None:
        if event.kind == "workflow_end":
            with self._lock:
                self.attained.pop(event.workflow_id, None)


class AFSParams(PolicyParams):
    delta_s: float = Field(
        1.0,
        ge=0.0,
        description="largest head start (normalised GPU seconds) a call can get from its "
        "workflow's slowdown and cached prefix: the bound's slack",
    )
    slowdown_share: float = Field(
        0.75, ge=0.0, le=1.0, description="share of delta_s driven by slowdown (rest: cache)"
    )
    default_slo_slowdown: float = Field(
        2.0, gt=1.0, description="slowdown target when the tenant's own is not above 1"
    )


class AFSFairness(Policy):
    """SAGA Agent Fair Share: weighted fairness on task completion time.

    Each tenant has a virtual counter ``S = GPU seconds delivered / weight`` (with VTC's lift). GPU
    seconds are the currency because a task's completion time is its isolated time stretched by
    the share of the GPU it gets: equal weighted GPU shares give backlogged tenants equal
    slowdowns. A waiting call's priority is ``S[tenant] - delta_s * g`` with ``g`` in [0, 1]::

        g = slowdown_share * clamp((slowdown - 1) / (slo - 1), 0, 1)
            + (1 - slowdown_share) * cached_tokens / prompt_tokens
        slowdown = workflow.elapsed_s / workflow.isolated_s

    so the calls of a tenant whose tasks are slowed more than its objective (``slo_slowdown``)
    are served first, and within that budget cheap (cached) calls first.

    Bound: for two tenants continuously backlogged over an interval (both always have a waiting
    call), and an admission order that follows the priorities, the difference of their counter
    increases (weighted normalised service) is at most ``2 * (U + delta_s)``, ``U`` as for VTC
    (largest normalised service one tenant's in-flight calls can still receive). Proof sketch: a
    call of f is admitted only when ``S_f - delta_s g_f <= S_g - delta_s g_g``, so ``S_f - S_g <=
    delta_s`` then; afterwards S_f grows only by the service of calls already in flight (<= U)
    until f's next admission; symmetrically for g. With an admission policy that regroups inside
    priority bands (saga's ``admission_band``), a call is admitted ahead of one at most a band
    better, so the bound becomes ``2 * (U + delta_s + admission_band)``.
    """

    name = "afs"
    kind = FAIRNESS
    version = "1.0"
    summary = "SAGA Agent Fair Share: weighted fairness on task slowdown, bounded cache bias"
    Params = AFSParams

    State = LiftedCounters

    @property
    def counters(self) -> LiftedCounters:
        return self.state  # type: ignore[no-any-return]

    def head_start(self, call: CallView, workflow: WorkflowView, tenant: TenantView) -> float:
        """``delta_s * g`` of the class docstring, in [0, delta_s]."""
        p: AFSParams = self.params  # type: ignore[assignment]
        if p.delta_s == 0.0:
            return 0.0
        slo = tenant.slo_slowdown if tenant.slo_slowdown > 1.0 else p.default_slo_slowdown
        if workflow.isolated_s > 0.0 and math.isfinite(workflow.elapsed_s):
            slowdown = workflow.elapsed_s / workflow.isolated_s
            pressure = min(max((slowdown - 1.0) / (slo - 1.0), 0.0), 1.0)
        else:
            pressure = 0.0
        cached = (
            min(max(call.cached_tokens / call.prompt_tokens, 0.0), 1.0)
            if call.prompt_tokens > 0
            else 0.0
        )
        g = p.slowdown_share * pressure + (1.0 - p.slowdown_share) * cached
        return p.delta_s * g

    @hookimpl
    def saga_call_priority(
        self, ctx: SchedulingContext, call: CallView, workflow: WorkflowView, tenant: TenantView
    ) -> float:
        return self.counters.value(call.tenant) - self.head_start(call, workflow, tenant)

    @hookimpl
    def saga_record_service(
        self,
        ctx: SchedulingContext,
        call: CallView,
        prefill_tokens: int,
        decode_tokens: int,
        gpu_s: float,
    ) -> None:
        self.counters.charge(call.tenant, call.workflow_id, gpu_s / _weight(ctx, call.tenant))

    @hookimpl
    def saga_observe(self, ctx: SchedulingContext, event: WorkflowEvent) -> None:
        self.counters.observe(event)


class DecayedService:
    """Each program's attained service, decayed exponentially (LAS's state, kept across
    activations): ``value`` as of ``at_s``; read at ``t`` as ``value * 2 ** -((t - at_s) / h)``."""

    __slots__ = ("by_workflow", "lock")

    def __init__(self) -> None:
        self.by_workflow: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()


class LASParams(PolicyParams):
    half_life_s: float = Field(
        60.0, gt=0.0, description="seconds in which a program's attained service halves"
    )
    output_weight: float = Field(
        1.0, ge=0.0, description="service of one decoded token, in prefill tokens"
    )


class LASFairness(Policy):
    """llm-d's program-aware fairness: least attained service per program, with decay.

    Source: llm-d-router ``plugins/flowcontrol/fairness/program-aware`` (a flow-control fairness
    plugin of llm-d's endpoint picker). Requests are grouped by program (the agent trajectory,
    our workflow); the queue serves the program that has attained the least service first, and
    attained service decays with a half-life, so a long program regains priority after a pause
    instead of starving forever behind new ones (unlike Autellix's PLAS, which never forgets but
    promotes a starving call). Service is what the router sees of a request: its computed prompt
    tokens plus ``output_weight`` per generated token. No tenant weights: llm-d orders programs.
    Approximation: our default half-life (60 s, about the Weka tool-gap p90) is our choice; the
    plugin's own default was not available to us.
    """

    name = "las"
    kind = FAIRNESS
    version = "1.0"
    summary = "llm-d program-aware: least decayed attained service per program first"
    Params = LASParams

    State = DecayedService

    def attained(self, workflow_id: str, now_s: float) -> float:
        """The program's decayed attained service at ``now_s``."""
        entry = self.state.by_workflow.get(workflow_id)  # type: ignore[union-attr]
        if entry is None:
            return 0.0
        value, at_s = entry
        half_life = self.params.half_life_s  # type: ignore[attr-defined]
        return value * 2.0 ** (-max(now_s - at_s, 0.0) / half_life)

    @hookimpl
    def saga_call_priority(
        self, ctx: SchedulingContext, call: CallView, workflow: WorkflowView, tenant: TenantView
    ) -> float:
        return self.attained(call.workflow_id, ctx.now_s)

    @hookimpl
    def saga_record_service(
        self,
        ctx: SchedulingContext,
        call: CallView,
        prefill_tokens: int,
        decode_tokens: int,
        gpu_s: float,
    ) -> None:
        served = prefill_tokens + self.params.output_weight * decode_tokens  # type: ignore[attr-defined]
        with self.state.lock:  # type: ignore[union-attr]
            value = self.attained(call.workflow_id, ctx.now_s) + served
            self.state.by_workflow[call.workflow_id] = (value, ctx.now_s)  # type: ignore[union-attr]

    @hookimpl
    def saga_observe(self, ctx: SchedulingContext, event: WorkflowEvent) -> None:
        if event.kind == "workflow_end":
            with self.state.lock:  # type: ignore[union-attr]
                self.state.by_workflow.pop(event.workflow_id, None)  # type: ignore[union-attr]

"""The policy set: an immutable snapshot of the active policies, with a typed facade.

An engine takes ``manager.current()`` once at the start of a scheduling step and asks every
decision of that step through it, so a live swap (which builds a new set) takes effect at the
next step and never in the middle of one. The set holds one active policy per kind its tier
calls (``PolicyManager.kinds``); each policy's hooks are validated and resolved by pluggy when
it is bound (``bind_policy``); the facade methods, one per hook as in tox 4's typed plugin
facade, add what an engine needs on top:

* every answer is checked (a route must name a given node, an admission order must be a
  permutation of the waiting calls, a priority must be a number...), so a buggy policy can never
  lose or duplicate a call;
* a policy that raises or answers nonsense is reported (``on_failure``), and the last good
  policy of its kind answers instead, then the kind's default (lru / session-affinity /
  priority / fcfs).
  After a failure the rest of the step skips the broken policy; the manager swaps it out for
  the next step.

Hot path: the facade resolves each hook to a plain bound method once, at construction, so a call
costs one Python call plus the check.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pluggy

from plugins import hookspecs
from plugins.base import Policy, PolicyError, PolicyParams
from plugins.hookspecs import ADMISSION, EVICTION, FAIRNESS, KINDS, PROJECT_NAME, ROUTING
from plugins.views import (
    CacheEntryView,
    CallView,
    Migration,
    NodeView,
    SchedulingContext,
    TenantView,
    WorkflowEvent,
    WorkflowView,
)


class PolicyDecisionError(PolicyError):
    """A policy answered something the engine cannot execute (unknown node, lost call...)."""


@dataclass(frozen=True, slots=True, eq=False)
class ActivePolicy:
    """A policy instance as activated: which class, which version, which validated params."""

    kind: str
    name: str
    version: str
    params: PolicyParams
    instance: Policy
    hooks: Mapping[str, Callable[..., Any]] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "params": self.params.model_dump(mode="json"),
        }


def _spec_argnames() -> dict[str, tuple[str, ...]]:
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    names: dict[str, tuple[str, ...]] = {}
    for name in hookspecs.ALL_HOOKS:
        spec = getattr(pm.hook, name).spec
        assert spec is not None
        names[name] = tuple(spec.argnames)
    return names


SPEC_ARGNAMES = _spec_argnames()
"""Each hook's argument names, in the spec's order (pluggy calls by keyword)."""


def _adapt(
    function: Callable[..., Any], argnames: Sequence[str], spec: Sequence[str]
) -> Callable[..., Any]:
    """Call ``function`` positionally with the full spec signature, passing only what it takes."""
    if tuple(argnames) == tuple(spec):
        return function
    positions = [spec.index(name) for name in argnames]

    def call(*args: Any) -> Any:
        return function(*[args[i] for i in positions])

    return call


def bind_policy(
    kind: str, name: str, version: str, params: PolicyParams, instance: Policy
) -> ActivePolicy:
    """Validate an instance's hooks with pluggy and resolve them to plain callables."""
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(instance, name=f"{kind}:{name}")  # validates argument names against the specs
    pm.check_pending()  # a saga_ method without a spec is an error, not a silent no-op
    hooks: dict[str, Callable[..., Any]] = {}
    for hook_name in hookspecs.ALL_HOOKS:
        impls = getattr(pm.hook, hook_name).get_hookimpls()
        if impls:
            impl = impls[-1]
            hooks[hook_name] = _adapt(impl.function, impl.argnames, SPEC_ARGNAMES[hook_name])
    return ActivePolicy(kind, name, version, params, instance, hooks)


_T = TypeVar("_T")

FailureReporter = Callable[[ActivePolicy, str, BaseException], None]


class PolicySet:
    """The active policies of one generation, and the typed facade over their hooks. A kind
    the set does not hold (another tier's) is None here, and asking its decision is an error."""

    def __init__(
        self,
        generation: int,
        active: Mapping[str, ActivePolicy],
        fallbacks: Mapping[str, Sequence[ActivePolicy]],
        on_failure: FailureReporter | None = None,
    ) -> None:
        self.generation = generation
        self.kinds = tuple(kind for kind in KINDS if kind in active)
        self.eviction = active.get(EVICTION)
        self.routing = active.get(ROUTING)
        self.admission = active.get(ADMISSION)
        self.fairness = active.get(FAIRNESS)
        self._on_failure = on_failure
        self._chains: dict[str, list[ActivePolicy]] = {}
        for kind in self.kinds:
            chain = [active[kind]]
            for candidate in fallbacks.get(kind, ()):
                if all(candidate.instance is not c.instance for c in chain):
                    chain.append(candidate)
            self._chains[kind] = chain
        self._start = dict.fromkeys(self.kinds, 0)  # index of the first policy not yet broken
        self._active = dict(active)

    # ------------------------------------------------------------------ description

    @property
    def names(self) -> tuple[str, ...]:
        """The active policies' names, in ``KINDS`` order (of the kinds this set holds)."""
        return tuple(self._active[kind].name for kind in self.kinds)

    @property
    def requires_oracle(self) -> bool:
        return any(p.instance.requires_oracle for p in self._active.values())

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"generation": self.generation}
        out.update({kind: self._active[kind].describe() for kind in self.kinds})
        return out

    def __repr__(self) -> str:
        return f"<PolicySet gen={self.generation} {'/'.join(self.names)}>"

    # ------------------------------------------------------------------ machinery

    def _fail(self, kind: str, index: int, hook: str, exc: BaseException) -> None:
        if self._start[kind] <= index:
            self._start[kind] = index + 1
        if self._on_failure is not None:
            with contextlib.suppress(Exception):  # reporting must not break scheduling
                self._on_failure(self._chains[kind][index], hook, exc)

    def _decide(
        self, kind: str, hook: str, args: tuple[Any, ...], check: Callable[[Any], _T]
    ) -> _T:
        chain = self._chains.get(kind)
        if chain is None:
            raise PolicyError(f"{hook}: this tier holds no {kind} policy (it holds "
                              f"{', '.join(self.kinds)})")
        index = self._start[kind]
        while index < len(chain):
            fn = chain[index].hooks.get(hook)
            if fn is not None:
                try:
                    result = fn(*args)
                    if result is not None:
                        return check(result)
                except Exception as exc:
                    self._fail(kind, index, hook, exc)
            index += 1
        raise PolicyError(f"no {kind} policy answered {hook}")

    def _notify(self, hook: str, args: tuple[Any, ...]) -> None:
        for kind in self.kinds:
            index = self._start[kind]
            chain = self._chains[kind]
            if index >= len(chain):
                continue
            fn = chain[index].hooks.get(hook)
            if fn is not None:
                try:
                    fn(*args)
                except Exception as exc:
                    self._fail(kind, index, hook, exc)

    # ------------------------------------------------------------------ eviction

    def eviction_order(
        self, ctx: SchedulingContext, candidates: Sequence[CacheEntryView]
    ) -> list[int]:
        """Entry ids, first to evict first: every candidate exactly once (see the hookspec)."""

        def check(result: Any) -> list[int]:
            if not isinstance(result, list | tuple):
                raise PolicyDecisionError(f"eviction order must be a list, got {result!r}")
            valid = {e.entry_id for e in candidates}
            seen: set[int] = set()
            order: list[int] = []
            for entry_id in result:
                if entry_id in valid and entry_id not in seen:
                    seen.add(entry_id)
                    order.append(entry_id)
            if len(order) < len(valid):
                order.extend(e.entry_id for e in candidates if e.entry_id not in seen)
            return order

        return self._decide(EVICTION, "saga_eviction_order", (ctx, candidates), check)

    def tool_retention_s(self, ctx: SchedulingContext, workflow: WorkflowView) -> float:
        """Seconds to pin the workflow's context now that its agent starts a tool (>= 0)."""
        return self._decide(EVICTION, "saga_tool_retention_s", (ctx, workflow), _check_duration)

    # ------------------------------------------------------------------ routing

    def route_call(
        self,
        ctx: SchedulingContext,
        call: CallView,
        workflow: WorkflowView,
        nodes: Sequence[NodeView],
    ) -> str:
        """Node id for the call: always one of ``nodes``."""
        if not nodes:
            raise PolicyError("route_call needs at least one node")

        def check(result: Any) -> str:
            for n in nodes:
                if n.node_id == result:
                    return n.node_id
            raise PolicyDecisionError(f"routed to unknown node {result!r}")

        return self._decide(ROUTING, "saga_route_call", (ctx, call, workflow, nodes), check)

    # ------------------------------------------------------------------ admission

    def admission_order(
        self,
        ctx: SchedulingContext,
        node: NodeView,
        waiting: Sequence[CallView],
        priorities: Mapping[str, float],
    ) -> list[str]:
        """Call ids in admission order: a permutation of ``waiting`` (nothing lost or doubled)."""

        def check(result: Any) -> list[str]:
            order = list(result)
            if len(order) != len(waiting) or set(order) != {c.call_id for c in waiting}:
                raise PolicyDecisionError(
                    "admission order is not a permutation of the waiting calls"
                )
            return order

        return self._decide(
            ADMISSION, "saga_admission_order", (ctx, node, waiting, priorities), check
        )

    def rebalance(
        self,
        ctx: SchedulingContext,
        nodes: Sequence[NodeView],
        workflows: Sequence[WorkflowView],
    ) -> list[Migration]:
        """Migrations between known nodes, each workflow at most once, none in a running call."""

        def check(result: Any) -> list[Migration]:
            node_ids = {n.node_id for n in nodes}
            movable = {w.workflow_id for w in workflows if w.state != "running"}
            moves: list[Migration] = []
            moved: set[str] = set()
            for m in result:
                if not isinstance(m, Migration):
                    raise PolicyDecisionError(f"rebalance must return Migrations, got {m!r}")
                if m.source not in node_ids or m.target not in node_ids:
                    raise PolicyDecisionError(f"migration between unknown nodes: {m!r}")
                if m.source != m.target and m.workflow_id in movable and m.workflow_id not in moved:
                    moved.add(m.workflow_id)
                    moves.append(m)
            return moves

        return self._decide(ROUTING, "saga_rebalance", (ctx, nodes, workflows), check)

    # ------------------------------------------------------------------ fairness

    def call_priority(
        self, ctx: SchedulingContext, call: CallView, workflow: WorkflowView, tenant: TenantView
    ) -> float:
        """Priority of a waiting call, lower first (never NaN)."""
        return self._decide(
            FAIRNESS, "saga_call_priority", (ctx, call, workflow, tenant), _check_priority
        )

    def priorities(
        self,
        ctx: SchedulingContext,
        waiting: Sequence[CallView],
        workflow: Callable[[str], WorkflowView],
        tenant: Callable[[str], TenantView],
    ) -> dict[str, float]:
        """Convenience: ``call_priority`` of every waiting call, keyed by call id."""
        return {
            c.call_id: self.call_priority(ctx, c, workflow(c.workflow_id), tenant(c.tenant))
            for c in waiting
        }

    def record_service(
        self,
        ctx: SchedulingContext,
        call: CallView,
        prefill_tokens: int,
        decode_tokens: int,
        gpu_s: float,
    ) -> None:
        """Tell every active policy that cares that ``call`` received service."""
        self._notify("saga_record_service", (ctx, call, prefill_tokens, decode_tokens, gpu_s))

    # ------------------------------------------------------------------ all kinds

    def observe(self, ctx: SchedulingContext, event: WorkflowEvent) -> None:
        """Forward a workflow event to every active policy that implements ``saga_observe``."""
        self._notify("saga_observe", (ctx, event))


def _check_duration(result: Any) -> float:
    value = float(result)
    if not (math.isfinite(value) and value >= 0.0):
        raise PolicyDecisionError(f"retention must be a finite number >= 0, got {result!r}")
    return value


def _check_priority(result: Any) -> float:
    value = float(result)
    if math.isnan(value):
        raise PolicyDecisionError("priority is NaN")
    return value

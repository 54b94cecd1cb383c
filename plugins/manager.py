"""The live policy manager: installed policies, the active set, swaps, failures, the AEG.

Engines use four things: ``current()`` once per scheduling step (an immutable
:class:`~plugins.policyset.PolicySet`), ``observe(event)`` for workflow events, ``predict`` to
back ``SchedulingContext.predict``, and ``events`` for reports. Operators use ``activate`` /
``activate_set``.

Swaps are atomic: parameters are validated and the new instance is built *before* the lock is
taken; under the lock the manager builds the next set and publishes it with one reference
assignment. ``current()`` is a single attribute read, so a step sees either the old set or the
new one, never a mix. A policy that raises at run time is replaced by the last good policy of its
kind (a small stack of previously active, never-failed policies), or by the kind's default
(lru / session-affinity / priority / fcfs), and a ``failure`` event reports it.

A manager holds the kinds its tier calls (``kinds``): the gateway's only routing
(``CLUSTER_KINDS``), a node's eviction, admission and fairness (``NODE_KINDS``), the simulated
cluster of ``saga bench`` all four. ``activate_set`` skips the kinds a tier does not hold (a
named set names all four), ``activate`` refuses them.
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from plugins.aeg import AEGRegistry
from plugins.base import Policy, PolicyConfigError, PolicyParams
from plugins.builtin import DEFAULT_FALLBACKS, SAGA_DEFAULTS
from plugins.events import ACTIVATED, DISCOVERY_ERROR, FAILURE, PolicyEvent
from plugins.hookspecs import KINDS
from plugins.policyset import ActivePolicy, PolicySet, bind_policy
from plugins.registry import ENTRY_POINT_GROUP, PolicyRegistry
from plugins.views import Prediction, SchedulingContext, StaticContext, WorkflowEvent

PolicyChoice = str | tuple[str, Mapping[str, Any] | None]
"""A policy to activate: its name, or (name, params)."""

_LAST_GOOD_DEPTH = 4


class PolicyManager:
    """Owns the active policies of one engine or cluster (see the module docstring)."""

    def __init__(
        self,
        registry: PolicyRegistry | list[type[Policy]] | tuple[type[Policy], ...] | None = None,
        *,
        initial: Mapping[str, PolicyChoice] | None = None,
        aeg: AEGRegistry | None = None,
        max_events: int = 1000,
        kinds: Sequence[str] = KINDS,
    ) -> None:
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds:
            raise PolicyConfigError(f"unknown policy kinds {unknown or list(kinds)!r}; "
                                    f"kinds: {', '.join(KINDS)}", field="kinds")
        self.kinds: tuple[str, ...] = tuple(k for k in KINDS if k in kinds)
        if registry is None:
            registry = PolicyRegistry.discover()
        elif not isinstance(registry, PolicyRegistry):
            registry = PolicyRegistry(registry)
        self.registry = registry
        self.aeg = aeg if aeg is not None else AEGRegistry()
        self._lock = threading.RLock()
        self._states: dict[tuple[str, str], Any] = {}
        self._events: deque[PolicyEvent] = deque(maxlen=max_events)
        self._listeners: list[Callable[[PolicyEvent], None]] = []
        self._generation = 0
        self._defaults = {
            kind: self._build(kind, DEFAULT_FALLBACKS[kind], DEFAULT_FALLBACKS[kind].Params())
            for kind in self.kinds
        }
        self._last_good: dict[str, list[ActivePolicy]] = {kind: [] for kind in self.kinds}
        self._failed: set[int] = set()
        for error in registry.errors:
            self._emit(PolicyEvent(DISCOVERY_ERROR, error, time.time(), 0))
        chosen = dict(initial or {})
        active: dict[str, ActivePolicy] = {}
        for kind in self.kinds:
            choice = chosen.get(kind)
            if choice is None:
                choice = self._initial_name(kind)
            active[kind] = (
                self._defaults[kind] if choice is None else self._prepare(kind, *_split(choice))
            )
        self._active = active
        self._current = self._publish()
        for policy in active.values():
            self._emit_activated(policy, self._current.generation)

    @classmethod
    def from_entry_points(cls, group: str = ENTRY_POINT_GROUP, **kwargs: Any) -> PolicyManager:
        """Built-ins plus every policy installed in the entry-point group ``group``."""
        return cls(PolicyRegistry.discover(group), **kwargs)

    def _initial_name(self, kind: str) -> str | None:
        for name in (SAGA_DEFAULTS[kind], DEFAULT_FALLBACKS[kind].name):
            if (kind, name) in self.registry:
                return name
        names = self.registry.names(kind)
        return names[0] if names else None

    # ------------------------------------------------------------------ building

    def _state_of(self, kind: str, cls: type[Policy]) -> Any:
        """The one state object of a policy (see ``Policy.State``), made on first use."""
        if cls.State is None:
            return None
        key = (kind, cls.name)
        with self._lock:
            state = self._states.get(key)
            if state is None:
                state = self._states[key] = cls.State()
        return state

    def _build(self, kind: str, cls: type[Policy], params: PolicyParams) -> ActivePolicy:
        try:
            state = self._state_of(kind, cls)
            # Only policies that declare a State take one (third-party policies need not).
            instance = cls(params) if state is None else cls(params, state)
        except PolicyConfigError:
            raise
        except Exception as exc:
            raise PolicyConfigError(
                f"{kind} policy {cls.name!r} cannot start with {params!r}: "
                f"{type(exc).__name__}: {exc}",
                field="params",
            ) from exc
        return bind_policy(kind, cls.name, cls.version, params, instance)

    def _prepare(self, kind: str, name: str, params: Mapping[str, Any] | None) -> ActivePolicy:
        """Validate and build, outside any lock; raises PolicyConfigError naming the field."""
        if not isinstance(name, str):
            raise PolicyConfigError(f"policy name must be a string, got {name!r}", field="name")
        if kind in KINDS and kind not in self.kinds:
            raise PolicyConfigError(
                f"this tier holds no {kind} policies (it holds {', '.join(self.kinds)})",
                field="kind")
        cls = self.registry.get(kind, name)
        if isinstance(params, Mapping):
            params = dict(params)
        validated = cls.validate_params(params)
        return self._build(kind, cls, validated)

    def _publish(self) -> PolicySet:
        """Build and publish the next set; the caller holds the lock (or is __init__)."""
        self._generation += 1
        fallbacks = {
            kind: [*reversed(self._last_good[kind][-1:]), self._defaults[kind]]
            for kind in self.kinds
        }
        new_set = PolicySet(self._generation, self._active, fallbacks, self._on_failure)
        self._current = new_set
        return new_set

    # ------------------------------------------------------------------ public API

    def current(self) -> PolicySet:
        """The set to use for one whole scheduling step (take it once per step)."""
        return self._current

    def activate(
        self, kind: str, name: str, params: Mapping[str, Any] | None = None
    ) -> ActivePolicy:
        """Make ``name`` the active ``kind`` policy from the next step on.

        Validates first: an unknown kind or name, a policy of another kind or a bad parameter
        raises :class:`PolicyConfigError` naming the field, and the active policy is unchanged.
        """
        new = self._prepare(kind, name, params)
        with self._lock:
            self._swap({kind: new})
        return new

    def activate_set(
        self,
        eviction: PolicyChoice | None = None,
        routing: PolicyChoice | None = None,
        admission: PolicyChoice | None = None,
        fairness: PolicyChoice | None = None,
    ) -> PolicySet:
        """Activate up to one policy per kind in one swap (all validated before any changes);
        the kinds this tier does not hold are skipped."""
        prepared: dict[str, ActivePolicy] = {}
        for kind, choice in (
            ("eviction", eviction),
            ("routing", routing),
            ("admission", admission),
            ("fairness", fairness),
        ):
            if choice is not None and kind in self.kinds:
                prepared[kind] = self._prepare(kind, *_split(choice))
        with self._lock:
            if prepared:
                self._swap(prepared)
            return self._current

    def _swap(self, new: Mapping[str, ActivePolicy]) -> None:
        for kind, policy in new.items():
            previous = self._active[kind]
            if id(previous) not in self._failed and previous is not self._defaults[kind]:
                stack = self._last_good[kind]
                stack.append(previous)
                del stack[:-_LAST_GOOD_DEPTH]
            self._active[kind] = policy
        published = self._publish()
        for policy in new.values():
            self._emit_activated(policy, published.generation)

    def _emit_activated(self, policy: ActivePolicy, generation: int) -> None:
        self._emit(
            PolicyEvent(
                ACTIVATED,
                f"{policy.kind} policy {policy.name!r} v{policy.version} active",
                time.time(),
                generation,
                kind=policy.kind,
                name=policy.name,
                version=policy.version,
                params=policy.params.model_dump(mode="json"),
            )
        )

    def _on_failure(self, policy: ActivePolicy, hook: str, exc: BaseException) -> None:
        """Called by a PolicySet when ``policy`` raised in ``hook``: report, then replace."""
        with self._lock:
            kind = policy.kind
            self._failed.add(id(policy))
            replacement: ActivePolicy | None = None
            if self._active[kind] is policy:
                stack = self._last_good[kind]
                while stack and id(stack[-1]) in self._failed:
                    stack.pop()
                replacement = stack.pop() if stack else self._defaults[kind]
                self._active[kind] = replacement
                self._publish()
            elif policy is self._defaults[kind]:
                replacement = None  # the default itself failed: nothing lower to fall back to
            self._emit(
                PolicyEvent(
                    FAILURE,
                    f"{kind} policy {policy.name!r} raised in {hook}: "
                    f"{type(exc).__name__}: {exc}"
                    + (f"; replaced by {replacement.name!r}" if replacement is not None else ""),
                    time.time(),
                    self._generation,
                    kind=kind,
                    name=policy.name,
                    version=policy.version,
                    params=policy.params.model_dump(mode="json"),
                    hook=hook,
                    error=f"{type(exc).__name__}: {exc}",
                    traceback="".join(traceback.format_exception(exc)),
                    replaced_by=replacement.name if replacement is not None else None,
                )
            )

    def active(self) -> dict[str, ActivePolicy]:
        """The active policy of each kind (what ``current()`` holds)."""
        return dict(self._active)

    def describe(self) -> dict[str, Any]:
        return self._current.describe()

    # ------------------------------------------------------------------ events

    @property
    def events(self) -> list[PolicyEvent]:
        """Recent reports, oldest first (bounded)."""
        with self._lock:
            return list(self._events)

    def subscribe(self, listener: Callable[[PolicyEvent], None]) -> None:
        """Call ``listener`` with every future event (from the thread that produced it)."""
        with self._lock:
            self._listeners.append(listener)

    def _emit(self, event: PolicyEvent) -> None:
        self._events.append(event)
        for listener in list(self._listeners):
            with contextlib.suppress(Exception):  # a broken listener must not break the manager
                listener(event)

    # ------------------------------------------------------------------ workflows and the AEG

    def observe(self, event: WorkflowEvent, ctx: SchedulingContext | None = None) -> None:
        """Learn from a workflow event (AEG), then forward it to the active policies."""
        self.aeg.observe(event)
        if ctx is None:
            ctx = StaticContext(now_s=event.time_s, predictor=self)
        self._current.observe(ctx, event)

    def predict(
        self, workflow_id: str, now_s: float | None = None, context_tokens: int | None = None
    ) -> Prediction:
        """The AEG's forecast for a live workflow (backs ``SchedulingContext.predict``)."""
        return self.aeg.predict(workflow_id, now_s, context_tokens)


def _split(choice: PolicyChoice) -> tuple[str, Mapping[str, Any] | None]:
    if isinstance(choice, tuple):
        if len(choice) != 2:
            raise PolicyConfigError(
                f"a policy choice is a name or (name, params), got {choice!r}", field="policy"
            )
        return choice[0], choice[1]
    return choice, None

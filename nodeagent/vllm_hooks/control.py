"""The control channel of a SAGA scheduler: live policy swaps and workflow boundaries.

In vLLM V1 the scheduler lives in the engine-core process; the node agent reaches it through
vLLM's *utility calls*: ``EngineCore`` answers a utility request by looking the method name up
on itself. :func:`install_engine_core_utility` adds one method, ``saga_control(command,
payload)``, to ``EngineCore``; it forwards to the scheduler's :class:`SchedulerControl`. The
node agent calls it with the engine client it already holds::

    await async_llm.engine_core.call_utility_async(
        "saga_control", "tool_start", {"workflow_id": "wf-17", "tool_name": "bash"})

Commands (payload keys) and replies (JSON-able dicts):

* ``activate`` ``{kind, name, params?}``: swap one policy; ``activate_set``
  ``{policy_set}`` or ``{eviction?, admission?, fairness?}``: swap several at once (a
  named set's routing policy is the cluster tier's and skipped here). Validated
  here (a bad name or parameter raises, naming the field, and nothing changes); the new set is
  used from the next ``schedule()`` call, never in the middle of a step.
* ``tool_start`` ``{workflow_id, tool_name?}``, ``workflow_end`` ``{workflow_id}``: workflow
  boundaries, time-stamped on receipt and applied before the next step or the next added
  request, whichever comes first (they touch the block pool, which only the engine's scheduling
  thread may change; an idle engine does not step).
* ``tool_end`` ``{workflow_id}``: the tool finished (the AEG learns its latency). A pin stays
  until the next call is admitted or its TTL ends, so the prefix is not exposed while that call
  queues.
* ``set_tenants`` ``{tenants: {name: {weight?, slo_slowdown?, slo_percentile?}}}``.
* ``policy_failures`` ``{}``: policies that raised since the last call (the manager has already
  replaced them by the last good policy of their kind).
* ``describe`` ``{}``: active policies, generation and retention/eviction counters.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nodeagent.host.policies import check_runnable_live
from plugins.events import FAILURE, PolicyEvent
from plugins.hookspecs import NODE_KINDS
from plugins.manager import PolicyManager
from plugins.named_sets import parse_policy_set
from plugins.views import TenantView

COMMANDS = (
    "activate",
    "activate_set",
    "tool_start",
    "tool_end",
    "workflow_end",
    "set_tenants",
    "load_graphs",
    "policy_failures",
    "describe",
)
UTILITY_METHOD = "saga_control"
MAX_KEPT_FAILURES = 100


class ControlError(ValueError):
    """A control command is malformed; ``field`` names the offending payload key."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Boundary:
    """A workflow boundary waiting for the next step: ``tool_start`` or ``workflow_end``."""

    kind: str
    workflow_id: str
    time_s: float
    tool_name: str | None = None


def _string(payload: Mapping[str, Any], key: str, required: bool = True) -> str | None:
    value = payload.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ControlError(f"{key} must be a non-empty string, got {value!r}", field=key)
    return value


def parse_tenants(raw: Any) -> dict[str, TenantView]:
    """``{name: {weight, slo_slowdown, slo_percentile}}`` -> tenant views (validated)."""
    if not isinstance(raw, Mapping):
        raise ControlError("tenants must be a mapping of name -> settings", field="tenants")
    tenants: dict[str, TenantView] = {}
    for name, spec in raw.items():
        if not isinstance(name, str) or not name:
            raise ControlError(f"tenant name must be a string, got {name!r}", field="tenants")
        spec = spec or {}
        if not isinstance(spec, Mapping):
            raise ControlError(f"tenants.{name} must be a mapping", field=f"tenants.{name}")
        values: dict[str, float] = {}
        for key in ("weight", "slo_slowdown", "slo_percentile"):
            if key in spec:
                value = spec[key]
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ControlError(
                        f"tenants.{name}.{key} must be a number", field=f"tenants.{name}.{key}"
                    )
                if not math.isfinite(value) or value <= 0:
                    raise ControlError(
                        f"tenants.{name}.{key} must be > 0", field=f"tenants.{name}.{key}"
                    )
                values[key] = float(value)
        unknown = set(spec) - {"weight", "slo_slowdown", "slo_percentile"}
        if unknown:
            key = sorted(unknown)[0]
            raise ControlError(f"unknown tenant setting {key!r}", field=f"tenants.{name}.{key}")
        tenants[name] = TenantView(name=name, **values)
    return tenants


class SchedulerControl:
    """Validates commands at once; queues the ones that change scheduler state for the next step."""

    def __init__(
        self,
        manager: PolicyManager,
        describe: Callable[[], dict[str, Any]],
        clock: Callable[[], float],
    ) -> None:
        self.manager = manager
        self._clock = clock
        self._describe = describe
        self._lock = threading.Lock()
        self._boundaries: deque[Boundary] = deque()
        self._failures: deque[PolicyEvent] = deque(maxlen=MAX_KEPT_FAILURES)
        manager.subscribe(self._on_policy_event)
        self.tenants: Mapping[str, TenantView] = {}

    def _activate_set(self, choices: Mapping[str, Any]) -> None:
        """Swap several kinds at once; a policy a live engine cannot run (an oracle) refuses
        the whole set, as the simulated node does (``nodeagent.host.policies``)."""
        for kind, choice in choices.items():
            check_runnable_live(self.manager, kind, _name_of(choice))
        self.manager.activate_set(**choices)

    def handle(self, command: str, payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
        payload = payload or {}
        if not isinstance(payload, Mapping):
            raise ControlError("payload must be a mapping", field="payload")
        if command == "activate":
            kind = _string(payload, "kind")
            name = _string(payload, "name")
            params = payload.get("params")
            if params is not None and not isinstance(params, Mapping):
                raise ControlError("params must be a mapping", field="params")
            check_runnable_live(self.manager, kind, name)
            self.manager.activate(kind, name, params)  # type: ignore[arg-type]
            return self.manager.describe()
        if command == "activate_set":
            named = payload.get("policy_set")
            if named is not None:
                if not isinstance(named, str):
                    raise ControlError("policy_set must be a string", field="policy_set")
                self._activate_set(parse_policy_set(named).as_kwargs())
            else:
                kinds = NODE_KINDS
                choices = {k: payload[k] for k in kinds if k in payload}
                if not choices:
                    raise ControlError(
                        "activate_set needs policy_set or eviction/admission/fairness",
                        field="policy_set",
                    )
                self._activate_set({k: _choice(k, v) for k, v in choices.items()})
            return self.manager.describe()
        if command == "tool_start":
            workflow_id = _string(payload, "workflow_id")
            tool_name = _string(payload, "tool_name", required=False)
            return self._queue(Boundary("tool_start", workflow_id, self._clock(), tool_name))  # type: ignore[arg-type]
        if command == "tool_end":
            workflow_id = _string(payload, "workflow_id")
            return self._queue(Boundary("tool_end", workflow_id, self._clock()))  # type: ignore[arg-type]
        if command == "workflow_end":
            workflow_id = _string(payload, "workflow_id")
            return self._queue(Boundary("workflow_end", workflow_id, self._clock()))  # type: ignore[arg-type]
        if command == "set_tenants":
            self.tenants = parse_tenants(payload.get("tenants"))
            return {"tenants": sorted(self.tenants)}
        if command == "load_graphs":
            graphs = payload.get("graphs")
            if not isinstance(graphs, list) or not all(isinstance(g, Mapping) for g in graphs):
                raise ControlError("graphs must be a list of execution graphs", field="graphs")
            loaded = [self.manager.aeg.load(graph).template for graph in graphs]
            return {"templates": loaded}
        if command == "policy_failures":
            return {"failures": self._drain_failures()}
        if command == "describe":
            return self._describe()
        raise ControlError(
            f"unknown command {command!r}; expected one of {', '.join(COMMANDS)}", field="command"
        )

    def _on_policy_event(self, event: PolicyEvent) -> None:
        if event.type == FAILURE:
            with self._lock:
                self._failures.append(event)

    def _drain_failures(self) -> list[dict[str, Any]]:
        """Policy failures reported since the last drain (the manager already fell back)."""
        with self._lock:
            fresh = list(self._failures)
            self._failures.clear()
        return [
            {
                "kind": e.kind,
                "name": e.name,
                "hook": e.hook,
                "error": e.error,
                "replaced_by": e.replaced_by,
                "generation": e.generation,
            }
            for e in fresh
        ]

    def _queue(self, boundary: Boundary) -> dict[str, Any]:
        with self._lock:
            self._boundaries.append(boundary)
            return {"queued": len(self._boundaries)}

    def drain(self) -> list[Boundary]:
        """The boundaries received since the last step, oldest first."""
        with self._lock:
            items = list(self._boundaries)
            self._boundaries.clear()
        return items


def _name_of(choice: Any) -> str:
    return choice if isinstance(choice, str) else choice[0]


def _choice(kind: str, value: Any) -> str | tuple[str, Mapping[str, Any] | None]:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        params = value.get("params")
        if params is not None and not isinstance(params, Mapping):
            raise ControlError(f"{kind}.params must be a mapping", field=f"{kind}.params")
        return (value["name"], params)
    raise ControlError(f"{kind} must be a policy name or {{name, params}}", field=kind)


def _engine_core_saga_control(
    self: Any, command: str, payload: dict[str, Any] | None = None
) -> dict[str, Any]:
    """EngineCore utility: forward a SAGA control command to the scheduler."""
    handler = getattr(self.scheduler, "saga_control", None)
    if handler is None:
        raise RuntimeError(
            "saga_control: this engine's scheduler is not SAGA's "
            "(start vLLM with --scheduler-cls nodeagent.vllm_hooks.SagaScheduler)"
        )
    return handler(command, payload)  # type: ignore[no-any-return]


def install_engine_core_utility() -> None:
    """Add ``saga_control`` to vLLM's ``EngineCore`` (idempotent).

    Called when a SAGA scheduler is built, which happens inside the engine-core process, so the
    method exists in the process that answers utility calls. ``register`` is the same for vLLM's
    ``vllm.general_plugins`` entry-point group, should a deployment prefer to install it there.
    """
    from vllm.v1.engine.core import EngineCore

    if getattr(EngineCore, UTILITY_METHOD, None) is not _engine_core_saga_control:
        setattr(EngineCore, UTILITY_METHOD, _engine_core_saga_control)


register = install_engine_core_utility

"""A recording policy: wraps the real policy under test, records what it saw and answered.

``recording_registry(recorder)`` returns a :class:`~plugins.registry.PolicyRegistry` holding,
for every installed policy class, a subclass with the same name, kind, version and parameters
whose hooks call the real implementation and append a :class:`Record` (the hook, the views it
was given, the answer) to ``recorder``. A host built on that registry (a ``PolicyManager`` over
it) activates and swaps policies by name exactly as it would the real ones (live swaps through
its own control path included), so what is recorded is what the real policy saw on that host.

The recorder can also *script* routing for a scenario's setup calls (``placement``): a call the
script places is routed there without asking the policy, so every host reaches the same node
states before the call the scenario probes, whatever the policy under test would have done.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from plugins.base import Policy
from plugins.hookspecs import hookimpl
from plugins.registry import PolicyRegistry, implemented_hooks
from plugins.views import CallView, WorkflowView

Placement = Callable[[CallView, WorkflowView], "str | None"]


@dataclass(slots=True)
class Record:
    seq: int
    hook: str
    policy: str
    instance: int
    step: int
    phase: str
    now_s: float
    args: dict[str, Any]
    result: Any
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def name(self) -> str:
        return self.hook.removeprefix("saga_")


class Recorder:
    """What the policies of one host saw and decided, in order (thread-safe)."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.step = 0
        """The host's scheduling step (its adapter counts them); a policy set must not change
        within one."""
        self.phase = ""
        """A label the scenario driver sets as it goes (which event came last)."""
        self.placement: Placement | None = None
        self.id_map: dict[str, str] = {}
        """Host workflow ids -> the scenario's (the gateway names workflows by primary key)."""
        self._seq = itertools.count()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ normalising
    def wid(self, workflow_id: str | None) -> str | None:
        if workflow_id is None:
            return None
        return self.id_map.get(workflow_id, workflow_id)

    def cid(self, call_id: str) -> str:
        head, sep, seq = call_id.rpartition("#")
        if sep and head in self.id_map:
            return f"{self.id_map[head]}#{seq}"
        return call_id

    def normal(self, value: Any) -> Any:
        """Views as plain dicts (scenario ids), sequences as lists, mappings as dicts."""
        if is_dataclass(value) and not isinstance(value, type):
            out = {f.name: self.normal(getattr(value, f.name)) for f in fields(value)}
            if "workflow_id" in out:
                out["workflow_id"] = self.wid(out["workflow_id"])
            if "call_id" in out:
                out["call_id"] = self.cid(out["call_id"])
            if "cached_workflows" in out:
                out["cached_workflows"] = sorted(self.wid(w) for w in out["cached_workflows"])
            return out
        if isinstance(value, Mapping):
            return {self.cid(str(k)): self.normal(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.normal(v) for v in value]
        if isinstance(value, str):
            return self.cid(value)
        return value

    # ------------------------------------------------------------------ recording
    def add(self, hook: str, policy: Policy, bound: Mapping[str, Any], result: Any) -> None:
        ctx = bound.get("ctx")
        now = float(getattr(ctx, "now_s", 0.0)) if ctx is not None else 0.0
        args = {k: self.normal(v) for k, v in bound.items() if k not in ("self", "ctx")}
        with self._lock:
            self.records.append(Record(
                next(self._seq), hook, policy.name, id(policy), self.step, self.phase, now,
                args, self.normal(result),
                raw={k: v for k, v in bound.items() if k != "self"} | {"result": result}))

    # ------------------------------------------------------------------ queries
    def of(self, hook: str, *, phase: str | None = None,
           where: Callable[[Record], bool] | None = None) -> list[Record]:
        name = hook if hook.startswith("saga_") else f"saga_{hook}"
        return [r for r in self.records
                if r.hook == name and (phase is None or r.phase == phase)
                and (where is None or where(r))]

    def decided(self, hook: str, **kw: Any) -> list[Any]:
        return [r.result for r in self.of(hook, **kw)]


def _recording_hook(recorder: Recorder, hook: str, original: Callable[..., Any]
                    ) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def wrapper(self: Policy, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs).arguments
        if hook == "saga_route_call" and recorder.placement is not None:
            scripted = recorder.placement(bound["call"], bound["workflow"])
            if scripted is not None:
                return scripted  # a scenario's setup call: not the policy's decision
        result = original(self, *args, **kwargs)
        recorder.add(hook, self, bound, result)
        return result

    return hookimpl(wrapper)


def recording_class(cls: type[Policy], recorder: Recorder) -> type[Policy]:
    """``cls`` with every hook recorded into ``recorder`` (same name, kind, version, Params)."""
    namespace: dict[str, Any] = {"__module__": __name__, "__doc__": cls.__doc__}
    for hook in sorted(implemented_hooks(cls)):
        namespace[hook] = _recording_hook(recorder, hook, getattr(cls, hook))
    return type(f"Recording{cls.__name__}", (cls,), namespace)


def recording_registry(recorder: Recorder, base: PolicyRegistry | None = None) -> PolicyRegistry:
    """Every policy of ``base`` (default: what is installed) as its recording subclass."""
    base = base if base is not None else PolicyRegistry.discover()
    return PolicyRegistry([recording_class(info.cls, recorder) for info in base.infos()],
                          source="conformance recording")


def steps_with_mixed_sets(recorder: Recorder, kind_hooks: Sequence[str]) -> list[int]:
    """Steps in which hooks of one kind were answered by two different policy instances."""
    by_step: dict[int, set[int]] = {}
    for r in recorder.records:
        if r.hook in kind_hooks:
            by_step.setdefault(r.step, set()).add(r.instance)
    return sorted(step for step, instances in by_step.items() if len(instances) > 1)

"""Which policies are installed: the built-ins plus the entry-point group ``saga.policies``.

An entry point may name a :class:`~plugins.base.Policy` subclass, a module (its
``__saga_policies__`` sequence, or else every concrete Policy subclass defined in it) or a
sequence of classes. The built-in module is always loaded first, even when no entry point is
installed (datasette's DEFAULT_PLUGINS pattern), and a class reached twice is registered once.
A broken third-party entry point is recorded in :attr:`PolicyRegistry.errors`, never fatal: one
bad package must not take the control plane down.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from plugins.base import Policy, PolicyConfigError, check_policy_class
from plugins.hookspecs import ALL_HOOKS, HOOKS_BY_KIND, KINDS, PROJECT_NAME

ENTRY_POINT_GROUP = "saga.policies"
DEFAULT_POLICY_MODULES: tuple[str, ...] = ("plugins.builtin",)
_IMPL_ATTR = PROJECT_NAME + "_impl"  # where pluggy's HookimplMarker stores its options


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    """What ``saga policies list`` shows about one installed policy."""

    kind: str
    name: str
    version: str
    summary: str
    requires_oracle: bool
    source: str
    cls: type[Policy]

    def params_schema(self) -> dict[str, Any]:
        return self.cls.params_schema()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "summary": self.summary,
            "requires_oracle": self.requires_oracle,
            "source": self.source,
            "params_schema": self.params_schema(),
        }


def implemented_hooks(cls: type[Policy]) -> set[str]:
    """Names of the ``@hookimpl`` methods a policy class defines (inherited ones included)."""
    found = set()
    for attr, value in inspect.getmembers(cls):
        if attr.startswith("saga_") and getattr(value, _IMPL_ATTR, None) is not None:
            found.add(attr)
    return found


def check_hooks(cls: type[Policy]) -> None:
    """A policy must answer every decision hook of its kind and none of the other kinds'."""
    hooks = implemented_hooks(cls)
    unknown = sorted(hooks - set(ALL_HOOKS))
    if unknown:
        raise PolicyConfigError(
            f"policy {cls.name!r} implements unknown hooks: {', '.join(unknown)}", field="hooks"
        )
    missing = [h for h in HOOKS_BY_KIND[cls.kind] if h not in hooks]
    if missing:
        raise PolicyConfigError(
            f"{cls.kind} policy {cls.name!r} misses hooks: {', '.join(missing)}", field="hooks"
        )
    foreign = sorted(
        h for kind, names in HOOKS_BY_KIND.items() if kind != cls.kind for h in names if h in hooks
    )
    if foreign:
        raise PolicyConfigError(
            f"{cls.kind} policy {cls.name!r} implements hooks of other kinds: {', '.join(foreign)}",
            field="hooks",
        )


def policies_from_object(obj: Any) -> list[type[Policy]]:
    """The policy classes an entry point's object stands for (class, module or sequence)."""
    if isinstance(obj, type):
        return [obj]
    if isinstance(obj, ModuleType):
        declared = getattr(obj, "__saga_policies__", None)
        if declared is not None:
            return list(declared)
        return [
            value
            for value in vars(obj).values()
            if isinstance(value, type)
            and issubclass(value, Policy)
            and value.__module__ == obj.__name__
            and value.name
        ]
    if isinstance(obj, Iterable) and not isinstance(obj, str | bytes):
        return list(obj)
    raise PolicyConfigError(
        f"{obj!r} is neither a policy class, a module nor a sequence of classes", field="object"
    )


class PolicyRegistry:
    """Installed policy classes keyed by (kind, name)."""

    def __init__(self, policies: Iterable[type[Policy]] = (), source: str = "explicit") -> None:
        self._classes: dict[tuple[str, str], type[Policy]] = {}
        self._sources: dict[tuple[str, str], str] = {}
        self.errors: list[str] = []
        for cls in policies:
            self.add(cls, source)

    def add(self, cls: type[Policy], source: str = "explicit") -> None:
        """Register a class; the same class twice is a no-op, a different one with its name errs."""
        check_policy_class(cls)
        check_hooks(cls)
        key = (cls.kind, cls.name)
        existing = self._classes.get(key)
        if existing is cls:
            return
        if existing is not None:
            raise PolicyConfigError(
                f"{cls.kind} policy {cls.name!r} from {source} clashes with the one from "
                f"{self._sources[key]}",
                field="name",
            )
        self._classes[key] = cls
        self._sources[key] = source

    def add_object(self, obj: Any, source: str) -> None:
        """Register everything an entry point's object stands for, recording failures."""
        try:
            classes = policies_from_object(obj)
        except PolicyConfigError as exc:
            self.errors.append(f"{source}: {exc}")
            return
        for cls in classes:
            try:
                self.add(cls, source)
            except PolicyConfigError as exc:
                self.errors.append(f"{source}: {exc}")

    @classmethod
    def discover(
        cls, group: str = ENTRY_POINT_GROUP, include_defaults: bool = True
    ) -> PolicyRegistry:
        """Built-ins (unless ``include_defaults`` is False) plus every entry point of ``group``."""
        registry = cls()
        if include_defaults:
            for module_name in DEFAULT_POLICY_MODULES:
                registry.add_object(importlib.import_module(module_name), module_name)
        for ep in entry_points(group=group):
            source = f"entry point {ep.name} = {ep.value}"
            try:
                obj = ep.load()
            except Exception as exc:  # a broken package is reported, never fatal
                registry.errors.append(f"{source}: cannot load: {type(exc).__name__}: {exc}")
                continue
            registry.add_object(obj, source)
        return registry

    def get(self, kind: str, name: str) -> type[Policy]:
        """The class of ``name`` in ``kind``; the error names the field and the valid choices."""
        if kind not in KINDS:
            raise PolicyConfigError(
                f"unknown policy kind {kind!r}; expected one of {', '.join(KINDS)}", field="kind"
            )
        found = self._classes.get((kind, name))
        if found is not None:
            return found
        other = [k for (k, n) in self._classes if n == name]
        if other:
            raise PolicyConfigError(
                f"policy {name!r} is of kind {other[0]}, not {kind}", field="name"
            )
        raise PolicyConfigError(
            f"unknown {kind} policy {name!r}; installed: {', '.join(self.names(kind)) or 'none'}",
            field="name",
        )

    def names(self, kind: str) -> list[str]:
        return [n for (k, n) in self._classes if k == kind]

    def __contains__(self, key: object) -> bool:
        return key in self._classes

    def infos(self) -> list[PolicyInfo]:
        """Every installed policy, by kind (eviction, routing, admission, fairness) then name."""
        order = {k: i for i, k in enumerate(KINDS)}
        return [
            PolicyInfo(
                kind=c.kind,
                name=c.name,
                version=c.version,
                summary=c.summary,
                requires_oracle=c.requires_oracle,
                source=self._sources[key],
                cls=c,
            )
            for key, c in sorted(self._classes.items(), key=lambda kv: (order[kv[0][0]], kv[0][1]))
        ]

"""What every policy is: a named, versioned, kind-tagged class with validated parameters.

Built-in and third-party policies are the same thing: a subclass of :class:`Policy` whose
instance carries ``@hookimpl`` methods for the hooks of its kind (see :mod:`plugins.hookspecs`).
The manager validates parameters with the class's pydantic ``Params`` model before it builds an
instance, so a bad value never reaches a running engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from plugins.hookspecs import KINDS


class PolicyError(Exception):
    """Base of the policy layer's errors."""


class PolicyConfigError(PolicyError, ValueError):
    """A policy name, kind or parameter is invalid; the message names the offending field."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class PolicyParams(BaseModel):
    """Base for a policy's parameters: immutable, and unknown names are errors (typos matter)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(PolicyParams):
    """A policy without parameters."""


class Policy:
    """Base class of all policies.

    Subclasses set ``name``, ``kind``, ``version`` and ``summary``, may override ``Params`` with
    their own :class:`PolicyParams` subclass, and implement the hooks of their kind as methods
    decorated with :data:`plugins.hookspecs.hookimpl`. ``requires_oracle`` asks the simulator to
    fill :attr:`plugins.views.CacheEntryView.next_use_s` (offline policies such as Belady).

    State that must outlive an activation (VTC's and AFS's service counters, PLAS's attained
    service, work stealing's cooldowns) is declared, as llm-d's ``NewState``: a class sets
    ``State`` to a zero-argument factory, and its instance finds the state object in
    ``self.state``. The policy manager keeps one state per policy (kind and name) for its whole
    life and hands it to every instance it builds of that policy, so changing a policy's
    parameters, or swapping it out and back, does not wipe what it has counted. Anything else an
    instance holds is rebuilt at each activation.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    version: ClassVar[str] = "1.0"
    summary: ClassVar[str] = ""
    requires_oracle: ClassVar[bool] = False

    Params: ClassVar[type[PolicyParams]] = NoParams
    State: ClassVar[Callable[[], Any] | None] = None

    def __init__(self, params: PolicyParams | None = None, state: Any = None) -> None:
        self.params = params if params is not None else self.Params()
        if state is None and self.State is not None:
            state = self.State()
        self.state = state

    def __repr__(self) -> str:
        return f"<{self.kind} policy {self.name!r} v{self.version} {self.params!r}>"

    @classmethod
    def params_schema(cls) -> dict[str, Any]:
        """JSON schema of the parameters (what ``saga policies list --json`` prints)."""
        return cls.Params.model_json_schema()

    @classmethod
    def validate_params(cls, params: dict[str, Any] | PolicyParams | None) -> PolicyParams:
        """Check ``params`` against ``Params``; a :class:`PolicyConfigError` names the field."""
        if params is None:
            return cls.Params()
        if isinstance(params, cls.Params):
            return params
        if isinstance(params, PolicyParams):
            params = params.model_dump()
        if not isinstance(params, dict):
            raise PolicyConfigError(
                f"params for {cls.kind} policy {cls.name!r} must be a mapping, "
                f"got {type(params).__name__}",
                field="params",
            )
        try:
            return cls.Params.model_validate(params)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(part) for part in first["loc"]) or "params"
            raise PolicyConfigError(
                f"invalid params for {cls.kind} policy {cls.name!r}: {loc}: {first['msg']}"
                + (f" (got {first['input']!r})" if "input" in first and loc != "params" else ""),
                field=loc,
            ) from exc


def check_policy_class(cls: type[Policy]) -> None:
    """Reject a class that cannot be a policy (no name, unknown kind); the message says why."""
    if not isinstance(cls, type) or not issubclass(cls, Policy):
        raise PolicyConfigError(f"{cls!r} is not a subclass of plugins.base.Policy", field="class")
    if not cls.name:
        raise PolicyConfigError(f"policy class {cls.__qualname__} has no name", field="name")
    if cls.kind not in KINDS:
        raise PolicyConfigError(
            f"policy {cls.name!r} has kind {cls.kind!r}; expected one of {', '.join(KINDS)}",
            field="kind",
        )
    if not (isinstance(cls.Params, type) and issubclass(cls.Params, BaseModel)):
        raise PolicyConfigError(
            f"policy {cls.name!r}: Params is not a pydantic model", field="Params"
        )

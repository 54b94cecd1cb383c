"""Settings of the SAGA scheduler inside a vLLM engine.

The scheduler is built by vLLM's engine core, not by SAGA, so it cannot take constructor
arguments: its settings come from ``--additional-config '{"saga": {...}}'`` (vLLM hands the dict
to every process in ``VllmConfig.additional_config``) and, for what is not set there, from
``SAGA_*`` environment variables. A bad value raises :class:`SagaConfigError` naming the field,
so a mistyped setting stops the engine at start instead of silently changing its behaviour.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from nodeagent.sim.profiles import PROFILES

ADDITIONAL_CONFIG_KEY = "saga"
ENV_PREFIX = "SAGA_"


class SagaConfigError(ValueError):
    """A SAGA scheduler setting is invalid; ``field`` names it."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class SagaSchedulerConfig:
    """What an engine's SAGA scheduler needs to know about itself.

    ``policy_set`` is a named set or ``EV:RO:AD:FA`` (see ``plugins.named_sets.parse_policy_set``;
    the node applies its eviction, admission and fairness policies); None keeps the policy
    manager's defaults, SAGA's own policies. ``eviction_window_blocks``
    caps how many evictable blocks one reordering of the free queue looks at (the work per step);
    ``max_pinned_fraction`` caps the share of the KV pool that tool-call retention may hold, so
    pins can slow admission but never starve it; ``workflow_idle_s`` forgets a workflow that
    sent nothing for that long (the node agent normally ends workflows explicitly);
    ``order_untagged`` lets the policies order plain (untagged) vLLM requests too, as one-call
    workflows, instead of leaving them where vLLM's own queue puts them. ``profile`` names the
    simulator profile of this instance (``nodeagent.sim.profiles``): isolated times and queue
    delays then come from its cost model, as ``saga bench`` computes them; None: from the costs
    the engine measures itself.
    """

    node_id: str = "vllm-0"
    policy_set: str | None = None
    eviction_window_blocks: int = 8192
    max_pinned_fraction: float = 0.5
    workflow_idle_s: float = 3600.0
    order_untagged: bool = False
    profile: str | None = None

    def __post_init__(self) -> None:
        if self.profile is not None and self.profile not in PROFILES:
            raise SagaConfigError(
                f"unknown profile {self.profile!r}; known: {', '.join(sorted(PROFILES))}",
                field="profile")
        if not isinstance(self.node_id, str) or not self.node_id:
            raise SagaConfigError("node_id must be a non-empty string", field="node_id")
        if self.policy_set is not None and (
            not isinstance(self.policy_set, str) or not self.policy_set.strip()
        ):
            raise SagaConfigError(
                "policy_set must be a set name or EVICTION:ROUTING:ADMISSION:FAIRNESS",
                field="policy_set",
            )
        if (
            isinstance(self.eviction_window_blocks, bool)
            or not isinstance(self.eviction_window_blocks, int)
            or self.eviction_window_blocks < 1
        ):
            raise SagaConfigError(
                "eviction_window_blocks must be an integer >= 1, "
                f"got {self.eviction_window_blocks!r}",
                field="eviction_window_blocks",
            )
        if not (0.0 <= self.max_pinned_fraction <= 1.0):
            raise SagaConfigError(
                f"max_pinned_fraction must be in [0, 1], got {self.max_pinned_fraction!r}",
                field="max_pinned_fraction",
            )
        if not isinstance(self.order_untagged, bool):
            raise SagaConfigError(
                f"order_untagged must be true or false, got {self.order_untagged!r}",
                field="order_untagged",
            )
        if not (math.isfinite(self.workflow_idle_s) and self.workflow_idle_s > 0.0):
            raise SagaConfigError(
                f"workflow_idle_s must be a finite number > 0, got {self.workflow_idle_s!r}",
                field="workflow_idle_s",
            )

    @classmethod
    def from_sources(
        cls, additional_config: Any, environ: Mapping[str, str]
    ) -> SagaSchedulerConfig:
        """Settings from ``additional_config["saga"]``, then ``SAGA_<FIELD>`` variables."""
        given: dict[str, Any] = {}
        section = (
            additional_config.get(ADDITIONAL_CONFIG_KEY)
            if isinstance(additional_config, Mapping)
            else None
        )
        if section is not None and not isinstance(section, Mapping):
            raise SagaConfigError(
                "additional_config.saga must be a mapping", field=ADDITIONAL_CONFIG_KEY
            )
        known = {f.name: f for f in fields(cls)}
        for key, value in (section or {}).items():
            if key not in known:
                raise SagaConfigError(
                    f"unknown SAGA setting {key!r}; known: {', '.join(known)}", field=key
                )
            given[key] = value
        for name, spec in known.items():
            env_name = ENV_PREFIX + name.upper()
            if name in given or env_name not in environ:
                continue
            given[name] = _parse_env(name, spec.type, environ[env_name])
        return cls(**given)


def _parse_env(name: str, annotation: Any, raw: str) -> Any:
    text = raw.strip()
    if annotation in ("bool", bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off", ""):
            return False
        raise SagaConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a boolean", field=name)
    try:
        if annotation in ("int", int):
            return int(text)
        if annotation in ("float", float):
            return float(text)
    except ValueError as exc:
        raise SagaConfigError(
            f"{ENV_PREFIX}{name.upper()}={raw!r} is not a number", field=name
        ) from exc
    return text or None

"""The control plane's view of installed policy plugins (``plugins.registry``).

Django code validates policy configurations here, with the plugin's own pydantic schema, so
that a configuration stored in the database is one that every node can load.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from plugins.base import PolicyConfigError
from plugins.registry import PolicyRegistry

# Which model field a registry error is about (the registry names its own fields).
_FIELD_OF_REGISTRY_ERROR = {"kind": "kind", "name": "plugin_name"}


@lru_cache(maxsize=1)
def registry() -> PolicyRegistry:
    """Built-in policies plus the ``saga.policies`` entry points, discovered once per process."""
    return PolicyRegistry.discover()


def installed_policies() -> list[tuple[str, str]]:
    """(kind, name) of every installed policy."""
    return [(info.kind, info.name) for info in registry().infos()]


def validate_policy(kind: str, name: str, params: Any) -> tuple[dict[str, Any], str]:
    """Validated, normalised params (defaults filled in) and the plugin's version.

    Raises ``PolicyConfigError``; ``model_field(exc)`` says which Policy field it is about.
    """
    cls = registry().get(kind, name)
    validated = cls.validate_params(params)
    return validated.model_dump(mode="json"), cls.version


def model_field(exc: PolicyConfigError) -> str:
    """The ``Policy`` model field a validation error belongs to."""
    return _FIELD_OF_REGISTRY_ERROR.get(exc.field or "", "params")

"""The control plane's view of installed policy plugins (the ``plugins`` package's registry).

Django code validates policy configurations here, with the plugin's own pydantic schema, so
that a configuration stored in the database is one that every node can load.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from plugins.base import Policy


class PolicyNotInstalled(LookupError):
    """No installed plugin has that kind and name."""


@lru_cache(maxsize=1)
def installed_policies() -> dict[tuple[str, str], type[Policy]]:
    """Every installed policy class keyed by (kind, name): built-ins and entry points."""
    from plugins.registry import discover_policies

    return {(cls.kind, cls.name): cls for cls in discover_policies()}


def policy_class(kind: str, name: str) -> type[Policy]:
    try:
        return installed_policies()[(kind, name)]
    except KeyError:
        names = sorted(n for k, n in installed_policies() if k == kind)
        raise PolicyNotInstalled(
            f"no {kind} policy named {name!r} is installed; installed: {', '.join(names) or 'none'}"
        ) from None


def validate_policy(kind: str, name: str, params: Any) -> tuple[dict[str, Any], str]:
    """Validated, normalised params (defaults filled in) and the plugin's version.

    Raises ``PolicyNotInstalled`` or ``ValueError`` (``PolicyConfigError``) naming the field.
    """
    cls = policy_class(kind, name)
    validated = cls.validate_params(params)
    return validated.model_dump(mode="json"), cls.version

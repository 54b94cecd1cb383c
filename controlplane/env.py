"""Typed access to the process environment (12-factor settings).

Settings modules read every deploy-time value through this module so that the rules are the
same everywhere: a value may come from ``NAME`` or, for secrets mounted as files (Docker and
Kubernetes secrets), from the file named by ``NAME_FILE``. Setting both is ambiguous and refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import environ


class ConfigurationError(RuntimeError):
    """A required environment variable is missing or malformed."""


_env = environ.Env()


def _read_file_variant(name: str) -> str | None:
    path = os.environ.get(f"{name}_FILE")
    if path is None:
        return None
    if name in os.environ:
        raise ConfigurationError(f"set either {name} or {name}_FILE, not both")
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigurationError(f"{name}_FILE={path!r} cannot be read: {exc.strerror}") from exc


def get_str(name: str, default: str | None = None, *, required: bool = False) -> str | None:
    """Return ``NAME`` (or the contents of ``NAME_FILE``), else ``default``."""
    from_file = _read_file_variant(name)
    if from_file is not None:
        return from_file
    value = os.environ.get(name)
    if value is None or value == "":
        if required:
            raise ConfigurationError(f"environment variable {name} is required")
        return default
    return value


def get_bool(name: str, default: bool) -> bool:
    raw = get_str(name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a boolean (use true/false)")


def get_int(name: str, default: int) -> int:
    raw = get_str(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name}={raw!r} is not an integer") from exc


def get_list(name: str, default: list[str]) -> list[str]:
    raw = get_str(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def database_config(url: str) -> dict[str, object]:
    """Translate a ``DATABASE_URL`` into Django's DATABASES entry.

    PostgreSQL URLs get psycopg 3's connection pool, so each ASGI worker reuses connections
    instead of opening one per request.
    """
    try:
        config: dict[str, object] = _env.db_url_config(url)
    except Exception as exc:  # django-environ raises several types for bad URLs
        raise ConfigurationError(f"DATABASE_URL is not a valid database URL: {exc}") from exc
    engine = str(config.get("ENGINE", ""))
    if engine.endswith("postgresql") or engine.endswith("postgresql_psycopg2"):
        config["ENGINE"] = "django.db.backends.postgresql"
        options = dict(config.get("OPTIONS") or {})  # type: ignore[call-overload]
        # A short pool timeout: while PostgreSQL is down the gateway answers 503 within seconds
        # instead of queueing requests behind a pool that cannot connect.
        options.setdefault("pool", {"min_size": 1, "max_size": get_int("DATABASE_POOL_MAX", 10),
                                    "timeout": float(get_int("DATABASE_POOL_TIMEOUT_S", 3))})
        options.setdefault("connect_timeout", get_int("DATABASE_CONNECT_TIMEOUT_S", 3))
        config["OPTIONS"] = options
        config["CONN_MAX_AGE"] = 0  # the pool owns connection lifetime
    return config

"""Test-suite wiring: real PostgreSQL and Redis, or a failure that names the missing service.

``make test`` and ``.ci/run`` export ``DATABASE_URL`` and ``REDIS_URL``. A test that needs one of
them and cannot reach it fails (never skips) with a message naming the service and the URL.
"""

from __future__ import annotations

import os

import pytest

# What `make test` points at when the variables are unset (see the Makefile).
MAKE_TEST_DEFAULTS = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test",
                      "REDIS_URL": "redis://127.0.0.1:6379/0"}


def _service_unreachable(name: str, variable: str, detail: str) -> None:
    pytest.fail(
        f"{name} is required for this test but unreachable: {detail}. Start it, or point "
        f"{variable} at one (make test uses {MAKE_TEST_DEFAULTS[variable]}).",
        pytrace=False,
    )


def _check_postgres() -> None:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        _service_unreachable("PostgreSQL", "DATABASE_URL", f"DATABASE_URL is {url or 'unset'!r}")
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        _service_unreachable("PostgreSQL", "DATABASE_URL", f"{url}: {exc}".strip())


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings: None) -> None:
    """Runs just before pytest-django creates the test database: check PostgreSQL is there."""
    _check_postgres()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis URL of the test environment, checked to answer PING."""
    url = os.environ.get("REDIS_URL", "")
    if not url.startswith("redis://"):
        _service_unreachable("Redis", "REDIS_URL", f"REDIS_URL is {url or 'unset'!r}")
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        _service_unreachable("Redis", "REDIS_URL", f"{url}: {exc}")
    return url


@pytest.fixture(autouse=True)
def _fresh_channel_layer() -> None:
    """Each async test runs on its own event loop; a channel layer instance (and the asyncio
    locks inside channels_redis) must not outlive the loop it was first used on."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()

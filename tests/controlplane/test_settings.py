"""12-factor settings: env parsing, *_FILE secrets, and production passing check --deploy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane import env

ROOT = Path(__file__).resolve().parents[2]


def test_file_variant_supplies_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret-from-file\n")
    monkeypatch.delenv("SAGA_T_SECRET", raising=False)
    monkeypatch.setenv("SAGA_T_SECRET_FILE", str(secret))
    assert env.get_str("SAGA_T_SECRET") == "s3cret-from-file"


def test_both_variants_at_once_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "s").write_text("x")
    monkeypatch.setenv("SAGA_T_SECRET", "y")
    monkeypatch.setenv("SAGA_T_SECRET_FILE", str(tmp_path / "s"))
    with pytest.raises(env.ConfigurationError, match="either SAGA_T_SECRET or SAGA_T_SECRET_FILE"):
        env.get_str("SAGA_T_SECRET")


def test_unreadable_file_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGA_T_SECRET_FILE", "/nonexistent/secret")
    with pytest.raises(env.ConfigurationError, match="SAGA_T_SECRET_FILE='/nonexistent/secret'"):
        env.get_str("SAGA_T_SECRET")


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("0", False), ("Yes", True)])
def test_booleans(raw: str, expected: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGA_T_FLAG", raw)
    assert env.get_bool("SAGA_T_FLAG", not expected) is expected


def test_malformed_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGA_T_FLAG", "maybe")
    with pytest.raises(env.ConfigurationError, match="SAGA_T_FLAG='maybe' is not a boolean"):
        env.get_bool("SAGA_T_FLAG", False)
    monkeypatch.setenv("SAGA_T_INT", "ten")
    with pytest.raises(env.ConfigurationError, match="SAGA_T_INT='ten' is not an integer"):
        env.get_int("SAGA_T_INT", 1)


def test_postgres_urls_get_psycopg3_pooling() -> None:
    config = env.database_config("postgres://saga:pw@db.internal:5432/saga")
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert config["NAME"] == "saga" and config["HOST"] == "db.internal"
    assert config["OPTIONS"]["pool"]["max_size"] >= 1  # type: ignore[index]
    assert config["CONN_MAX_AGE"] == 0


def test_the_test_run_uses_real_postgres_and_redis(settings: pytest.FixtureRequest) -> None:
    assert settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"].startswith("channels_redis")


def _manage(args: list[str], extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS", "DEBUG",
                          "SAGA_NODE_API_KEY"}}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True,
        env={**clean, **extra_env}, timeout=120,
    )


PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "controlplane.settings.production",
    "SECRET_KEY": "k" * 20 + "x7#Lq9!pZr2@Vb5$Nc8^Md1&Fh4*Gj6(Ks3)Wt0-Yu",
    "ALLOWED_HOSTS": "saga.example.com",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "SAGA_NODE_API_KEY": "n0de-key-" + "Zq7" * 12,
}


def test_production_settings_pass_check_deploy_without_warnings() -> None:
    result = _manage(["check", "--deploy", "--fail-level", "WARNING"], PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("missing", "message"),
    [("SECRET_KEY", "SECRET_KEY is required"), ("ALLOWED_HOSTS", "ALLOWED_HOSTS is required"),
     ("DATABASE_URL", "DATABASE_URL is required"), ("REDIS_URL", "REDIS_URL is required"),
     ("SAGA_NODE_API_KEY", "SAGA_NODE_API_KEY is required")],
)
def test_production_refuses_to_start_without_its_settings(missing: str, message: str) -> None:
    partial = {k: v for k, v in PRODUCTION_ENV.items() if k != missing}
    result = _manage(["check"], partial)
    assert result.returncode != 0
    assert message in result.stderr


def test_production_refuses_a_short_node_api_key() -> None:
    result = _manage(["check"], {**PRODUCTION_ENV, "SAGA_NODE_API_KEY": "short"})
    assert result.returncode != 0
    assert "SAGA_NODE_API_KEY must be at least 32 random characters" in result.stderr


def test_production_refuses_a_development_secret_key() -> None:
    result = _manage(["check"], {**PRODUCTION_ENV, "SECRET_KEY": "django-insecure-" + "a" * 50})
    assert result.returncode != 0
    assert "SECRET_KEY must be at least 50 random characters" in result.stderr

#!/usr/bin/env python
"""``make fuzz-api``: schemathesis against a live control plane, REST and ``/v1``.

Why: the REST API and the gateway promise that what their OpenAPI schema allows is exactly what
they accept, that every answer is one the schema documents, and that no input is a 500. This
run checks all of it (``--checks all``: no server errors, status codes, content types, headers
and bodies conform to the schema, schema-valid data is accepted, invalid data is rejected,
authentication is not ignored, created resources are readable) on generated requests.

What it starts, on the PostgreSQL server of ``DATABASE_URL`` (a database of its own,
``saga_fuzz``, dropped and migrated afresh) and the Redis of ``REDIS_URL`` (database 15,
flushed): the control plane served for real (uvicorn, the ``/v1`` gateway included) and one
simulated node agent (real time x 10**6, so ``/v1`` answers real 200s quickly). Then two runs:

- a tenant key (``inference`` + ``workflows``) on ``/api/workflows...`` and ``/v1/...``;
- an admin key on ``/api/admin/...``.

Objects the run itself depends on are kept out of the fuzzer's reach (``fuzz_hooks``): cases
addressing the run's own tenant, its keys or its node by path (PATCH the tenant, revoke the
keys, drain or revoke the node) are skipped, since they would turn the rest of the run into
401s. Every other endpoint and parameter is fuzzed. Two operations may answer 422 to
schema-valid data, because the rule cannot be written in JSON Schema (``schemathesis.toml``):
a key's ``expires_at`` must be in the future, and a policy's ``params`` must pass the named
plugin's own schema.

Exit status: 0 when both runs pass and together ran at least ``MIN_CASES`` generated cases.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MIN_CASES = 1000
FUZZ_DATABASE = "saga_fuzz"
FUZZ_REDIS_DB = 15
NODE_KEY = "fuzz-gateway-to-node-key"
MODEL = "llama-3-8b"  # the schema's example model, so the examples phase gets real 200s
SEED = int(os.environ.get("FUZZ_SEED", "20260901"))
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "30"))


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def _prepare_stores(database_url: str, redis_url: str) -> None:
    import psycopg
    import redis

    with psycopg.connect(_with_path(database_url, "/postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {FUZZ_DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {FUZZ_DATABASE}")
    redis.Redis.from_url(redis_url).flushdb()


def _count_cases(output: str) -> int:
    """The number of generated test cases schemathesis reports in its summary."""
    match = re.search(r"Test cases:\s*([\d,]+) generated", output)
    if match is None:
        raise SystemExit("fuzz-api: could not find the number of test cases in the output")
    return int(match.group(1).replace(",", ""))


def _schemathesis(schema_url: str, key: str, include: str, label: str) -> tuple[int, int]:
    """Run schemathesis; returns (exit status, generated cases)."""
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file", str(ROOT / "scripts" / "schemathesis.toml"),
        "run", schema_url,
        "--checks", "all",
        "--header", f"Authorization: Bearer {key}",
        "--include-path-regex", include,
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        # One worker: CPython 3.11's ast.parse (which hypothesis calls to describe
        # strategies) is not thread-safe and fails at random with "AST constructor recursion
        # depth mismatch" when two workers build strategies at once.
        "--workers", "1",
        "--generation-database", "none",
        "--request-timeout", "30",
        "--no-color",
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "fuzz_hooks",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "scripts"),
                                          os.environ.get("PYTHONPATH", "")])}
    print(f"fuzz-api: {label}: schemathesis on {include}", flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="saga-fuzz-") as workdir:  # its caches go there
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False,
                                cwd=workdir)
    output = result.stdout + result.stderr
    print(output, flush=True)
    cases = _count_cases(output)
    print(f"fuzz-api: {label}: {cases} generated cases, exit {result.returncode}, "
          f"{time.monotonic() - started:.0f} s", flush=True)
    return result.returncode, cases


def main() -> int:
    database_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    if not database_url.startswith(("postgres://", "postgresql://")) or not redis_url:
        print("fuzz-api: DATABASE_URL (PostgreSQL) and REDIS_URL are required", file=sys.stderr)
        return 2
    database_url = _with_path(database_url, f"/{FUZZ_DATABASE}")
    redis_url = _with_path(redis_url, f"/{FUZZ_REDIS_DB}")
    _prepare_stores(database_url, redis_url)
    os.environ.update(DATABASE_URL=database_url, REDIS_URL=redis_url,
                      DJANGO_SETTINGS_MODULE="controlplane.settings.test",
                      SAGA_NODE_API_KEY=NODE_KEY)

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    from controlplane.gateway import runtime
    from controlplane.tenants.models import ApiKey, Tenant
    from tests.live import NodeProcess, serve_control_plane, wait_for

    suffix = secrets.token_hex(6)
    tenant = Tenant.objects.create(slug=f"fuzz-{suffix}", name="Fuzzing tenant")
    tenant_key, tenant_secret = ApiKey.issue(tenant, "fuzz-agents",
                                             scopes=["inference", "workflows"])
    admin_key, admin_secret = ApiKey.issue(tenant, "fuzz-admin", scopes=["admin"])
    node_name = f"fuzz-node-{suffix}"
    os.environ["FUZZ_PROTECTED"] = ",".join(
        [tenant.slug, node_name, str(tenant_key.pk), str(admin_key.pk)])

    started = time.monotonic()
    with serve_control_plane() as url:
        node = NodeProcess(url, node_name, api_key=NODE_KEY, model=MODEL, speed=1e6).start()
        try:
            runtime.directory.refresh(force=True)
            wait_for(lambda: bool(runtime.directory.nodes_for(MODEL))
                     or runtime.directory.refresh(force=True), "the node in the directory")
            schema_url = f"{url}/api/openapi.json"
            results = [
                _schemathesis(schema_url, tenant_secret, r"^/(api/workflows|v1/)",
                              "tenant key"),
                _schemathesis(schema_url, admin_secret, r"^/api/admin/", "admin key"),
            ]
        finally:
            node.stop()
    cases = sum(c for _, c in results)
    failed = [status for status, _ in results if status != 0]
    print(f"fuzz-api: {cases} generated cases in total ({len(results)} runs), "
          f"{time.monotonic() - started:.0f} s; "
          f"{'FAILED' if failed or cases < MIN_CASES else 'passed'}", flush=True)
    if cases < MIN_CASES:
        print(f"fuzz-api: fewer than {MIN_CASES} cases", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

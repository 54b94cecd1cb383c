"""The `saga` console script: help, one-line usage errors, and the demo's setup step."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["--help"])
    assert excinfo.value.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "demo", "manage", "policies", "bench"):
        assert command in out


def test_usage_errors_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["launch"])
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("saga: error: ")


def test_bad_port_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["serve", "--port", "99999"])
    assert excinfo.value.code == 2
    assert "port must be in 1..65535" in capsys.readouterr().err


def test_subcommands_from_other_packages_get_their_handlers() -> None:
    args = build_parser().parse_args(["policies", "list", "--json"])
    assert callable(args.handler)


def test_demo_setup_on_embedded_defaults(tmp_path: Path) -> None:
    """`saga demo --no-serve` on SQLite: admin, tenants with keys, SAGA's default policies."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    env["SAGA_STATE_DIR"] = str(tmp_path)
    command = [sys.executable, "-m", "controlplane.cli", "demo", "--no-serve"]
    first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "admin user: admin" in first.stdout
    assert first.stdout.count("API key (shown once): sk_") == 3

    db = sqlite3.connect(tmp_path / "saga.sqlite3")
    tenants = {row[0] for row in db.execute("SELECT slug FROM tenants_tenant")}
    assert tenants == {"acme", "globex", "noisy"}
    active = dict(db.execute(
        "SELECT a.kind, p.plugin_name FROM policies_policyactivation a "
        "JOIN policies_policy p ON p.id = a.policy_id"
    ))
    assert active == {"eviction": "aeg", "routing": "saga", "admission": "saga", "fairness": "afs"}

    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "shown once" not in again.stdout  # idempotent: no second key, no secret re-shown
    live = "SELECT name, COUNT(*) FROM tenants_apikey WHERE revoked_at IS NULL GROUP BY name"
    # one demo key per tenant, plus the workload's key, re-issued (old one revoked) each start
    assert dict(db.execute(live)) == {"demo": 3, "demo-workload": 3}
    nodes = {row[0] for row in db.execute("SELECT name FROM nodes_node")}
    assert nodes == {"sim-node-1", "sim-node-2"}


def test_the_demo_runs_nodes_and_agents_end_to_end(tmp_path: Path) -> None:
    """`saga demo`: two simulated nodes register and apply SAGA's policies, agents complete
    workflows through the gateway (embedded defaults: SQLite, in-memory layer, eager Celery)."""
    import socket
    import time

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    env["SAGA_STATE_DIR"] = str(tmp_path)
    base = free_port()
    while True:  # two consecutive free ports for the nodes
        try:
            for port in (base, base + 1):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            break
        except OSError:
            base = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "controlplane.cli", "demo", "--port", str(free_port()),
         "--node-base-port", str(base)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    db_path = tmp_path / "saga.sqlite3"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no workflow completed within 120 s"
            time.sleep(1)
            if not db_path.exists():
                continue
            db = sqlite3.connect(db_path, timeout=10)
            try:
                done = db.execute("SELECT COUNT(*) FROM workflows_workflow "
                                  "WHERE state = 'completed' AND external_id != ''").fetchone()[0]
                applied = db.execute("SELECT COUNT(*) FROM nodes_nodepolicystate "
                                     "WHERE status = 'applied'").fetchone()[0]
            except sqlite3.OperationalError:
                continue  # still migrating
            finally:
                db.close()
            if done >= 1 and applied == 6:
                break
    finally:
        process.terminate()
        process.wait(timeout=30)

"""``saga policies list [--json]``: every built-in policy with kind, name, version and params."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from plugins import cli
from plugins.builtin import __saga_policies__ as BUILTINS

ROOT = Path(__file__).resolve().parents[2]


def test_list_prints_every_policy_with_kind_version_and_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["policies", "list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["KIND", "NAME", "VERSION"]
    for cls in BUILTINS:
        row = next(line for line in lines if line.split()[:2] == [cls.kind, cls.name])
        assert cls.version in row.split()
    assert "ttl_s=60.0" in out
    assert "belady *" in out


def test_list_json_has_params_schemas(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["policies", "list", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    found = {(p["kind"], p["name"]): p for p in document["policies"]}
    assert set(found) == {(c.kind, c.name) for c in BUILTINS}
    ttl = found[("eviction", "ttl")]
    assert ttl["params_schema"]["properties"]["ttl_s"]["default"] == 60.0
    assert ttl["params_schema"]["additionalProperties"] is False
    assert found[("eviction", "belady")]["requires_oracle"] is True
    assert document["sets"]["baseline"] == ["lru", "session-affinity", "priority", "fcfs"]
    assert document["errors"] == []


def test_register_plugs_into_another_parser() -> None:
    parser = argparse.ArgumentParser(prog="saga")
    sub = parser.add_subparsers(dest="command")
    cli.register(sub)
    args = parser.parse_args(["policies", "list", "--json"])
    out = io.StringIO()
    assert args.func(args, out) == 0
    assert json.loads(out.getvalue())["policies"]


def test_unknown_command_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(argparse.Namespace(policies_command="frobnicate")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "frobnicate" in err


def test_module_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "plugins.cli", "policies", "list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "session-affinity" in result.stdout

"""``saga bench-gateway --profile``: py-spy attached to a real process, and the breakdown of
its samples by the part of a call they belong to."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from controlplane.gatewaybench import cli, profile
from tests.gatewaybench.test_cli import parse

ROOT = ("<module> (controlplane/cli.py:1);asyncio_run (uvicorn/_compat.py:30);"
        "Runner.run (asyncio/runners.py:118)")
ADMIT = f"{ROOT};begin (controlplane/gateway/ledger.py:196)"


def test_each_sample_goes_to_the_innermost_part_of_a_call_it_is_in() -> None:
    assert profile.category_of(f"{ADMIT};AsyncCursor.execute (psycopg/cursor_async.py:113)") \
        == "admission (PostgreSQL)"
    # routing runs inside the admission: it counts as routing, not as admission
    assert profile.category_of(f"{ADMIT};_admit (controlplane/gateway/ledger.py:260);"
                               "_route (controlplane/gateway/calls.py:88);score (plugins/x.py:3)"
                               ) == "routing decision (policy layer)"
    assert profile.category_of(f"{ROOT};GroupCommit._run (controlplane/gateway/ledger.py:470)"
                               ) == "outcome group commit (PostgreSQL)"
    assert profile.category_of(ROOT) == profile.OTHER  # the loop itself, not HTTP serving
    assert profile.category_of('process 9:"saga serve";AsyncCursor.execute (psycopg/cursor_'
                               'async.py:113)') == "PostgreSQL client, caller not sampled"
    assert profile.category_of(f"{ROOT};RequestResponseCycle.send (uvicorn/protocols/http/"
                               "httptools_impl.py:524)") == "HTTP serving, auth, validation"


def test_the_breakdown_is_shares_of_all_samples_largest_first() -> None:
    collapsed = "\n".join([
        f"{ADMIT};x (psycopg/y.py:1) 30",
        f"{ROOT};PromptRecorder._write (controlplane/whatif/recording.py:120) 10",
        f"{ROOT} 60",
        "garbage line without a count",
    ])
    shares = profile.breakdown(collapsed)
    assert list(shares) == [profile.OTHER, "admission (PostgreSQL)",
                            "what-if prompt structures"]
    assert shares[profile.OTHER] == pytest.approx(0.6)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert profile.breakdown("") == {}


def test_the_recorder_samples_a_running_python_process(tmp_path: Path) -> None:
    busy = subprocess.Popen([sys.executable, "-c",
                             "def spin_for_the_profiler():\n"
                             "    while True: sum(range(1000))\n"
                             "spin_for_the_profiler()"])
    out = tmp_path / "stacks.txt"
    try:
        recorder = profile.Recorder(busy.pid, out)
        recorder.start()
        time.sleep(2.0)
        recorder.stop()
    finally:
        busy.kill()
        busy.wait()
    stacks = out.read_text()
    assert "spin_for_the_profiler" in stacks
    assert profile.breakdown(stacks) == {profile.OTHER: 1.0}


def test_a_missing_py_spy_is_bad_input(monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Path) -> None:
    def missing() -> str:
        raise profile.ProfileError("--profile needs py-spy (pip install py-spy)")

    monkeypatch.setattr(profile, "py_spy", missing)
    with pytest.raises(cli.BenchInputError, match="needs py-spy"):
        cli.validate(parse("--profile", str(tmp_path / "p.txt")), {})
    with pytest.raises(cli.BenchInputError, match="--profile: directory"):
        cli.validate(parse("--profile", str(tmp_path / "nowhere" / "p.txt")), {})

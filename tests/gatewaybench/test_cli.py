"""Argument validation, exit statuses and the report of ``saga bench-gateway`` (no timing)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from controlplane.cli import OneLineErrorParser
from controlplane.gatewaybench import cli
from controlplane.gatewaybench.cluster import Backends, session_cpu_seconds
from controlplane.gatewaybench.stats import Comparison, summarize


def parse(*argv: str) -> argparse.Namespace:
    parser = OneLineErrorParser(prog="saga")
    cli.register(parser.add_subparsers(dest="command", parser_class=OneLineErrorParser))
    return parser.parse_args(["bench-gateway", *argv])


def test_defaults_take_the_backends_from_the_environment() -> None:
    options = cli.validate(parse(), {"DATABASE_URL": "postgres://u:secret@db/x",
                                     "REDIS_URL": "redis://r:6379/0"})
    assert options.backends == Backends("postgres://u:secret@db/x", "redis://r:6379/0")
    assert "secret" not in options.backends.describe()
    assert options.calls == 2000 and options.concurrency == 16 and options.speed == 1e6


def test_no_environment_means_sqlite_and_in_memory_state() -> None:
    options = cli.validate(parse(), {})
    assert options.backends == Backends(None, None)
    assert "SQLite" in options.backends.describe()
    assert "in-memory" in options.backends.describe()


def test_empty_urls_override_the_environment() -> None:
    options = cli.validate(parse("--database-url", "", "--redis-url", ""),
                           {"DATABASE_URL": "postgres://db/x", "REDIS_URL": "redis://r"})
    assert options.backends == Backends(None, None)


@pytest.mark.parametrize(("argv", "option"), [
    (("--calls", "0"), "--calls"),
    (("--concurrency", "0"), "--concurrency"),
    (("--concurrency", "5000"), "--concurrency"),
    (("--max-concurrency", "-1"), "--max-concurrency"),
    (("--speed", "0"), "--speed"),
    (("--speed", "inf"), "--speed"),
    (("--max-tokens", "0"), "--max-tokens"),
    (("--calls-per-workflow", "0"), "--calls-per-workflow"),
    (("--batch", "0"), "--batch"),
    (("--warmup", "-1"), "--warmup"),
    (("--gateway-workers", "0"), "--gateway-workers"),
    (("--gateway-workers", "2"), "--gateway-workers"),  # no PostgreSQL/Redis given
    (("--database-url", "mysql://db/x"), "--database-url"),
    (("--redis-url", "http://r"), "--redis-url"),
    (("--out", "/no/such/dir/out.json"), "--out"),
])
def test_bad_options_are_refused_naming_the_option(argv: tuple[str, ...], option: str) -> None:
    with pytest.raises(cli.BenchInputError, match=option):
        cli.validate(parse(*argv), {})


def test_run_exits_2_with_one_line_for_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(parse("--calls", "-5")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--calls" in err


def test_non_numbers_exit_2_through_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse("--calls", "many")
    assert exc.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_levels_sweep_from_one_and_include_the_headline_concurrency() -> None:
    env = {"DATABASE_URL": "postgres://db/x", "REDIS_URL": "redis://r"}
    assert cli.validate(parse("--concurrency", "12", "--max-concurrency", "32"),
                        env).levels() == [1, 2, 4, 8, 12, 16, 32]
    assert cli.validate(parse("--concurrency", "12", "--max-concurrency", "0"),
                        env).levels() == [12]
    options = cli.validate(parse("--batch", "100"), env)
    assert options.batch_for(8) == 100 and options.batch_for(64) == 256


def test_report_summarises_the_headline_level_and_the_best_throughput(tmp_path: Path) -> None:
    options = cli.validate(parse("--concurrency", "2", "--out", str(tmp_path / "r.json")), {})

    def level(concurrency: int, gateway_s: float, busy_s: float) -> Comparison:
        return Comparison(concurrency, summarize([0.001] * 10, 0, 0.01),
                          summarize([gateway_s] * 10, 0, busy_s))

    report = cli.build_report(options, [level(1, 0.003, 0.1), level(2, 0.005, 0.02),
                                        level(4, 0.02, 0.04)])
    summary = report["summary"]
    assert summary["concurrency"] == 2
    assert summary["added_p99_ms"] == pytest.approx(4.0)
    # the latency target is judged unloaded: concurrency 1 adds 2 ms
    assert summary["unloaded_added_p99_ms"] == pytest.approx(2.0)
    assert summary["added_p99_target_met"] is True
    assert summary["max_gateway_calls_per_s"] == pytest.approx(500.0)
    assert summary["max_at_concurrency"] == 2 and summary["calls_per_s_target_met"] is True
    assert len(report["levels"]) == 3
    slow_unloaded = cli.build_report(options, [level(1, 0.008, 0.1), level(2, 0.005, 0.02)])
    assert slow_unloaded["summary"]["added_p99_target_met"] is False
    no_sweep = cli.build_report(options, [level(2, 0.005, 0.02)])
    assert no_sweep["summary"]["added_p99_target_met"] is None


def test_session_cpu_seconds_sums_the_processes_of_one_session(tmp_path: Path) -> None:
    import os

    ticks = os.sysconf("SC_CLK_TCK")

    def stat(pid: int, session: int, utime: int, stime: int) -> None:
        (tmp_path / str(pid)).mkdir()
        fields = ["S", "1", str(session), str(session)] + ["0"] * 7 + [str(utime), str(stime)]
        (tmp_path / str(pid) / "stat").write_text(f"{pid} (py thon) {' '.join(fields)} 0 0\n")

    stat(100, 100, ticks, ticks)
    stat(101, 100, 2 * ticks, 0)
    stat(200, 200, 50 * ticks, 0)
    assert session_cpu_seconds(100, tmp_path) == pytest.approx(4.0)
    assert session_cpu_seconds(300, tmp_path) == 0.0
    assert session_cpu_seconds(1, tmp_path / "missing") is None

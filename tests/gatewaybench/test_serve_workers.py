"""``saga serve --workers``: bad values exit 2 with one line, before anything starts."""

from __future__ import annotations

import pytest

from controlplane.cli import main


@pytest.mark.parametrize("value", ["0", "65", "two"])
def test_bad_worker_counts_exit_2(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--workers", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "workers" in err

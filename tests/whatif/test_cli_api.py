"""``saga replay`` and ``/api/admin/whatif`` over recorded traffic in PostgreSQL: results.json
and the report written, bad input in one line with exit status 2 / 422 naming the field, the
API admin-only, a run started over REST running in the process and read back when done."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from controlplane.audit.models import AuditEvent
from controlplane.cli import main
from controlplane.tenants.models import ApiKey, Tenant
from tests.whatif.traffic import record_traffic


@pytest.fixture
def window(db: None) -> tuple[str, str]:
    start = timezone.now() - timedelta(minutes=20)
    record_traffic(start, {"acme": 2, "noisy": 3})
    return ((start - timedelta(seconds=1)).isoformat(),
            (start + timedelta(minutes=5)).isoformat())


def test_saga_replay_writes_results_and_report(window: tuple[str, str], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    since, until = window
    out = tmp_path / "out"
    assert main(["replay", "--since", since, "--until", until, "--policies",
                 "active,saga,baseline", "--tenant", "acme", "--tenant", "noisy",
                 "--loads", "1,2", "--out", str(out), "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["policies"]) == ["active", "saga", "baseline"]
    assert results["workload"]["workflows"] == 5 and set(results["sweep"]) == {"1", "2"}
    assert results["cluster"]["basis"].startswith("as recorded: 1 nodes (sim-a)")
    assert results["agreement"]["tenants"]["acme"]["workflows"] == 2
    assert results["recording"]["estimated"]
    report = (out / "report.html").read_text()
    assert "saga replay (what-if)" in report and "Estimated, not recorded" in report
    printed = capsys.readouterr().out
    assert "live vs replay" in printed and "succeeded" in printed


@pytest.mark.parametrize(("args", "words"), [
    (["--since", "2h", "--until", "3h"], "empty window"),
    (["--since", "30d"], "larger than the limit"),
    (["--since", "yesterday-ish"], "expected a duration"),
    (["--since", "1h", "--tenant", "nobody"], "unknown tenant 'nobody'"),
    (["--since", "1h", "--policies", "nope"], "unknown policy set 'nope'"),
    (["--since", "1h", "--gpus", "8"], "--gpus and --profile go together"),
    (["--since", "1h", "--gpus", "3", "--profile", "a100-llama3-70b-tp4"], "not a positive"),
])
def test_saga_replay_bad_input_is_one_line_and_exit_2(
        window: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        args: list[str], words: str) -> None:
    if "--policies" not in args:
        args = [*args, "--policies", "saga"]
    assert main(["replay", *args, "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("saga replay: ") and words in err


def test_saga_replay_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["replay", "--since", "1h", "--out", "x"])  # --policies missing
    assert exc.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def admin_client(db: None) -> Client:
    tenant = Tenant.objects.create(slug="ops", name="Ops")
    _key, secret = ApiKey.issue(tenant, "ops", ["admin"])
    return Client(headers={"Authorization": f"Bearer {secret}"})


@pytest.mark.parametrize(("body", "field"), [
    ({"until": "2020-01-01T00:00:00Z"}, "until"),
    ({"since": "2020-01-01T00:00:00Z"}, "since"),
    ({"tenants": ["nobody"]}, "tenants"),
    ({"policies": ["saga", "nope"]}, "policies"),
    ({"policies": ["x=aeg[retention_factor=-1]:saga:saga:afs"]}, "policies"),
    ({"policies": []}, "policies"),
    ({"loads": [0]}, "loads.0"),
    ({"cluster": {"mode": "fixed", "gpus": 2}}, "cluster.profile"),
])
def test_the_api_answers_422_naming_the_field(window: tuple[str, str], body: dict[str, Any],
                                               field: str, db: None) -> None:
    since, until = window
    client = admin_client(db)
    answer = client.post("/api/admin/whatif", {"since": since, "until": until,
                                               "policies": ["saga"], **body},
                         content_type="application/json")
    assert answer.status_code == 422, answer.content
    error = answer.json()["error"]
    assert error["field"] == field and error["code"] == "invalid" and error["message"]


def test_the_api_is_admin_only(window: tuple[str, str], db: None) -> None:
    since, until = window
    tenant = Tenant.objects.get(slug="acme")
    _key, secret = ApiKey.issue(tenant, "agents", ["inference", "workflows"])
    body = {"since": since, "until": until, "policies": ["saga"]}
    anonymous = Client().post("/api/admin/whatif", body, content_type="application/json")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"]
    tenant_key = Client(headers={"Authorization": f"Bearer {secret}"})
    assert tenant_key.post("/api/admin/whatif", body,
                           content_type="application/json").status_code == 403
    assert tenant_key.get("/api/admin/whatif").status_code == 403


@pytest.mark.django_db(transaction=True)
def test_a_run_started_over_rest_runs_in_process_and_reads_back(
        window: tuple[str, str], settings: Any) -> None:
    settings.SAGA_WHATIF_IN_PROCESS = True  # as in saga demo: no Celery worker to send it to
    since, until = window
    client = admin_client(None)
    answer = client.post("/api/admin/whatif", {
        "since": since, "until": until, "policies": ["saga", "baseline"], "loads": [1, 2],
        "cluster": {"mode": "fixed", "gpus": 2, "profile": "h100-llama3-8b"}},
        content_type="application/json")
    assert answer.status_code == 202, answer.content
    run = answer.json()
    assert [t["policy"] for t in run["tasks"]] == ["saga", "baseline", "saga", "baseline"]
    deadline = time.monotonic() + 60
    while True:
        state = client.get(f"/api/admin/whatif/{run['id']}").json()
        if state["status"] in ("succeeded", "failed", "cancelled") and state["results"]:
            break
        assert time.monotonic() < deadline, state
        time.sleep(0.2)
    assert state["status"] == "succeeded" and state["cluster"]["instances"] == 2
    assert list(state["results"]["policies"]) == ["saga", "baseline"]
    assert all(t["done"] == t["total"] == 5 for t in state["tasks"])
    report = client.get(f"/api/admin/whatif/{run['id']}/report")
    assert report.status_code == 200 and b"Plotly" in report.content
    again = client.post(f"/api/admin/whatif/{run['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["field"] == "status"
    assert client.get("/api/admin/whatif/999999").status_code == 404
    assert AuditEvent.objects.filter(action="whatif.start").count() == 1
    assert [r["id"] for r in client.get("/api/admin/whatif").json()] == [run["id"]]

"""deploy/: the Grafana dashboard and the Prometheus files only use series the control plane
exports, and parse."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from controlplane.tenants.models import Tenant

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SERIES = re.compile(r"\bsaga_[a-z_]+")


def exported() -> set[str]:
    Tenant.objects.create(slug="acme", name="Acme")
    text = Client().get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
                "gauge": ("",)}
    return {f.name + suffix for f in text_string_to_metric_families(text)
            for suffix in suffixes.get(f.type, ("",))}


def used(text: str) -> set[str]:
    return set(SERIES.findall(text))


@pytest.mark.django_db
def test_the_dashboard_and_alerts_use_only_exported_series() -> None:
    yaml = pytest.importorskip("yaml")
    names = exported()
    dashboard = json.loads((DEPLOY / "grafana" / "saga-control-plane.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 12
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "saga-alerts.yml").read_text())
    rules = [r["expr"] for g in alerts["groups"] for r in g["rules"]]
    missing = (used(" ".join(exprs + rules)) - names)
    assert not missing, f"not exported by /metrics: {sorted(missing)}"
    assert "saga_tenant_slo_attainment" in used(" ".join(exprs))
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    assert jobs["saga-control-plane"]["authorization"]["type"] == "Bearer"

"""Seed the demo: an admin user, three tenants with keys, agent templates, SAGA's policies.

Idempotent: running it again creates nothing twice and never re-shows or rotates a secret.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from controlplane import env
from controlplane.policies.models import Policy
from controlplane.policies.services import activate_policy, current_activation
from controlplane.tenants.models import ApiKey, Tenant
from controlplane.workflows.models import AgentTemplate

DEMO_TENANTS = (
    # slug, name, weight, slo slowdown, slo percentile, max concurrent workflows
    ("acme", "Acme coding agents", 2.0, 2.0, 95.0, None),
    ("globex", "Globex browser agents", 1.0, 2.0, 95.0, None),
    ("noisy", "Noisy neighbour", 1.0, 3.0, 90.0, 64),
)
DEMO_TEMPLATES = (
    ("swe-agent", "SWE-bench-style coding agent"),
    ("webarena", "WebArena-style browser agent"),
    ("claude-code", "Claude Code sessions (Weka traces)"),
)
# SAGA's defaults (docs/policies.md): AEG eviction, session-affinity routing with work stealing,
# cached-first admission within fairness bands, Agent Fair Share.
DEMO_POLICIES = (("eviction", "aeg"), ("routing", "saga"), ("admission", "saga"),
                 ("fairness", "afs"))


class Command(BaseCommand):
    help = "Create the demo admin, tenants with API keys, agent templates and default policies."

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            self._admin()
            for template, description in DEMO_TEMPLATES:
                AgentTemplate.objects.get_or_create(
                    name=template, defaults={"description": description}
                )
            for slug, name, weight, slowdown, percentile, max_wf in DEMO_TENANTS:
                self._tenant(slug, name, weight, slowdown, percentile, max_wf)
            for kind, plugin in DEMO_POLICIES:
                self._policy(kind, plugin)

    def _admin(self) -> None:
        username = env.get_str("SAGA_DEMO_ADMIN_USER", "admin") or "admin"
        password = env.get_str("SAGA_DEMO_ADMIN_PASSWORD", "saga-demo-admin") or "saga-demo-admin"
        user_model = get_user_model()
        if user_model.objects.filter(username=username).exists():
            self.stdout.write(f"admin user: {username} (exists)")
            return
        user_model.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write(f"admin user: {username} / password: {password}")

    def _tenant(self, slug: str, name: str, weight: float, slowdown: float, percentile: float,
                max_workflows: int | None) -> None:
        tenant, created = Tenant.objects.get_or_create(
            slug=slug,
            defaults={"name": name, "weight": weight, "slo_slowdown": slowdown,
                      "slo_percentile": percentile, "max_concurrent_workflows": max_workflows},
        )
        if not created:
            self.stdout.write(f"tenant {slug}: exists")
            return
        tenant.full_clean()
        _key, secret = ApiKey.issue(tenant, "demo")
        self.stdout.write(f"tenant {slug}: weight {weight:g}, SLO {tenant.slo_label}, "
                          f"API key (shown once): {secret}")

    def _policy(self, kind: str, plugin: str) -> None:
        if current_activation(kind) is not None:
            return
        policy = Policy.objects.filter(kind=kind, plugin_name=plugin).order_by("-version").first()
        if policy is None:
            policy = Policy(kind=kind, plugin_name=plugin, params={},
                            description="SAGA default (demo)")
            policy.full_clean()
            policy.save()
        activate_policy(policy, actor="seed_demo", reason="demo defaults")
        self.stdout.write(f"{kind} policy: {policy}")

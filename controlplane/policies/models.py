"""Policies and activations.

A ``Policy`` row is one configuration of an installed plugin (kind, plugin name, validated
params), numbered by ``version`` per plugin. A ``PolicyActivation`` says that a configuration
became active for a scope (the whole cluster or one tenant) and links to the activation it
replaced, so each scope's history is a chain: the current policy is the chain's head, rollback
re-activates the head's predecessor, and the audit trail is the chain itself.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q


class PolicyKind(models.TextChoices):
    EVICTION = "eviction", "Eviction"
    BATCHING = "batching", "Batching / routing"
    FAIRNESS = "fairness", "Fairness"


class Policy(models.Model):
    kind = models.CharField(max_length=16, choices=PolicyKind.choices)
    plugin_name = models.CharField(max_length=100)
    plugin_version = models.CharField(
        max_length=32, blank=True, editable=False, help_text="Plugin version it was validated by."
    )
    params = models.JSONField(default=dict, blank=True)
    version = models.PositiveIntegerField(
        editable=False, help_text="Revision of this plugin's configuration, from 1."
    )
    description = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+", editable=False,
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["kind", "plugin_name", "-version"]
        verbose_name_plural = "policies"
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "plugin_name", "version"], name="policy_version_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.plugin_name} v{self.version}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.version is None:
            latest = (
                Policy.objects.filter(kind=self.kind, plugin_name=self.plugin_name)
                .aggregate(models.Max("version"))["version__max"]
            )
            self.version = (latest or 0) + 1
        super().save(*args, **kwargs)

    def clean(self) -> None:
        """Validate params with the plugin's own schema; store the normalised form."""
        from controlplane.policies.catalogue import model_field, validate_policy
        from plugins.base import PolicyConfigError

        try:
            normalised, plugin_version = validate_policy(self.kind, self.plugin_name, self.params)
        except PolicyConfigError as exc:
            raise ValidationError({model_field(exc): str(exc)}) from exc
        self.params = normalised
        self.plugin_version = plugin_version


class ActivationScope(models.TextChoices):
    CLUSTER = "cluster", "Whole cluster"
    TENANT = "tenant", "One tenant"


class PolicyActivation(models.Model):
    kind = models.CharField(max_length=16, choices=PolicyKind.choices, editable=False)
    scope = models.CharField(
        max_length=8, choices=ActivationScope.choices, default=ActivationScope.CLUSTER
    )
    tenant = models.ForeignKey(
        "tenants.Tenant", null=True, blank=True, on_delete=models.CASCADE,
        related_name="policy_activations",
    )
    scope_key = models.CharField(
        max_length=80, editable=False,
        help_text="'cluster' or 'tenant:<id>': one activation chain per kind and scope key.",
    )
    policy = models.ForeignKey(Policy, on_delete=models.PROTECT, related_name="activations")
    previous = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="successor",
        editable=False,
    )
    is_rollback = models.BooleanField(default=False, editable=False)
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+", editable=False,
    )
    actor = models.CharField(max_length=200, editable=False, help_text="Who, as recorded.")
    reason = models.CharField(max_length=500, blank=True)
    activated_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-activated_at", "-id"]
        indexes = [models.Index(fields=["kind", "scope_key", "-id"])]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "scope_key"],
                condition=Q(previous__isnull=True),
                name="activation_one_chain_start_per_scope",
            ),
            models.CheckConstraint(
                condition=(Q(scope="cluster") & Q(tenant__isnull=True))
                | (Q(scope="tenant") & Q(tenant__isnull=False)),
                name="activation_tenant_matches_scope",
                violation_error_message="a tenant is required for tenant scope and only then",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.scope_key} {self.kind} -> {self.policy}"

    @staticmethod
    def key_for(scope: str, tenant_id: int | None) -> str:
        return "cluster" if scope == ActivationScope.CLUSTER else f"tenant:{tenant_id}"

    def clean(self) -> None:
        if self.policy_id is not None and self.kind and self.policy.kind != self.kind:
            raise ValidationError(
                {"policy": f"policy is a {self.policy.kind} policy, not {self.kind}"}
            )
        if self.scope == ActivationScope.TENANT and self.tenant_id is None:
            raise ValidationError({"tenant": "a tenant is required for tenant scope"})
        if self.scope == ActivationScope.CLUSTER and self.tenant_id is not None:
            raise ValidationError({"tenant": "cluster-scope activations take no tenant"})

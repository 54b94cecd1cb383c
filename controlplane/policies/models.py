"""Policies and activations.

A ``Policy`` row is one configuration of an installed plugin (kind, plugin name, validated
params), numbered by ``version`` per plugin. A ``PolicyActivation`` says that a configuration
became active on the cluster and links to the activation it replaced, so each kind's history is
a chain: the current policy is the chain's head, rollback re-activates the head's predecessor,
and the audit trail is the chain itself.

Activations are cluster-wide: every host applies one policy per kind to every tenant's calls
(tenants differ by their weights, SLOs and quotas, which the fairness policy reads). Routing
activations are applied by the gateway, the other kinds by the nodes (``plugins.hookspecs``'
CLUSTER_KINDS / NODE_KINDS).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q


class PolicyKind(models.TextChoices):
    EVICTION = "eviction", "Eviction"
    ROUTING = "routing", "Routing (gateway)"
    ADMISSION = "admission", "Admission"
    FAIRNESS = "fairness", "Fairness"


GATEWAY_KINDS = (PolicyKind.ROUTING,)
"""Kinds the gateway applies: their activations are not sent to nodes (plugins.hookspecs)."""


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


class RolloutStatus(models.TextChoices):
    """Where an activation's rollout stands, from the nodes' answers (``policies.rollout``)."""

    PENDING = "pending", "Rolling out (nodes still to answer)"
    APPLIED = "applied", "Applied (every node that answered runs it)"
    PARTIAL = "partial", "Partial (some nodes refused it)"
    FAILED = "failed", "Failed (every node refused it; not active)"


class ActivationQuerySet(models.QuerySet["PolicyActivation"]):
    def in_force(self) -> ActivationQuerySet:
        """Activations that count: a failed one (every node refused it) never became active."""
        return self.exclude(rollout=RolloutStatus.FAILED)

    def newest(self, kind: str) -> PolicyActivation | None:
        """The newest activation of ``kind``, failed or not (what a rollout page shows)."""
        return self.filter(kind=kind).select_related("policy").order_by("-id").first()

    def active(self, kind: str) -> PolicyActivation | None:
        """The activation in force for ``kind``: the newest of its chain that did not fail."""
        return (self.in_force().filter(kind=kind).select_related("policy")
                .order_by("-id").first())


class PolicyActivation(models.Model):
    kind = models.CharField(max_length=16, choices=PolicyKind.choices, editable=False)
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
    rollout = models.CharField(
        max_length=8, choices=RolloutStatus.choices, default=RolloutStatus.PENDING,
        editable=False,
        help_text="From the nodes' answers: pending, applied, partial, or failed (every node "
        "refused it: it is not the active policy, the nodes kept the one before).",
    )
    rollout_settled_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ActivationQuerySet.as_manager()

    class Meta:
        ordering = ["-activated_at", "-id"]
        indexes = [models.Index(fields=["kind", "-id"], name="policies_po_kind_chain_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["kind"],
                condition=Q(previous__isnull=True),
                name="activation_one_chain_start_per_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} -> {self.policy}"

    def clean(self) -> None:
        if self.policy_id is not None and self.kind and self.policy.kind != self.kind:
            raise ValidationError(
                {"policy": f"policy is a {self.policy.kind} policy, not {self.kind}"}
            )


class NodeRollout(models.Model):
    """One node's answer to one activation: the per-activation record the rollout status is
    computed from (``NodePolicyState`` keeps only each node's latest answer per kind)."""

    activation = models.ForeignKey(PolicyActivation, on_delete=models.CASCADE,
                                   related_name="node_rollouts", editable=False)
    node = models.ForeignKey("nodes.Node", on_delete=models.CASCADE, related_name="rollouts",
                             editable=False)
    status = models.CharField(max_length=16, default="pending", editable=False,
                              help_text="pending, applied or rejected "
                              "(nodes.PolicyApplyStatus)")
    error = models.TextField(blank=True, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["activation", "node"]
        constraints = [models.UniqueConstraint(fields=["activation", "node"],
                                               name="node_rollout_unique")]

    def __str__(self) -> str:
        return f"{self.activation_id} on {self.node_id}: {self.status}"


class PolicyFailure(models.Model):
    """A policy that raised at run time and was replaced by its fallback, as reported by the
    gateway (routing) or a node (eviction, admission, fairness). Append-only telemetry: what an
    operator sees in the API and what ``saga_policy_failures_total`` counts."""

    class Tier(models.TextChoices):
        GATEWAY = "gateway", "Gateway"
        NODE = "node", "Node"

    tier = models.CharField(max_length=8, choices=Tier.choices, editable=False)
    reporter = models.CharField(
        max_length=100, editable=False, help_text="Gateway process id or node name."
    )
    kind = models.CharField(max_length=16, editable=False)
    policy = models.CharField(max_length=100, editable=False)
    hook = models.CharField(max_length=64, blank=True, editable=False)
    error = models.TextField(blank=True, editable=False)
    replaced_by = models.CharField(max_length=100, blank=True, editable=False)
    occurred_at = models.DateTimeField(editable=False)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [models.Index(fields=["-occurred_at"])]

    def __str__(self) -> str:
        return f"{self.tier} {self.reporter}: {self.kind}:{self.policy} failed in {self.hook}"

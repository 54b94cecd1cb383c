"""Tenants and API keys.

A tenant is the unit of fairness and of SLOs: Agent Fair Share gives each tenant service in
proportion to ``weight``, and the SLO says how much slower than running alone its tasks may
be (``slo_slowdown`` at percentile ``slo_percentile``).
"""

from __future__ import annotations

from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from controlplane import credentials


def validate_positive(value: float) -> None:
    if not value > 0:
        raise ValidationError("must be greater than 0 (got %(value)s)", params={"value": value})


def validate_percentile(value: float) -> None:
    if not 0 < value <= 100:
        raise ValidationError(
            "must be in (0, 100], e.g. 95 for p95 (got %(value)s)", params={"value": value}
        )


class Tenant(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    weight = models.FloatField(
        default=1.0,
        validators=[validate_positive],
        help_text="Fair-share weight: service is shared in proportion to weights.",
    )
    slo_slowdown = models.FloatField(
        default=2.0,
        validators=[MinValueValidator(1.0, "must be at least 1.0 (1.0 = as fast as alone)")],
        help_text="Target task completion time as a multiple of running alone.",
    )
    slo_percentile = models.FloatField(
        default=95.0,
        validators=[validate_percentile],
        help_text="Percentile of tasks the slowdown target applies to, e.g. 95 for p95.",
    )
    max_concurrent_workflows = models.PositiveIntegerField(
        null=True, blank=True, help_text="Quota; empty = unlimited, 0 = no new workflows."
    )
    tokens_per_minute = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Quota on prompt + output tokens; empty = unlimited."
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(
                condition=Q(weight__gt=0),
                name="tenant_weight_positive",
                violation_error_message="weight must be greater than 0",
            ),
            models.CheckConstraint(
                condition=Q(slo_slowdown__gte=1.0),
                name="tenant_slo_slowdown_at_least_one",
                violation_error_message="slo_slowdown must be at least 1.0",
            ),
            models.CheckConstraint(
                condition=Q(slo_percentile__gt=0) & Q(slo_percentile__lte=100),
                name="tenant_slo_percentile_range",
                violation_error_message="slo_percentile must be in (0, 100]",
            ),
        ]

    def __str__(self) -> str:
        return self.slug

    @property
    def slo_label(self) -> str:
        return f"p{self.slo_percentile:g} <= {self.slo_slowdown:g}x"


class ApiKeyScope(models.TextChoices):
    INFERENCE = "inference", "OpenAI-compatible gateway"
    WORKFLOWS = "workflows", "Workflow REST API"
    ADMIN = "admin", "Cluster administration"


def validate_scopes(value: object) -> None:
    if not isinstance(value, list) or not value:
        raise ValidationError("scopes must be a non-empty list")
    unknown = sorted({str(s) for s in value} - set(ApiKeyScope.values))
    if unknown:
        raise ValidationError(
            "unknown scope(s) %(unknown)s; valid: %(valid)s",
            params={"unknown": ", ".join(unknown), "valid": ", ".join(ApiKeyScope.values)},
        )


def default_scopes() -> list[str]:
    return [ApiKeyScope.INFERENCE, ApiKeyScope.WORKFLOWS]


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def usable(self) -> ApiKeyQuerySet:
        now = timezone.now()
        return self.filter(revoked_at__isnull=True, tenant__is_active=True).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        )


class ApiKey(models.Model):
    """A tenant's bearer key. Only its prefix and SHA-256 are stored (see ``credentials``)."""

    SECRET_KIND = "sk"
    # Writing last_used_at on every request would make each gateway call a DB write.
    LAST_USED_RESOLUTION = timedelta(minutes=1)

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, help_text="What the key is for, e.g. 'ci-agents'.")
    prefix = models.CharField(max_length=credentials.PREFIX_CHARS, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=default_scopes, validators=[validate_scopes])
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.name} ({self.display_prefix})"

    @property
    def display_prefix(self) -> str:
        return f"{self.SECRET_KIND}_{self.prefix}_..."

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def assign_new_secret(self) -> str:
        """Give this (unsaved) key a fresh secret and return the plaintext, shown only once."""
        issued = credentials.issue_secret(self.SECRET_KIND)
        self.prefix = issued.prefix
        self.key_hash = issued.digest
        return issued.plaintext

    @classmethod
    def issue(
        cls, tenant: Tenant, name: str, scopes: list[str] | None = None
    ) -> tuple[ApiKey, str]:
        """Create and save a key; returns it with the plaintext secret (never stored)."""
        key = cls(tenant=tenant, name=name, scopes=scopes or default_scopes())
        plaintext = key.assign_new_secret()
        key.full_clean()
        key.save()
        return key, plaintext

    @classmethod
    def authenticate(cls, plaintext: str, *, scope: str | None = None) -> ApiKey | None:
        """The usable key matching ``plaintext`` (and holding ``scope``), else None.

        Revoked or expired keys and keys of inactive tenants never authenticate. The digest
        comparison is constant-time.
        """
        prefix = credentials.parse_prefix(plaintext, cls.SECRET_KIND)
        if prefix is None:
            return None
        key = cls.objects.usable().select_related("tenant").filter(prefix=prefix).first()
        if key is None or not credentials.secret_matches(plaintext, key.key_hash):
            return None
        if scope is not None and scope not in key.scopes:
            return None
        key.touch()
        return key

    def touch(self) -> None:
        now = timezone.now()
        if self.last_used_at is None or now - self.last_used_at >= self.LAST_USED_RESOLUTION:
            self.last_used_at = now
            type(self).objects.filter(pk=self.pk).update(last_used_at=now)

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])

"""Audit events: append-only records of changes to tenants, keys, nodes and policies.

Rows are never updated or deleted by the application (the admin is read-only for them);
``record`` is the one way in, so every event has the same shape.
"""

from __future__ import annotations

import datetime
import decimal
import uuid
from typing import Any

from django.conf import settings
from django.db import models

# Fields never copied into before/after snapshots: they are secrets or their digests.
REDACTED_FIELDS = frozenset({"key_hash", "token_hash", "password"})


class AuditEvent(models.Model):
    actor = models.CharField(max_length=200, help_text="User name, 'apikey:<prefix>' or 'system'.")
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=64, help_text="e.g. policy.activate, apikey.revoke")
    object_type = models.CharField(max_length=100)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=300, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.object_repr}"


def snapshot(instance: models.Model | None) -> dict[str, Any] | None:
    """A JSON-safe dict of a model instance's fields, secrets redacted."""
    if instance is None:
        return None
    return {
        field.name: _json_safe(getattr(instance, field.attname))
        for field in instance._meta.concrete_fields
        if field.name not in REDACTED_FIELDS
    }


def record(
    *,
    actor: Any,
    action: str,
    obj: models.Model,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append an audit event. ``actor`` is a user, a string, or None for the system."""
    actor_user = actor if getattr(actor, "is_authenticated", False) else None
    actor_name = (
        actor_user.get_username() if actor_user is not None else (str(actor) if actor else "system")
    )
    return AuditEvent.objects.create(
        actor=actor_name,
        actor_user=actor_user,
        action=action,
        object_type=obj._meta.label_lower,
        object_id=str(obj.pk or ""),
        object_repr=str(obj)[:300],
        before=before,
        after=after,
    )


def _json_safe(value: Any) -> Any:
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, models.Model):
        return value.pk
    return value

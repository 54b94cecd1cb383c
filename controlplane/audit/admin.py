from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from controlplane.admin_audit import audit_registered_admins
from controlplane.audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only and undeletable: the audit trail is append-only (no actions either, since
    ``delete_selected`` needs the delete permission)."""

    list_display = ("created_at", "actor", "action", "object_type", "object_repr")
    list_filter = ("action", "object_type")
    search_fields = ("actor", "action", "object_repr", "object_id")
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# Edits of users, groups and Celery beat schedules through the admin are audited like ours.
# This module is imported after those apps' admin modules (INSTALLED_APPS order).
audit_registered_admins(admin.site, ("auth", "django_celery_beat"))

"""A ModelAdmin base that writes an AuditEvent for every change made through the admin."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import models, transaction
from django.http import HttpRequest

from controlplane.audit.models import record, snapshot


class AuditedModelAdmin(admin.ModelAdmin):
    audit_name: str = ""  # action prefix, e.g. "tenant" -> tenant.create / tenant.update

    def _action(self, verb: str) -> str:
        return f"{self.audit_name or self.model._meta.model_name}.{verb}"

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        before = snapshot(type(obj).objects.get(pk=obj.pk)) if change and obj.pk else None
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            record(
                actor=request.user,
                action=self._action("update" if change else "create"),
                obj=obj,
                before=before,
                after=snapshot(obj),
            )

    def delete_model(self, request: HttpRequest, obj: models.Model) -> None:
        with transaction.atomic():
            record(actor=request.user, action=self._action("delete"), obj=obj, before=snapshot(obj))
            super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: models.QuerySet[Any]) -> None:
        with transaction.atomic():
            for obj in queryset:
                record(
                    actor=request.user, action=self._action("delete"), obj=obj, before=snapshot(obj)
                )
            super().delete_queryset(request, queryset)

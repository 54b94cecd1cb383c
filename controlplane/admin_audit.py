"""A ModelAdmin base that writes an AuditEvent for every change made through the admin.

What is audited, and where:

- adds and edits (change form, ``list_editable``, any view that calls ``log_addition`` /
  ``log_change``, such as the user admin's password form): one ``<name>.create`` or
  ``<name>.update`` event with before/after snapshots, many-to-many fields included. The event
  is written where Django writes its own LogEntry, i.e. after the related objects are saved
  (inside the view's transaction for the change form and ``list_editable``);
- deletes, single or bulk: one ``<name>.delete`` event per object, in the delete's transaction;
- admin actions: every action is wrapped so that each selected object gets a
  ``<name>.<action>`` event with before/after snapshots, unless the admin lists the action in
  ``audited_actions`` because the action (or the service it calls) writes its own, more
  specific event.

Admins that are not an ``AuditedModelAdmin`` must be read-only (no add, change or delete, no
actions); ``tests/controlplane/test_admin_readonly.py`` checks every registered admin.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from typing import Any

from django.contrib import admin
from django.db import models, transaction
from django.http import HttpRequest
from django.utils.html import format_html

from controlplane.audit.models import record, snapshot

# Set on an instance by ``get_object`` / ``save_model``: its state before the admin changed it.
_BEFORE_ATTR = "_saga_audit_before"


def audit_snapshot(instance: models.Model | None) -> dict[str, Any] | None:
    """``snapshot`` plus the instance's many-to-many fields, as sorted lists of primary keys."""
    data = snapshot(instance)
    if instance is None or data is None or instance.pk is None:
        return data
    for field in instance._meta.many_to_many:
        pks = getattr(instance, field.name).values_list("pk", flat=True)
        data[field.name] = sorted(str(pk) for pk in pks)
    return data


class AuditedModelAdmin(admin.ModelAdmin):
    audit_name: str = ""  # action prefix, e.g. "tenant" -> tenant.create / tenant.update
    # Actions that write their own AuditEvents; all others are audited by ``get_actions``.
    # ``delete_selected`` is always one of them (``delete_queryset`` audits it).
    audited_actions: tuple[str, ...] = ()

    def _action(self, verb: str) -> str:
        return f"{self.audit_name or self.model._meta.model_name}.{verb}"

    # -- adds and edits ------------------------------------------------------------------------

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        obj = super().get_object(request, object_id, from_field)
        if obj is not None:
            setattr(obj, _BEFORE_ATTR, audit_snapshot(obj))
        return obj

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change and obj.pk and not hasattr(obj, _BEFORE_ATTR):
            # Not fetched through get_object (list_editable): read the stored row.
            stored = type(obj)._default_manager.filter(pk=obj.pk).first()
            setattr(obj, _BEFORE_ATTR, audit_snapshot(stored))
        super().save_model(request, obj, form, change)

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        self._record_save(request, obj, change=False)
        return super().log_addition(request, obj, message)

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        self._record_save(request, obj, change=True)
        return super().log_change(request, obj, message)

    def _record_save(self, request: HttpRequest, obj: Any, *, change: bool) -> None:
        before = getattr(obj, _BEFORE_ATTR, None) if change else None
        after = audit_snapshot(obj)
        record(
            actor=request.user,
            action=self._action("update" if change else "create"),
            obj=obj,
            before=before,
            after=after,
        )
        setattr(obj, _BEFORE_ATTR, after)  # a second save in the same request diffs from here

    # -- deletes -------------------------------------------------------------------------------

    def delete_model(self, request: HttpRequest, obj: models.Model) -> None:
        with transaction.atomic():
            record(
                actor=request.user, action=self._action("delete"), obj=obj,
                before=audit_snapshot(obj),
            )
            super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: models.QuerySet[Any]) -> None:
        with transaction.atomic():
            for obj in queryset:
                record(
                    actor=request.user, action=self._action("delete"), obj=obj,
                    before=audit_snapshot(obj),
                )
            super().delete_queryset(request, queryset)

    # -- actions -------------------------------------------------------------------------------

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        self_audited = {"delete_selected", *self.audited_actions}
        actions: dict[str, Any] = super().get_actions(request)
        return {
            name: (func if name in self_audited else self._audit_action(name, func), name, desc)
            for name, (func, _name, desc) in actions.items()
        }

    def _audit_action(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def audited(modeladmin: Any, request: HttpRequest, queryset: Any) -> Any:
            with transaction.atomic():
                selected = list(queryset)
                before = {obj.pk: audit_snapshot(obj) for obj in selected}
                response = func(modeladmin, request, queryset)
                now = self.model._default_manager.in_bulk([obj.pk for obj in selected])
                for obj in selected:
                    record(
                        actor=request.user, action=self._action(name), obj=obj,
                        before=before[obj.pk], after=audit_snapshot(now.get(obj.pk)),
                    )
            return response

        return audited


def audit_registered_admins(site: admin.AdminSite, app_labels: Iterable[str]) -> None:
    """Re-register the admins of other apps' models (Django's users and groups, Celery beat's
    schedules) as AuditedModelAdmin subclasses of themselves, so their edits are audited too."""
    labels = set(app_labels)
    for model, model_admin in list(site._registry.items()):
        cls = type(model_admin)
        if model._meta.app_label not in labels or isinstance(model_admin, AuditedModelAdmin):
            continue
        audited = type(f"Audited{cls.__name__}", (AuditedModelAdmin, cls), {
            "__module__": __name__, "__doc__": cls.__doc__,
        })
        site.unregister(model)
        site.register(model, audited)


class ReadOnlyAdminMixin:
    """View permission only: no add, no change, no delete (so no ``delete_selected`` either).

    For recorded telemetry and for inlines; works on ModelAdmins and InlineModelAdmins."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def pretty_json(value: Any) -> str:
    """A JSON value as an indented, escaped ``<pre>`` block, for read-only display."""
    return format_html(
        '<pre class="saga-json">{}</pre>', json.dumps(value, indent=2, sort_keys=True, default=str)
    )

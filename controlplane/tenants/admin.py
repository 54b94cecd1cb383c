from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone

from controlplane.admin_audit import AuditedModelAdmin, ReadOnlyAdminMixin
from controlplane.admin_secrets import show_secret_once
from controlplane.audit.models import record, snapshot
from controlplane.tenants.models import ApiKey, Tenant


class ApiKeyInline(ReadOnlyAdminMixin, admin.TabularInline):
    """Keys are created from the API key page, which shows the secret once; read-only here."""

    model = ApiKey
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("name", "display_prefix", "scopes", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields


@admin.register(Tenant)
class TenantAdmin(AuditedModelAdmin):
    """Tenants' fair share, SLO and quotas; every add, edit and delete is audited. Deleting a
    tenant that has workflows, API keys or policy activations is refused by Django (those
    admins deny deletion): deactivate it instead."""

    audit_name = "tenant"
    list_display = (
        "slug", "name", "weight", "slo_label", "max_concurrent_workflows", "tokens_per_minute",
        "is_active",
    )
    list_filter = ("is_active",)
    search_fields = ("slug", "name")
    prepopulated_fields = {"slug": ("name",)}
    inlines = [ApiKeyInline]
    fieldsets = (
        (None, {"fields": ("name", "slug", "is_active")}),
        ("Fair share and SLO", {"fields": ("weight", "slo_slowdown", "slo_percentile")}),
        ("Quotas", {"fields": ("max_concurrent_workflows", "tokens_per_minute")}),
    )

    @admin.display(description="SLO")
    def slo_label(self, obj: Tenant) -> str:
        return obj.slo_label


@admin.register(ApiKey)
class ApiKeyAdmin(AuditedModelAdmin):
    """API keys: created here (secret shown once), renamed, re-scoped, revoked; all audited.
    The tenant is fixed once a key exists."""

    audit_name = "apikey"
    audited_actions = ("revoke_keys",)
    list_display = (
        "display_prefix", "tenant", "name", "scopes", "created_at", "last_used_at", "status",
    )
    list_filter = ("tenant", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("name", "prefix", "tenant__slug", "tenant__name")
    list_select_related = ("tenant",)
    readonly_fields = ("display_prefix", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke_keys"]

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> Any:
        if obj is None:
            return ["tenant", "name", "scopes", "expires_at"]
        return ["tenant", "name", "display_prefix", "scopes", "expires_at", "created_at",
                "last_used_at", "revoked_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> Any:
        if obj is None:
            return ()
        return ("tenant", *self.readonly_fields)

    @admin.display(description="Status")
    def status(self, obj: ApiKey) -> str:
        if obj.is_revoked:
            return "revoked"
        if obj.expires_at and obj.expires_at <= timezone.now():
            return "expired"
        return "active"

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if not change:
            request._saga_issued_secret = obj.assign_new_secret()  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)  # audited (apikey.create / .update)

    def response_add(
        self, request: HttpRequest, obj: ApiKey, post_url_continue: Any = None
    ) -> HttpResponse:
        secret = getattr(request, "_saga_issued_secret", None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        return show_secret_once(
            request,
            title="API key created",
            subject=f"API key '{obj.name}' for tenant {obj.tenant.slug}, scopes: "
            f"{', '.join(obj.scopes)}.",
            secret=secret,
            usage="Send it as 'Authorization: Bearer <key>'.",
            back_url=reverse("admin:tenants_apikey_changelist"),
        )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke instead: the row keeps the audit trail of its use

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: Any) -> None:
        revoked = 0
        with transaction.atomic():
            for key in queryset.filter(revoked_at__isnull=True):
                before = snapshot(key)
                key.revoke()
                record(actor=request.user, action="apikey.revoke", obj=key, before=before,
                       after=snapshot(key))
                revoked += 1
        self.message_user(request, f"Revoked {revoked} API key(s).", messages.SUCCESS)

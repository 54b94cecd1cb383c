"""Tenants: SLO attainment over time, slowdown distributions, quota use; create and edit
tenants; issue and revoke API keys (a new key is shown once)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from controlplane.audit.models import record, snapshot
from controlplane.console.forms import ApiKeyForm, TenantForm, model_errors
from controlplane.console.tenant_data import all_overviews, overview
from controlplane.console.views.common import page, staff_page
from controlplane.tenants.models import ApiKey, Tenant


def _require(request: HttpRequest, permission: str) -> None:
    if not request.user.has_perm(permission):
        raise PermissionDenied(f"this needs the {permission} permission")


@staff_page
def tenant_list(request: HttpRequest) -> HttpResponse:
    return page(request, "console/tenants.html", "tenants", overviews=all_overviews())


@staff_page
def tenant_new(request: HttpRequest) -> HttpResponse:
    _require(request, "tenants.add_tenant")
    form = TenantForm(request.POST or None,
                      initial={"weight": 1.0, "slo_slowdown": 2.0, "slo_percentile": 95.0,
                               "is_active": True})
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():
                tenant = form.save()
                record(actor=request.user, action="tenant.create", obj=tenant,
                       after=snapshot(tenant))
        except DjangoValidationError as exc:
            model_errors(form, exc)
        else:
            messages.success(request, f"Tenant {tenant.slug} created.")
            return redirect("console:tenant", slug=tenant.slug)
    return page(request, "console/tenant_form.html", "tenants", form=form, tenant=None)


@staff_page
def tenant(request: HttpRequest, slug: str) -> HttpResponse:
    row = get_object_or_404(Tenant, slug=slug)
    form = TenantForm(instance=row)
    if request.method == "POST":
        _require(request, "tenants.change_tenant")
        form = TenantForm(request.POST, instance=row)
        before = snapshot(row)
        if form.is_valid():
            try:
                with transaction.atomic():
                    updated = form.save()
                    record(actor=request.user, action="tenant.update", obj=updated,
                           before=before, after=snapshot(updated))
            except DjangoValidationError as exc:
                model_errors(form, exc)
            else:
                messages.success(request, f"Tenant {row.slug} saved.")
                return redirect("console:tenant", slug=row.slug)
        row.refresh_from_db()
    keys = row.api_keys.order_by("-created_at")
    return page(request, "console/tenant.html", "tenants", tenant=row, form=form,
                key_form=ApiKeyForm(), keys=keys, data=overview(row))


@staff_page
def key_new(request: HttpRequest, slug: str) -> HttpResponse:
    _require(request, "tenants.add_apikey")
    row = get_object_or_404(Tenant, slug=slug)
    form = ApiKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            key, secret = ApiKey.issue(row, form.cleaned_data["name"],
                                       list(form.cleaned_data["scopes"]))
            if form.cleaned_data.get("expires_at"):
                key.expires_at = form.cleaned_data["expires_at"]
                key.save(update_fields=["expires_at"])
            record(actor=request.user, action="apikey.create", obj=key,
                   after={"prefix": key.prefix, "scopes": key.scopes})
        response = page(request, "console/key_created.html", "tenants", tenant=row, key=key,
                        secret=secret)
        response["Cache-Control"] = "no-store"  # the secret must not outlive this page
        return response
    return page(request, "console/key_form.html", "tenants", tenant=row, form=form)


@staff_page
@require_POST
def key_revoke(request: HttpRequest, slug: str, key_id: int) -> HttpResponse:
    _require(request, "tenants.change_apikey")
    key = get_object_or_404(ApiKey, pk=key_id, tenant__slug=slug)
    if key.revoked_at is None:
        with transaction.atomic():
            key.revoke()
            record(actor=request.user, action="apikey.revoke", obj=key)
        messages.success(request, f"Key {key.display_prefix} revoked.")
    return redirect("console:tenant", slug=slug)

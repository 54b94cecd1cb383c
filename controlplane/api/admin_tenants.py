"""Admin endpoints for tenants and their API keys (a created key is shown once)."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Router, Schema, Status

from controlplane.api.auth import actor_of, admin_auth
from controlplane.api.errors import ApiError, not_found
from controlplane.audit.models import record, snapshot
from controlplane.tenants.models import ApiKey, ApiKeyScope, Tenant

router = Router(tags=["admin: tenants"], auth=admin_auth)


class TenantIn(Schema):
    slug: str = Field(min_length=1, max_length=64, pattern=r"^[-a-zA-Z0-9_]+$")
    name: str = Field(min_length=1, max_length=200)
    weight: float = 1.0
    slo_slowdown: float = 2.0
    slo_percentile: float = 95.0
    max_concurrent_workflows: int | None = None
    tokens_per_minute: int | None = None
    is_active: bool = True


class TenantPatch(Schema):
    name: str | None = Field(None, min_length=1, max_length=200)
    weight: float | None = None
    slo_slowdown: float | None = None
    slo_percentile: float | None = None
    max_concurrent_workflows: int | None = None
    tokens_per_minute: int | None = None
    is_active: bool | None = None


class TenantOut(Schema):
    slug: str
    name: str
    weight: float
    slo_slowdown: float
    slo_percentile: float
    max_concurrent_workflows: int | None
    tokens_per_minute: int | None
    is_active: bool
    created_at: datetime


class KeyIn(Schema):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[ApiKeyScope] = Field(
        default_factory=lambda: [ApiKeyScope.INFERENCE, ApiKeyScope.WORKFLOWS], min_length=1
    )
    expires_at: datetime | None = None


class KeyOut(Schema):
    id: int
    tenant: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class CreatedKeyOut(KeyOut):
    key: str = Field(description="The secret. Shown in this response only; store it now.")


def _key_out(key: ApiKey) -> dict[str, object]:
    return {"id": key.pk, "tenant": key.tenant.slug, "name": key.name,
            "prefix": key.display_prefix, "scopes": key.scopes, "created_at": key.created_at,
            "last_used_at": key.last_used_at, "expires_at": key.expires_at,
            "revoked_at": key.revoked_at}


def _tenant(slug: str) -> Tenant:
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is None:
        raise not_found(f"tenant {slug!r}")
    return tenant


@router.get("/tenants", response=list[TenantOut])
def list_tenants(request: HttpRequest) -> list[Tenant]:
    return list(Tenant.objects.all())


@router.post("/tenants", response={201: TenantOut})
def create_tenant(request: HttpRequest, body: TenantIn) -> Status[Tenant]:
    tenant = Tenant(**body.model_dump())
    tenant.full_clean()
    with transaction.atomic():
        tenant.save()
        record(actor=actor_of(request), action="tenant.create", obj=tenant,
               after=snapshot(tenant))
    return Status(201, tenant)


@router.get("/tenants/{slug}", response=TenantOut)
def get_tenant(request: HttpRequest, slug: str) -> Tenant:
    return _tenant(slug)


@router.patch("/tenants/{slug}", response=TenantOut)
def update_tenant(request: HttpRequest, slug: str, body: TenantPatch) -> Tenant:
    tenant = _tenant(slug)
    before = snapshot(tenant)
    for field, value in body.model_dump(exclude_unset=True).items():
        setattr(tenant, field, value)
    tenant.full_clean()
    with transaction.atomic():
        tenant.save()
        record(actor=actor_of(request), action="tenant.update", obj=tenant, before=before,
               after=snapshot(tenant))
    return tenant


@router.get("/tenants/{slug}/keys", response=list[KeyOut])
def list_keys(request: HttpRequest, slug: str) -> list[dict[str, object]]:
    return [_key_out(k) for k in _tenant(slug).api_keys.select_related("tenant")]


@router.post("/tenants/{slug}/keys", response={201: CreatedKeyOut})
def create_key(request: HttpRequest, slug: str, body: KeyIn) -> Status[dict[str, object]]:
    tenant = _tenant(slug)
    if body.expires_at is not None and body.expires_at <= timezone.now():
        raise ApiError(422, "invalid", "expires_at: must be in the future", "expires_at")
    with transaction.atomic():
        key, secret = ApiKey.issue(tenant, body.name, [str(s) for s in body.scopes])
        if body.expires_at is not None:
            key.expires_at = body.expires_at
            key.save(update_fields=["expires_at"])
        record(actor=actor_of(request), action="apikey.create", obj=key,
               after={"prefix": key.prefix, "scopes": key.scopes})
    return Status(201, {**_key_out(key), "key": secret})


@router.post("/keys/{key_id}/revoke", response=KeyOut)
def revoke_key(request: HttpRequest, key_id: int) -> dict[str, object]:
    key = ApiKey.objects.select_related("tenant").filter(pk=key_id).first()
    if key is None:
        raise not_found(f"API key {key_id}")
    with transaction.atomic():
        key.revoke()
        record(actor=actor_of(request), action="apikey.revoke", obj=key)
    return _key_out(key)

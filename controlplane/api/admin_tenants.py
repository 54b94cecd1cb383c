"""Admin endpoints for tenants and their API keys (a created key is shown once).

Numbers are bounded so that every policy computing with them stays finite: fair-share weights in
[0.001, 1000], SLO slowdowns in [1, 10**6], percentiles in (0, 100], quotas within their
database columns. A duplicate slug is 409.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Path, Router, Schema, Status

from controlplane.api.auth import actor_of, admin_auth
from controlplane.api.errors import ApiError, errors, not_found
from controlplane.audit.models import record, snapshot
from controlplane.tenants.models import ApiKey, ApiKeyScope, Tenant
from controlplane.validation import (
    MAX_DB_ID,
    MAX_INT32,
    DbId,
    FiniteFloat,
    Input,
    Omittable,
    Slug,
    StrictBool,
    StrictInt,
    Text,
    UtcDateTime,
)

router = Router(tags=["admin: tenants"], auth=admin_auth)


Weight = FiniteFloat(ge=0.001, le=1000.0)
SloSlowdown = FiniteFloat(ge=1.0, le=1e6)
SloPercentile = FiniteFloat(gt=0.0, le=100.0)
ConcurrencyQuota = StrictInt(ge=0, le=MAX_INT32)
TokenQuota = StrictInt(ge=0, le=MAX_DB_ID)
TenantName = Text(200, min_length=1)


class TenantIn(Input):
    slug: Slug
    name: TenantName
    weight: Weight = 1.0
    slo_slowdown: SloSlowdown = 2.0
    slo_percentile: SloPercentile = 95.0
    max_concurrent_workflows: ConcurrencyQuota | None = None
    tokens_per_minute: TokenQuota | None = None
    is_active: StrictBool = True


class TenantPatch(Input):
    """Fields left out are unchanged; quotas may be ``null`` (unlimited), the rest may not."""

    name: Omittable(TenantName) = None
    weight: Omittable(Weight) = None
    slo_slowdown: Omittable(SloSlowdown) = None
    slo_percentile: Omittable(SloPercentile) = None
    max_concurrent_workflows: ConcurrencyQuota | None = None
    tokens_per_minute: TokenQuota | None = None
    is_active: Omittable(StrictBool) = None


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


class KeyIn(Input):
    name: Text(100, min_length=1)
    scopes: list[ApiKeyScope] = Field(
        default_factory=lambda: [ApiKeyScope.INFERENCE, ApiKeyScope.WORKFLOWS], min_length=1,
        max_length=len(ApiKeyScope.values),
    )
    expires_at: UtcDateTime | None = Field(
        None, description="When the key stops working; in the future (else 422).")


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


SlugPath = Path[Slug]
KeyPath = Path[DbId]


@router.get("/tenants", response={200: list[TenantOut], **errors(401, 403)})
def list_tenants(request: HttpRequest) -> list[Tenant]:
    return list(Tenant.objects.all())


@router.post("/tenants", response={201: TenantOut, **errors(400, 401, 403, 409, 413, 422)})
def create_tenant(request: HttpRequest, body: TenantIn) -> Status[Tenant]:
    if Tenant.objects.filter(slug=body.slug).exists():
        raise ApiError(409, "conflict", f"tenant {body.slug!r} exists already", "slug")
    tenant = Tenant(**body.model_dump())
    tenant.full_clean()
    with transaction.atomic():
        tenant.save()
        record(actor=actor_of(request), action="tenant.create", obj=tenant,
               after=snapshot(tenant))
    return Status(201, tenant)


@router.get("/tenants/{slug}", response={200: TenantOut, **errors(401, 403, 404, 422)})
def get_tenant(request: HttpRequest, slug: SlugPath) -> Tenant:
    return _tenant(slug)


@router.patch("/tenants/{slug}",
               response={200: TenantOut, **errors(400, 401, 403, 404, 413, 422)})
def update_tenant(request: HttpRequest, slug: SlugPath, body: TenantPatch) -> Tenant:
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


@router.get("/tenants/{slug}/keys", response={200: list[KeyOut], **errors(401, 403, 404, 422)})
def list_keys(request: HttpRequest, slug: SlugPath) -> list[dict[str, object]]:
    return [_key_out(k) for k in _tenant(slug).api_keys.select_related("tenant")]


@router.post("/tenants/{slug}/keys",
             response={201: CreatedKeyOut, **errors(400, 401, 403, 404, 413, 422)})
def create_key(request: HttpRequest, slug: SlugPath, body: KeyIn) -> Status[dict[str, object]]:
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


@router.post("/keys/{key_id}/revoke", response={200: KeyOut, **errors(401, 403, 404, 422)})
def revoke_key(request: HttpRequest, key_id: KeyPath) -> dict[str, object]:
    key = ApiKey.objects.select_related("tenant").filter(pk=key_id).first()
    if key is None:
        raise not_found(f"API key {key_id}")
    with transaction.atomic():
        key.revoke()
        record(actor=actor_of(request), action="apikey.revoke", obj=key)
    return _key_out(key)

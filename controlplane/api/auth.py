"""Who may call the API.

Tenant endpoints take a tenant API key with the right scope (``Authorization: Bearer sk_...``)
and see only that tenant's objects. Admin endpoints take either a staff user's session (the web
UI; CSRF-checked by ninja for unsafe methods) or an API key with the ``admin`` scope.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.security import HttpBearer, SessionAuth

from controlplane.tenants.models import ApiKey, ApiKeyScope, Tenant


class TenantKeyAuth(HttpBearer):
    def __init__(self, scope: str) -> None:
        super().__init__()
        self.scope = scope

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey | None:
        return ApiKey.authenticate(token, scope=self.scope)


class AdminKeyAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> ApiKey | None:
        return ApiKey.authenticate(token, scope=ApiKeyScope.ADMIN)


class StaffSessionAuth(SessionAuth):
    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = super().authenticate(request, key)
        return user if user is not None and user.is_staff else None


workflows_auth = TenantKeyAuth(ApiKeyScope.WORKFLOWS)
admin_auth = [AdminKeyAuth(), StaffSessionAuth()]


def tenant_of(request: HttpRequest) -> Tenant:
    """The tenant whose key authenticated this request."""
    key: ApiKey = request.auth  # type: ignore[attr-defined]
    return key.tenant


def user_of(request: HttpRequest) -> Any:
    """The staff user behind a session-authenticated request, else None (API keys)."""
    auth = request.auth  # type: ignore[attr-defined]
    return None if isinstance(auth, ApiKey) else auth


def actor_of(request: HttpRequest) -> Any:
    """Who to record in the audit trail: the staff user, or ``apikey:<prefix>``."""
    auth = request.auth  # type: ignore[attr-defined]
    if isinstance(auth, ApiKey):
        return f"apikey:{auth.prefix}"
    return auth

"""Who may call the API.

Tenant endpoints take a tenant API key with the right scope (``Authorization: Bearer sk_...``)
and see only that tenant's objects. Admin endpoints take either a staff user's session (the web
UI; CSRF-checked for unsafe methods) or an API key with the ``admin`` scope.

The answers, always in the standard error body: no credentials, or a key that is unknown,
revoked or expired, is 401; a valid key without the endpoint's scope, a logged-in user who is
not staff, or a staff session whose unsafe request fails the CSRF check, is 403. CSRF is checked
only for requests that a session authenticates: a request without a session has nothing a
forged cross-site request could borrow, and a bearer key is never sent by a browser on its own.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.errors import AuthorizationError
from ninja.security import HttpBearer, SessionAuth
from ninja.utils import check_csrf

from controlplane.api.errors import ApiError
from controlplane.tenants.models import ApiKey, ApiKeyScope, Tenant


class TenantKeyAuth(HttpBearer):
    """A usable API key holding ``scope``; a usable key without it is 403, not 401."""

    def __init__(self, scope: str) -> None:
        super().__init__()
        self.scope = scope

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey | None:
        key = ApiKey.authenticate(token)
        if key is not None and self.scope not in key.scopes:
            raise AuthorizationError(message=f"this API key lacks the {str(self.scope)!r} scope "
                                     f"(it has: {', '.join(key.scopes)})")
        return key


class AdminKeyAuth(TenantKeyAuth):
    def __init__(self) -> None:
        super().__init__(ApiKeyScope.ADMIN)


class StaffSessionAuth(SessionAuth):
    """A staff user's session; unsafe methods must pass Django's CSRF check."""

    def _get_key(self, request: HttpRequest) -> str | None:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None  # no session: 401 once every scheme has declined
        if not user.is_staff:
            raise AuthorizationError(message="admin endpoints need a staff user")
        if not getattr(request, "_ninja_csrf_exempt", False) and check_csrf(request):
            raise ApiError(403, "csrf_failed", "CSRF check failed: send the csrftoken cookie's "
                           "value in the X-CSRFToken header", "X-CSRFToken")
        return request.COOKIES.get(self.param_name)

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

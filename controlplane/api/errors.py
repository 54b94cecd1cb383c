"""One error shape for the whole API, and the handlers that produce it.

Every error body is ``{"error": {"code": ..., "message": ..., "field": ...}}``: ``code`` is
stable and machine-readable, ``field`` names the offending input (``null`` when there is none).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, AuthorizationError
from ninja.errors import ValidationError as NinjaValidationError

from controlplane.quotas import QuotaExceeded
from controlplane.workflows.states import IllegalTransition

_LOCATIONS = {"body", "query", "path", "header", "cookie", "form", "payload"}


class ApiError(Exception):
    """Raise from a view to answer with ``status`` and the standard error body."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def _field_from_loc(loc: Any) -> str | None:
    parts = [str(p) for p in loc if str(p) not in _LOCATIONS]
    return ".".join(parts) or None


def install(api: NinjaAPI) -> None:
    def respond(request: HttpRequest, status: int, body: dict[str, Any]) -> HttpResponse:
        return api.create_response(request, body, status=status)

    @api.exception_handler(ApiError)
    def api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
        return respond(request, exc.status, error_body(exc.code, exc.message, exc.field))

    @api.exception_handler(NinjaValidationError)
    def invalid_input(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
        first = exc.errors[0] if exc.errors else {}
        field = _field_from_loc(first.get("loc", ()))
        message = first.get("msg", "invalid input")
        return respond(request, 422, error_body("invalid", f"{field}: {message}" if field
                                                else message, field))

    @api.exception_handler(DjangoValidationError)
    def invalid_model(request: HttpRequest, exc: DjangoValidationError) -> HttpResponse:
        if hasattr(exc, "error_dict"):
            field, messages = next(iter(exc.message_dict.items()))
            field = None if field == "__all__" else field
            return respond(request, 422, error_body("invalid", f"{field}: {messages[0]}"
                                                    if field else messages[0], field))
        return respond(request, 422, error_body("invalid", "; ".join(exc.messages)))

    @api.exception_handler(AuthenticationError)
    def unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
        response = respond(request, 401, error_body(
            "unauthenticated", "missing, malformed, revoked or expired credentials",
            "Authorization"))
        response["WWW-Authenticate"] = 'Bearer realm="saga"'
        return response

    @api.exception_handler(AuthorizationError)
    def forbidden(request: HttpRequest, exc: AuthorizationError) -> HttpResponse:
        return respond(request, 403, error_body("forbidden", str(exc) or "not allowed"))

    @api.exception_handler(Http404)
    def missing(request: HttpRequest, exc: Http404) -> HttpResponse:
        return respond(request, 404, error_body("not_found", str(exc) or "not found"))

    @api.exception_handler(IllegalTransition)
    def conflict(request: HttpRequest, exc: IllegalTransition) -> HttpResponse:
        return respond(request, 409, error_body("illegal_transition", str(exc), "state"))

    @api.exception_handler(QuotaExceeded)
    def quota(request: HttpRequest, exc: QuotaExceeded) -> HttpResponse:
        response = respond(request, 429, error_body("quota_exceeded", str(exc), exc.quota))
        response["Retry-After"] = str(exc.retry_after_s)
        return response

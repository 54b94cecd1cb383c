"""One error shape for the whole REST API, and the handlers that produce it.

Every error body is ``{"error": {"code": ..., "message": ..., "field": ...}}``: ``code`` is
stable and machine-readable, ``field`` names the offending input (``null`` when there is none).
That includes what django-ninja and Django answer on their own (unparseable bodies, CSRF
failures, bodies over ``DATA_UPLOAD_MAX_MEMORY_SIZE``, unknown paths), which would otherwise be
``{"detail": ...}`` or an HTML page. The gateway (``/v1``) keeps OpenAI's shape instead, which
unmodified SDKs parse; both shapes carry ``error.code`` and ``error.message``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.utils.datastructures import MultiValueDict
from ninja import NinjaAPI, Schema
from ninja.errors import AuthenticationError, AuthorizationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.parser import Parser

from controlplane.quotas import QuotaExceeded
from controlplane.validation import JsonProblem, control_character, loads_strict
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


class ErrorDetail(Schema):
    code: str
    message: str
    field: str | None


class ErrorOut(Schema):
    """The body of every REST error response."""

    error: ErrorDetail


ERROR_STATUSES = {
    400: "The body is not JSON (or nests too deep, or uses NaN/Infinity)",
    401: "Missing, malformed, revoked or expired credentials",
    403: "Authenticated, but not allowed: the key lacks the scope, or a session's CSRF check "
         "failed",
    404: "No such object (another tenant's objects are 404 too)",
    409: "Conflicts with the object's state, or with an existing object",
    413: "The body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE",
    422: "An input is invalid; `field` names it",
    429: "A quota is exhausted; see Retry-After",
}


def errors(*statuses: int) -> dict[int, Any]:
    """``response=`` entries documenting the given error statuses with ``ErrorOut``."""
    return {status: ErrorOut for status in statuses}


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def _field_from_loc(loc: Any) -> str | None:
    parts = [str(p) for p in loc if str(p) not in _LOCATIONS]
    return ".".join(parts) or None


class StrictJsonParser(Parser):
    """Bodies are RFC 8259 JSON with the rules of ``controlplane.validation`` (no NaN, NUL or
    lone surrogates, finite numbers, bounded nesting); query values carry no control
    characters. Everything a client sends is then storable in PostgreSQL."""

    def parse_body(self, request: HttpRequest) -> Any:
        try:
            return loads_strict(request.body)
        except JsonProblem as exc:
            if exc.syntax:
                raise ApiError(400, "invalid_json", f"request body: {exc.message}") from exc
            raise ApiError(422, "invalid", str(exc), exc.path or None) from exc

    def parse_querydict(self, data: MultiValueDict[str, Any], list_fields: list[str],
                        request: HttpRequest) -> dict[str, Any]:
        for key, values in data.lists():
            for value in [key, *values]:
                bad = control_character(value)
                if bad is not None:
                    raise ApiError(422, "invalid", f"{key}: must not contain control "
                                   f"characters (found U+{ord(bad):04X})", key)
        return super().parse_querydict(data, list_fields, request)


def install(api: NinjaAPI) -> None:
    def respond(request: HttpRequest, status: int, body: dict[str, Any]) -> HttpResponse:
        return api.create_response(request, body, status=status)

    @api.exception_handler(ApiError)
    def api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
        response = respond(request, exc.status, error_body(exc.code, exc.message, exc.field))
        if exc.status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="saga"'
        return response

    @api.exception_handler(NinjaValidationError)
    def invalid_input(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
        first = exc.errors[0] if exc.errors else {}
        field = _field_from_loc(first.get("loc", ()))
        message = str(first.get("msg", "invalid input"))
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
        return respond(request, 403, error_body("forbidden", str(exc) or "not allowed",
                                                "Authorization"))

    @api.exception_handler(HttpError)
    def ninja_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        """What ninja raises itself: 400 for a body it cannot parse (wrapping what
        ``StrictJsonParser`` said, when it said something), 403 for CSRF."""
        if isinstance(exc.__cause__, ApiError):
            return api_error(request, exc.__cause__)
        code = {400: "invalid_json", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed"}.get(exc.status_code, "error")
        return respond(request, exc.status_code, error_body(code, str(exc)))

    @api.exception_handler(RequestDataTooBig)
    def too_large(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return respond(request, 413, error_body(
            "payload_too_large", f"request body larger than {limit} bytes"))

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

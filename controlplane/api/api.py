"""The control plane's REST API (django-ninja) and the one OpenAPI 3.1 schema that documents it
together with the gateway's ``/v1`` paths."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver, re_path
from ninja import NinjaAPI, Swagger
from ninja.openapi.docs import render_template

from controlplane.api import (
    admin_nodes,
    admin_policies,
    admin_tenants,
    admin_whatif,
    errors,
    openapi,
    workflows,
)
from controlplane.slo import api as slo_api

DESCRIPTION = f"""\
Workflow-atomic scheduling of AI-agent LLM inference.

**Authentication.** Tenant endpoints (`/api/workflows...`) take `Authorization: Bearer <api key>`
with the `workflows` scope; admin endpoints (`/api/admin/...`) take a staff session (unsafe
methods need the CSRF token in `X-CSRFToken`) or an API key with the `admin` scope; the gateway
(`/v1/...`) takes a key with the `inference` scope. No credentials, or an unknown, revoked or
expired key, is 401; a valid key without the scope (or a failed CSRF check) is 403.

**Errors.** The REST API answers `{{"error": {{"code", "message", "field"}}}}` (`field` names the
offending input, or is null): 400 body not JSON, 401, 403, 404 (another tenant's objects too),
409 illegal state transition or duplicate, 413 body over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE}
bytes, 422 invalid input, 429 quota (with Retry-After). The gateway keeps OpenAI's shape
`{{"error": {{"message", "type", "param", "code"}}}}`, which unmodified SDKs parse; both carry
`error.code` and `error.message`. Gateway bodies may be up to {settings.GATEWAY_MAX_BODY_BYTES}
bytes (413 above).

**Inputs.** Bodies are strict JSON (no NaN/Infinity, finite numbers, no lone surrogates, no NUL
in strings, nested at most 32 deep). Template names match `^[-a-zA-Z0-9_.]{{1,100}}$`; workflow
ids are 1..200 characters without control characters; date-times are RFC 3339 with an offset of
at most 15:59; `metadata` and policy `params` are JSON objects of at most 64 KiB. Each field's
schema below states its own bounds.
"""


class StaffSessionSwagger(Swagger):
    """Swagger UI whose "Try it out" works for a logged-in staff user: every request it sends
    carries the CSRF token (``X-CSRFToken``), which the staff session's unsafe admin requests
    need. django-ninja adds it only when the API-wide auth asks for CSRF; ours is set per
    router, so it never did and every POST from the docs failed with 403."""

    def render_page(self, request: HttpRequest, api: Any, **kwargs: Any) -> HttpResponse:
        self.settings["url"] = self.get_openapi_url(api, kwargs)
        context = {"swagger_settings": json.dumps(self.settings, indent=1), "api": api,
                   "add_csrf": True}
        return render_template(request, self.template, self.template_cdn, context)


class SagaApi(NinjaAPI):
    """NinjaAPI with the gateway's paths in its schema and a JSON 404 for unknown paths."""

    def get_openapi_schema(self, *, path_prefix: str | None = None,
                           path_params: dict[str, Any] | None = None) -> Any:
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        return openapi.extend(schema)

    def _get_urls(self) -> list[URLResolver | URLPattern]:
        return [*super()._get_urls(), re_path(r"^.*$", self._unknown_path)]

    def _unknown_path(self, request: HttpRequest) -> HttpResponse:
        """Any other path under /api/: the standard 404 body, not Django's HTML page."""
        return self.create_response(request, errors.error_body(
            "not_found", f"no endpoint {request.method} {request.path}"), status=404)


api = SagaApi(
    title="SAGA control plane",
    version="1",
    description=DESCRIPTION,
    urls_namespace="api",
    parser=errors.StrictJsonParser(),
    docs=StaffSessionSwagger(),
)
errors.install(api)
api.add_router("/", workflows.router)
api.add_router("/admin/", admin_tenants.router)
api.add_router("/admin/", admin_policies.router)
api.add_router("/admin/", admin_nodes.router)
api.add_router("/admin/", admin_whatif.router)
api.add_router("/", slo_api.router)
api.add_router("/admin/", slo_api.admin_router)

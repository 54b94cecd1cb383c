"""Show a freshly issued secret exactly once, from the admin's add/rotate responses.

The plaintext lives only in the request that created it: it is rendered into the response and
never stored (not in the database, not in a message cookie or session).
"""

from __future__ import annotations

from django.http import HttpRequest
from django.template.response import TemplateResponse


def show_secret_once(
    request: HttpRequest, *, title: str, subject: str, secret: str, usage: str, back_url: str
) -> TemplateResponse:
    response = TemplateResponse(
        request,
        "admin/saga/show_secret_once.html",
        {
            "title": title,
            "subject": subject,
            "secret": secret,
            "usage": usage,
            "back_url": back_url,
            "site_header": "SAGA administration",
        },
    )
    response["Cache-Control"] = "no-store"
    return response

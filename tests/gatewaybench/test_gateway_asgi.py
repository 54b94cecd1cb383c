"""``saga serve``'s entry point answers /v1/ exactly as the full Django stack does (status, body,
headers), without the middleware that does nothing there, and passes everything else through."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from controlplane.asgi import application as full_application
from controlplane.gateway.asgi import application as served_application


async def fetch(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await client.request(method, path, **kwargs)


@pytest.mark.parametrize(("method", "path", "kwargs"), [
    ("GET", "/v1/models", {}),  # no key: 401
    ("GET", "/v1/models", {"headers": {"Authorization": "Basic abc"}}),
    ("GET", "/v1/chat/completions", {}),  # 405
    ("POST", "/v1/completions", {"content": b"{not json"}),  # 400, CSRF-exempt
    ("GET", "/v1/nope", {}),  # 404 through the same URLconf
])
async def test_v1_answers_match_the_full_stack(method: str, path: str,
                                               kwargs: dict[str, Any]) -> None:
    served = await fetch(served_application, method, path, **kwargs)
    full = await fetch(full_application, method, path, **kwargs)
    assert served.status_code == full.status_code
    assert served.content == full.content
    assert dict(served.headers) == dict(full.headers)
    assert served.headers.get("X-Frame-Options") == "DENY"
    assert served.headers.get("X-Content-Type-Options") == "nosniff"


async def test_other_paths_go_through_the_full_stack() -> None:
    response = await fetch(served_application, "GET", "/healthz")
    assert response.status_code == (await fetch(full_application, "GET", "/healthz")).status_code
    admin = await fetch(served_application, "GET", "/admin/")
    assert admin.status_code == 302 and "/admin/login/" in admin.headers["location"]

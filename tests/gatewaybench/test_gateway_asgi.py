"""The served ASGI application: ``/v1/`` on the gateway's raw path (OpenAI-shaped answers with
the security headers Django's middleware would add), everything else through Django."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from controlplane.asgi import application


async def fetch(method: str, path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await client.request(method, path, **kwargs)


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "code"), [
    ("GET", "/v1/models", {}, 401, "invalid_api_key"),
    ("GET", "/v1/models", {"headers": {"Authorization": "Basic abc"}}, 401, "invalid_api_key"),
    ("GET", "/v1/chat/completions", {}, 405, None),
    ("POST", "/v1/completions", {"content": b"{not json"}, 401, "invalid_api_key"),
    ("GET", "/v1/nope", {}, 404, "unknown_url"),
    ("POST", "/v1/embeddings", {"json": {"input": "x"}}, 404, "unknown_url"),
])
async def test_v1_answers_in_openai_shape_with_security_headers(
        method: str, path: str, kwargs: dict[str, Any], status: int, code: str | None) -> None:
    response = await fetch(method, path, **kwargs)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
    assert response.headers.get("X-Frame-Options") == "DENY"
    assert response.headers.get("X-Content-Type-Options") == "nosniff"


async def test_foreign_host_is_refused() -> None:
    response = await fetch("GET", "/v1/models", headers={"Host": "evil.example"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "Host"


async def test_other_paths_go_through_django() -> None:
    assert (await fetch("GET", "/healthz")).status_code in (200, 503)
    admin = await fetch("GET", "/admin/")
    assert admin.status_code == 302 and "/admin/login/" in admin.headers["location"]

"""A prompt larger than the node's KV cache can never run there: the node answers 400
``context_length_exceeded`` (it used to be a retryable 503), streaming or not."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from nodeagent.agent.http import NodeServer
from nodeagent.agent.sim_backend import SimBackend

pytestmark = pytest.mark.asyncio
MODEL = "llama-3-8b"


@pytest.fixture
async def small_node() -> AsyncIterator[httpx.AsyncClient]:
    engine = SimBackend("h100-llama3-8b", model_name=MODEL, speed=1000.0,
                        kv_capacity_tokens=4096)
    server = NodeServer(engine, api_key=None, model_name=MODEL)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=server.app),
                                 base_url="http://node") as client:
        yield client


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 40_000}]},
     "messages"),
    ("/v1/completions", {"prompt": "x" * 40_000}, "prompt"),
])
async def test_a_prompt_larger_than_the_kv_cache_is_400(
    small_node: httpx.AsyncClient, path: str, body: dict, param: str, stream: bool
) -> None:
    response = await small_node.post(path, json={"model": MODEL, "stream": stream, **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == param
    assert "4096" in error["message"]
    assert "Retry-After" not in response.headers


async def test_a_prompt_that_fits_still_runs(small_node: httpx.AsyncClient) -> None:
    response = await small_node.post("/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4})
    assert response.status_code == 200, response.text


async def test_deeply_nested_json_is_400_not_500(small_node: httpx.AsyncClient) -> None:
    response = await small_node.post("/v1/chat/completions", content=b"[" * 10_000,
                                     headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"

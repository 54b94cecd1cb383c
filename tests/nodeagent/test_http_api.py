"""The node agent's OpenAI-compatible API over the simulated engine (httpx + ASGI, no mocks)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from nodeagent.agent.http import NodeServer
from nodeagent.agent.sim_backend import SimBackend

pytestmark = pytest.mark.asyncio
KEY = "node-api-key-for-tests"
MODEL = "llama-3-8b"


@pytest.fixture
async def node() -> AsyncIterator[tuple[httpx.AsyncClient, SimBackend]]:
    engine = SimBackend("h100-llama3-8b", model_name=MODEL, speed=1000.0)
    server = NodeServer(engine, api_key=KEY, model_name=MODEL)
    transport = httpx.ASGITransport(app=server.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://node",
                                 headers={"Authorization": f"Bearer {KEY}"}) as client:
        yield client, engine


def chat(content: str = "hello", **extra: object) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


async def test_chat_completion(node: tuple[httpx.AsyncClient, SimBackend]) -> None:
    client, _ = node
    response = await client.post("/v1/chat/completions", json=chat(max_tokens=12))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length" and choice["message"]["role"] == "assistant"
    assert body["usage"]["completion_tokens"] == 12
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 12


async def test_streaming_chat_with_usage(node: tuple[httpx.AsyncClient, SimBackend]) -> None:
    client, _ = node
    response = await client.post("/v1/chat/completions", json=chat(
        stream=True, stream_options={"include_usage": True}, saga_sim={"output_tokens": 20}))
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    payloads = [json.loads(e) for e in events[:-1]]
    text = "".join(p["choices"][0]["delta"].get("content") or ""
                   for p in payloads if p["choices"])
    assert len(text) == 80
    finishes = [p["choices"][0]["finish_reason"] for p in payloads if p["choices"]]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert payloads[-1]["usage"]["completion_tokens"] == 20


async def test_tool_boundaries_come_from_the_control_plane_not_the_http_api(
    node: tuple[httpx.AsyncClient, SimBackend]
) -> None:
    """A response ending in tool calls does not start a tool on the node by itself (the
    control plane infers boundaries once and pushes them); the next call ends an open one."""
    client, engine = node
    headers = {"X-Saga-Workflow": "wf-1", "X-Saga-Tenant": "acme", "X-Saga-Template": "swe"}
    tools = [{"type": "function", "function": {"name": "bash"}}]
    first = await client.post("/v1/chat/completions", headers=headers, json=chat(
        "list files", tools=tools, saga_sim={"finish_reason": "tool_calls"}))
    message = first.json()["choices"][0]["message"]
    assert first.json()["choices"][0]["finish_reason"] == "tool_calls"
    assert message["tool_calls"][0]["function"]["name"] == "bash"
    assert not engine.tracker.workflows["wf-1"].tool_open  # nothing inferred here
    engine.tool_started("wf-1", "bash")  # what the control connection does on tool_start
    assert engine.tracker.workflows["wf-1"].tool_name == "bash"
    follow_up = {"model": MODEL, "tools": tools, "messages": [
        {"role": "user", "content": "list files"}, message,
        {"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": "a.py"}]}
    second = await client.post("/v1/chat/completions", headers=headers, json=follow_up)
    assert second.status_code == 200
    assert engine.tracker.workflows["wf-1"].tool_name is None
    assert second.json()["usage"]["prompt_tokens_details"]["cached_tokens"] > 0


async def test_completions_and_models(node: tuple[httpx.AsyncClient, SimBackend]) -> None:
    client, _ = node
    response = await client.post("/v1/completions",
                                 json={"model": MODEL, "prompt": "def f():", "max_tokens": 5})
    assert response.json()["object"] == "text_completion"
    assert response.json()["usage"]["completion_tokens"] == 5
    models = (await client.get("/v1/models")).json()
    assert [m["id"] for m in models["data"]] == [MODEL]


@pytest.mark.parametrize(("body", "param"), [
    ({"model": MODEL}, "messages"),
    ({"model": MODEL, "messages": []}, "messages"),
    ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
     "max_tokens"),
])
async def test_bad_requests_get_openai_errors_naming_the_param(
    node: tuple[httpx.AsyncClient, SimBackend], body: dict, param: str
) -> None:
    client, _ = node
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


async def test_unknown_model_and_missing_key(node: tuple[httpx.AsyncClient, SimBackend]) -> None:
    client, _ = node
    wrong = await client.post("/v1/chat/completions", json={**chat(), "model": "gpt-9"})
    assert wrong.status_code == 404 and wrong.json()["error"]["code"] == "model_not_found"
    anonymous = await client.post("/v1/chat/completions", json=chat(),
                                  headers={"Authorization": "Bearer nope"})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["param"] == "Authorization"


async def test_health_and_prometheus_metrics(node: tuple[httpx.AsyncClient, SimBackend]) -> None:
    client, _ = node
    await client.post("/v1/chat/completions", json=chat(max_tokens=3))
    health = (await client.get("/health")).json()
    assert health["status"] == "ok" and health["policies"]["eviction"].startswith("aeg")
    metrics = (await client.get("/metrics")).text
    for name in ("vllm:num_requests_running", "vllm:kv_cache_usage_perc",
                 "vllm:generation_tokens_total", "vllm:time_to_first_token_seconds_bucket",
                 "saga:queue_delay_seconds", 'saga:policy_info{kind="fairness",policy="afs@1.0"}'):
        assert name in metrics, name
    assert "vllm:generation_tokens_total 3.0" in metrics


async def test_requests_wait_for_policy_sync_then_503() -> None:
    engine = SimBackend("h100-llama3-8b", model_name=MODEL, speed=1000.0)

    async def never() -> None:
        import asyncio

        await asyncio.sleep(3600)

    server = NodeServer(engine, api_key=None, model_name=MODEL, ready=lambda: False,
                        wait_ready=never, sync_wait_s=0.05)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=server.app),
                                 base_url="http://node") as client:
        response = await client.post("/v1/chat/completions", json=chat())
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        assert response.json()["error"]["code"] == "syncing"
        assert (await client.get("/health")).status_code == 503

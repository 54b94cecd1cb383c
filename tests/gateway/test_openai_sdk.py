"""The official OpenAI SDK (sync, async, streaming) against the gateway and simulated nodes."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
from django.test import Client

from controlplane.workflows.models import Call, CallOutcome, ToolCall, Workflow
from tests.gateway.conftest import tenant_key

pytestmark = pytest.mark.django_db(transaction=True)
MODEL = "llama-3-8b"
TOOLS = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]


def sdk(cluster: dict[str, Any], key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{cluster['url']}/v1", api_key=key, max_retries=0)


def test_models_and_a_single_call(cluster: dict[str, Any]) -> None:
    tenant, key = tenant_key("acme")
    client = sdk(cluster, key)
    assert [m.id for m in client.models.list()] == [MODEL]
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=8)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 8
    workflow = Workflow.objects.get(tenant=tenant)
    assert workflow.state == "completed" and workflow.external_id == ""
    call = Call.objects.get(workflow=workflow)
    assert call.outcome == CallOutcome.COMPLETED and call.output_tokens == 8
    assert call.node is not None and call.finished_at is not None


def test_streaming(cluster: dict[str, Any]) -> None:
    _tenant, key = tenant_key("acme")
    stream = sdk(cluster, key).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "stream please"}], stream=True,
        extra_body={"saga_sim": {"output_tokens": 30}})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text) == 120
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)  # the gateway's own usage chunk is not leaked
    call = Call.objects.get()
    assert call.output_tokens == 30 and call.first_token_at is not None


def test_async_client(cluster: dict[str, Any]) -> None:
    _tenant, key = tenant_key("acme")

    async def main() -> list[str]:
        client = openai.AsyncOpenAI(base_url=f"{cluster['url']}/v1", api_key=key, max_retries=0)
        replies = await asyncio.gather(*[
            client.chat.completions.create(model=MODEL, max_tokens=4, messages=[
                {"role": "user", "content": f"task {i}"}]) for i in range(6)])
        await client.close()
        return [r.choices[0].finish_reason for r in replies]

    assert asyncio.run(main()) == ["length"] * 6
    assert Call.objects.filter(outcome=CallOutcome.COMPLETED).count() == 6


def test_agent_loop_with_tools_is_one_workflow_visible_through_the_api(
    cluster: dict[str, Any]
) -> None:
    tenant, key = tenant_key("acme")
    client = sdk(cluster, key)
    headers = {"X-Saga-Workflow": "django-4211", "X-Saga-Template": "swe-agent"}
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You fix bugs. " * 50},
        {"role": "user", "content": "The test suite fails."}]
    for step in range(3):
        reply = client.chat.completions.create(
            model=MODEL, messages=messages, tools=TOOLS, extra_headers=headers,  # type: ignore[arg-type]
            extra_body={"saga_sim": {"finish_reason": "tool_calls", "output_tokens": 16}})
        message = reply.choices[0].message
        assert reply.choices[0].finish_reason == "tool_calls"
        messages.append(message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": message.tool_calls[0].id,  # type: ignore[index]
                         "content": f"output of step {step} " * 20})
    final = client.chat.completions.create(model=MODEL, messages=messages,  # type: ignore[arg-type]
                                            extra_headers=headers, max_tokens=5)
    assert final.usage.prompt_tokens_details.cached_tokens > 0  # type: ignore[union-attr]

    workflow = Workflow.objects.get(tenant=tenant, external_id="django-4211")
    assert workflow.template.name == "swe-agent" and workflow.state == "running"
    calls = list(Call.objects.filter(workflow=workflow).order_by("seq"))
    assert [c.seq for c in calls] == [0, 1, 2, 3]
    assert len({c.node_id for c in calls}) == 1  # affinity: every call on the home node
    tools = list(ToolCall.objects.filter(workflow=workflow).order_by("started_at"))
    assert [t.name for t in tools] == ["bash"] * 3 and all(t.ended_at for t in tools)

    api = Client(headers={"Authorization": f"Bearer {key}"})
    timeline = api.get(f"/api/workflows/{workflow.pk}/calls").json()
    assert [c["seq"] for c in timeline["calls"]] == [0, 1, 2, 3]
    assert [t["after_call_seq"] for t in timeline["tool_calls"]] == [0, 1, 2]
    assert api.post(f"/api/workflows/{workflow.pk}/complete").json()["state"] == "completed"


def test_tenant_isolation(cluster: dict[str, Any]) -> None:
    acme, acme_key = tenant_key("acme")
    globex, globex_key = tenant_key("globex")
    headers = {"X-Saga-Workflow": "shared-name"}
    for key in (acme_key, globex_key):
        sdk(cluster, key).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=2,
            extra_headers=headers)
    mine = Workflow.objects.get(tenant=acme, external_id="shared-name")
    theirs = Workflow.objects.get(tenant=globex, external_id="shared-name")
    assert mine.pk != theirs.pk
    assert mine.calls.count() == 1 and theirs.calls.count() == 1
    api = Client(headers={"Authorization": f"Bearer {acme_key}"})
    assert api.get(f"/api/workflows/{theirs.pk}").status_code == 404
    assert api.post(f"/api/workflows/{theirs.pk}/cancel").status_code == 404


def test_bad_keys_and_bad_requests(cluster: dict[str, Any]) -> None:
    with pytest.raises(openai.AuthenticationError):
        sdk(cluster, "sk_nopenope_wrong").models.list()
    _tenant, key = tenant_key("acme")
    with pytest.raises(openai.BadRequestError) as excinfo:
        sdk(cluster, key).chat.completions.create(model=MODEL, messages=[], max_tokens=1)
    assert excinfo.value.body["param"] == "messages"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        sdk(cluster, key).chat.completions.create(
            model="gpt-404", messages=[{"role": "user", "content": "x"}])
    assert not Call.objects.exists()


def test_tokens_per_minute_quota_gives_429_with_retry_after(cluster: dict[str, Any]) -> None:
    import redis
    from django.conf import settings

    for key_name in redis.Redis.from_url(settings.REDIS_URL).scan_iter("saga:tpm:*"):
        redis.Redis.from_url(settings.REDIS_URL).delete(key_name)
    _tenant, key = tenant_key("acme", tokens_per_minute=50)
    client = sdk(cluster, key)
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                   extra_body={"saga_sim": {"output_tokens": 60}})
    with pytest.raises(openai.RateLimitError) as excinfo:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "y"}])
    assert int(excinfo.value.response.headers["Retry-After"]) >= 1
    assert excinfo.value.body["param"] == "tokens_per_minute"  # type: ignore[index]
    assert Call.objects.count() == 1


def test_a_failing_node_gives_a_retryable_error_and_a_node_lost_call(
    cluster: dict[str, Any]
) -> None:
    from controlplane.gateway import runtime as views
    from controlplane.nodes.models import Node
    from tests.live import free_port

    Node.objects.update(address=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    views.directory.refresh(force=True)
    _tenant, key = tenant_key("acme")
    with pytest.raises(openai.InternalServerError) as excinfo:
        sdk(cluster, key).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=2)
    assert excinfo.value.status_code == 503
    assert excinfo.value.body["code"] == "node_unavailable"  # type: ignore[index]
    call = Call.objects.get()
    assert call.outcome == CallOutcome.NODE_LOST and "ConnectError" in call.error

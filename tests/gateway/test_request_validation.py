"""Requests the gateway used to answer with a 500 (or a retryable 503 recorded ``node_lost``)
now get a 400 in OpenAI's error shape before anything is recorded (issue 9, items 8 and 9);
what is valid still works (Unicode workflow ids, dotted template names)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from controlplane.workflows.models import Call, Workflow
from tests.gateway.conftest import tenant_key

pytestmark = pytest.mark.django_db(transaction=True)
MODEL = "llama-3-8b"
CHAT = "/v1/chat/completions"


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
            **extra}


def raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


HUGE = "x" * (4 * 420_000)  # more tokens than an H100 running Llama-3-8B holds (419,152)

# (path, body: dict or raw bytes, extra headers, expected param, expected code or None)
BAD_REQUESTS: list[tuple[str, Any, dict[str, bytes], str | None, str | None]] = [
    (CHAT, chat(metadata={"saga_workflow": "wf\x00"}), {}, "metadata.saga_workflow", None),
    (CHAT, chat(metadata={"saga_workflow": "wf\n1"}), {}, "metadata.saga_workflow", None),
    (CHAT, chat(metadata={"saga_workflow": "w" * 201}), {}, "metadata.saga_workflow", None),
    (CHAT, chat(metadata={"saga_template": "swe\x00"}), {}, "metadata.saga_template", None),
    (CHAT, chat(metadata={"saga_template": "modèle"}), {}, "metadata.saga_template", None),
    (CHAT, chat(metadata={"saga_template": "swe\nagent"}), {}, "metadata.saga_template", None),
    (CHAT, chat(metadata={"saga_template": 7}), {}, "metadata.saga_template", None),
    (CHAT, chat(user="u\x00"), {}, "user", None),
    (CHAT, chat(), {"X-Saga-Template": "modèle".encode()}, "X-Saga-Template", None),
    (CHAT, chat(), {"X-Saga-Template": b"a b"}, "X-Saga-Template", None),
    (CHAT, chat(), {"X-Saga-Workflow": b"\xc2\x85wf"}, "X-Saga-Workflow", None),  # U+0085
    (CHAT, raw('{"model": "llama-3-8b", "messages": ' + "[" * 10_000 + "]" * 10_000 + "}"), {},
     None, None),
    (CHAT, raw("[" * 10_000), {}, None, None),
    (CHAT, raw('{"model": "llama-3-8b", "messages": [{"role": "user", "content": "hi"}], '
               '"temperature": NaN}'), {}, None, None),
    (CHAT, raw('{"model": "llama-3-8b", "messages": [{"role": "user", "content": "\\ud800"}]}'),
     {}, "messages.0.content", None),
    (CHAT, raw('{"model": "llama-3-8b", "messages": [{"role": "user", "content": "hi"}], '
               '"top_p": 1e400}'), {}, "top_p", None),
    (CHAT, chat(max_tokens=10**9), {}, "max_tokens", "invalid_value"),
    (CHAT, chat(max_completion_tokens=131_073), {}, "max_completion_tokens", "invalid_value"),
    (CHAT, chat(temperature=-1), {}, "temperature", "invalid_value"),
    (CHAT, chat(temperature=2.5), {}, "temperature", "invalid_value"),
    (CHAT, chat(temperature="hot"), {}, "temperature", "invalid_type"),
    (CHAT, chat(top_p=2), {}, "top_p", "invalid_value"),
    (CHAT, chat(top_p=0), {}, "top_p", "invalid_value"),  # vLLM refuses 0; the schema says so
    (CHAT, chat(presence_penalty=-3), {}, "presence_penalty", "invalid_value"),
    (CHAT, chat(n="1"), {}, "n", None),
    (CHAT, chat(stream="yes"), {}, "stream", None),
    (CHAT, chat(saga_sim={"tool_name": "bash\x00"}), {}, "saga_sim.tool_name", None),
    (CHAT, {"model": MODEL, "messages": [{"role": "user", "content": HUGE}]}, {}, "messages",
     "context_length_exceeded"),
    (CHAT, {"model": MODEL, "messages": [{"role": "user", "content": "x" * 1_600_000}],
            "max_tokens": 131_072}, {}, "messages", "context_length_exceeded"),
    ("/v1/completions", {"model": MODEL, "prompt": HUGE}, {}, "prompt",
     "context_length_exceeded"),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 10**9}, {}, "max_tokens",
     "invalid_value"),
]


def test_bad_requests_are_400_in_openais_shape_and_record_nothing(
    cluster: dict[str, Any]
) -> None:
    _tenant, key = tenant_key("acme")
    wrong = []
    with httpx.Client(base_url=cluster["url"], timeout=30,
                      headers={"Authorization": f"Bearer {key}"}) as client:
        for path, body, headers, param, code in BAD_REQUESTS:
            content = body if isinstance(body, bytes) else raw(_dumps(body))
            response = client.post(path, content=content,
                                   headers={"Content-Type": "application/json", **headers})
            error = response.json().get("error", {}) if response.headers.get(
                "content-type", "").startswith("application/json") else {}
            if (response.status_code != 400 or set(error) != {"message", "type", "param", "code"}
                    or error["type"] != "invalid_request_error" or error["param"] != param
                    or (code is not None and error["code"] != code)):
                wrong.append((path, str(body)[:120], headers, response.status_code,
                              response.text[:300]))
    assert not wrong, "\n".join(map(str, wrong))
    assert not Call.objects.exists() and not Workflow.objects.exists()


def _dumps(body: dict[str, Any]) -> str:
    import json

    return json.dumps(body, ensure_ascii=False)


def test_unicode_workflow_ids_and_dotted_templates_work(cluster: dict[str, Any]) -> None:
    """The same Unicode id through metadata and through the header (UTF-8 bytes) is one
    workflow; a template with a dot travels to the node."""
    _tenant, key = tenant_key("acme")
    with httpx.Client(base_url=cluster["url"], timeout=30,
                      headers={"Authorization": f"Bearer {key}"}) as client:
        first = client.post(CHAT, json=chat(metadata={"saga_workflow": "tâche-1 ✓",
                                                      "saga_template": "swe-agent.v2"},
                                            saga_sim={"finish_reason": "tool_calls",
                                                      "tool_name": "bash"}))
        assert first.status_code == 200, first.text
        second = client.post(CHAT, json=chat(), headers={
            "X-Saga-Workflow": "tâche-1 ✓".encode(), "X-Saga-Template": "swe-agent.v2"})
        assert second.status_code == 200, second.text
    workflow = Workflow.objects.get()
    assert workflow.external_id == "tâche-1 ✓" and workflow.template.name == "swe-agent.v2"
    assert Call.objects.filter(workflow=workflow).count() == 2


def test_body_limit_and_unknown_paths_answer_json(cluster: dict[str, Any]) -> None:
    from django.conf import settings

    _tenant, key = tenant_key("acme")
    with httpx.Client(base_url=cluster["url"], timeout=60,
                      headers={"Authorization": f"Bearer {key}"}) as client:
        big = client.post(CHAT, content=b" " * (settings.GATEWAY_MAX_BODY_BYTES + 1),
                          headers={"Content-Type": "application/json"})
        assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
        for path in ("/v1/embeddings", "/v1/files/abc"):
            missing = client.post(path, json={})
            assert missing.status_code == 404
            assert missing.headers["content-type"].startswith("application/json")
            assert set(missing.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("header", ["wf\x01", "wf\n", "\x00"])
def test_control_characters_in_the_workflow_header_are_400(header: str) -> None:
    """HTTP servers drop most such headers before the gateway sees them; the rule holds anyway."""
    from controlplane.gateway import validation
    from nodeagent.openai_api import ChatCompletionRequest, OpenAIError

    body = ChatCompletionRequest.model_validate(chat())
    with pytest.raises(OpenAIError) as excinfo:
        validation.identity(header, None, body)
    assert excinfo.value.status == 400 and excinfo.value.param == "X-Saga-Workflow"

"""Every call the live gateway admits gets the prompt structure a what-if replay reads."""

from __future__ import annotations

import time
from typing import Any

import httpx

from controlplane.whatif.models import PromptStructure
from controlplane.workflows.models import Call
from tests.gateway.conftest import tenant_key
from tests.whatif.traffic import SYSTEM


def test_the_gateway_records_each_admitted_call(cluster: dict[str, Any]) -> None:
    _tenant, secret = tenant_key("acme-rec")
    headers = {"Authorization": f"Bearer {secret}", "X-Saga-Workflow": "rec-1"}
    body = {"model": "llama-3-8b", "max_tokens": 2,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "go"}]}
    with httpx.Client(base_url=cluster["url"], timeout=30) as client:
        for _ in range(3):
            assert client.post("/v1/chat/completions", json=body, headers=headers).status_code \
                == 200
    calls = Call.objects.filter(workflow__external_id="rec-1")
    assert calls.count() == 3
    deadline = time.monotonic() + 10
    while PromptStructure.objects.filter(call__in=calls).count() < 3:
        assert time.monotonic() < deadline, "prompt structures not recorded"
        time.sleep(0.05)

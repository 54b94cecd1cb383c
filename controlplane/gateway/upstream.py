"""HTTP client to node agents, one connection pool per event loop, and what a node's answer says.

Streams are relayed line by line: the gateway awaits the client's socket before reading more
from the node (back-pressure), and reads finish reason, tool calls and usage on the way.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

import httpx
from django.conf import settings

from nodeagent.openai_api import SERVICE_USAGE_FIELD

UPSTREAM_KEEPALIVE_S = 2.0
_clients: WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = WeakKeyDictionary()


def client() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    existing = _clients.get(loop)
    if existing is None:
        existing = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=3.0, read=settings.GATEWAY_UPSTREAM_READ_TIMEOUT_S,
                                  write=30.0, pool=10.0),
            # Idle connections are dropped well before the node's keep-alive timeout
            # (NODE_KEEP_ALIVE_S): reusing one the node is closing fails the call mid-request.
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=128,
                                keepalive_expiry=UPSTREAM_KEEPALIVE_S),
        )
        _clients[loop] = existing
    return existing


def node_headers(workflow: str, tenant: str, template: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "X-Saga-Workflow": workflow,
               "X-Saga-Tenant": tenant, "X-Saga-Template": template}
    if settings.SAGA_NODE_API_KEY:
        headers["Authorization"] = f"Bearer {settings.SAGA_NODE_API_KEY}"
    return headers


@dataclass(slots=True)
class Observed:
    """What the gateway learned from a node's answer."""

    finish_reason: str = ""
    tool_names: list[str] = field(default_factory=list)
    prompt_tokens: int | None = None
    cached_tokens: int = 0
    completion_tokens: int = 0
    error: str = ""
    service_s: float | None = None

    def read_usage(self, usage: dict[str, Any] | None) -> None:
        if not usage:
            return
        self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        self.completion_tokens = int(usage.get("completion_tokens") or 0)
        details = usage.get("prompt_tokens_details") or {}
        self.cached_tokens = int(details.get("cached_tokens") or 0)
        service = usage.get(SERVICE_USAGE_FIELD)
        if isinstance(service, int | float) and math.isfinite(service) and service >= 0:
            self.service_s = float(service)

    def read_choice(self, choice: dict[str, Any]) -> None:
        if choice.get("finish_reason"):
            self.finish_reason = str(choice["finish_reason"])
        for source in (choice.get("message") or {}, choice.get("delta") or {}):
            for call in source.get("tool_calls") or ():
                name = (call.get("function") or {}).get("name")
                if name:
                    self.tool_names.append(str(name))

    def read_body(self, body: dict[str, Any]) -> None:
        for choice in body.get("choices") or ():
            self.read_choice(choice)
        self.read_usage(body.get("usage"))


def parse_sse_data(line: str) -> dict[str, Any] | None:
    """The JSON payload of an SSE ``data:`` line, or None (comments, [DONE], blank lines)."""
    if not line.startswith("data:"):
        return None
    payload = line[5:].strip()
    if not payload or payload == "[DONE]":
        return None
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None

"""Closed-loop load: C simulated agents, each sending its next call when the last one answered.

Every agent keeps to one workflow for ``calls_per_workflow`` calls (``X-Saga-Workflow``), like an
agent loop, then starts a new one; agents never share a workflow, so the gateway's per-workflow
row lock is not what is measured. Latency is from sending the request to having read the whole
answer.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

CALL_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Target:
    """One path to the model: the node's own API or the gateway in front of it."""

    name: str
    url: str
    headers: dict[str, str]
    workflow_prefix: str


@dataclass(slots=True)
class Agent:
    """A client's workflow identity: its id changes every ``calls_per_workflow`` calls."""

    prefix: str
    calls_per_workflow: int
    calls: int = 0

    def next_workflow(self) -> str:
        workflow = f"{self.prefix}-{self.calls // self.calls_per_workflow}"
        self.calls += 1
        return workflow


@dataclass(slots=True)
class PathRecord:
    """Everything measured on one path at one concurrency, over all its batches."""

    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    busy_s: float = 0.0


def request_body(model: str, max_tokens: int) -> bytes:
    """The same small non-streaming chat call for both paths."""
    return json.dumps({
        "model": model, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "Summarize the failing test in one line."}],
    }).encode()


def new_client(concurrency: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(limits=limits, timeout=CALL_TIMEOUT_S)


async def run_batch(client: httpx.AsyncClient, target: Target, agents: list[Agent], body: bytes,
                    calls: int, record: PathRecord, advance: Callable[[int], None]) -> None:
    """Send ``calls`` calls with one worker per agent; adds latencies, errors and the batch's
    wall time to ``record``."""
    remaining = calls

    async def worker(agent: Agent) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            headers = {**target.headers, "X-Saga-Workflow": agent.next_workflow()}
            started = time.perf_counter()
            try:
                response = await client.post(target.url, content=body, headers=headers)
                ok = response.status_code == 200
                detail = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            elapsed = time.perf_counter() - started
            if ok:
                record.latencies_s.append(elapsed)
            else:
                record.errors += 1
                record.first_error = record.first_error or detail
            advance(1)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for agent in agents:
            group.create_task(worker(agent))
    record.busy_s += time.perf_counter() - started

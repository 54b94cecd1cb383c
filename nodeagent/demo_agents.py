"""Agents that drive workflows through SAGA's OpenAI-compatible gateway, for the demo.

Each agent replays one synthetic task (``nodeagent.workloads.synthetic``: SWE-bench-like or
WebArena-like) with the official OpenAI client: the conversation grows call by call, calls that
the task ends with a tool return ``tool_calls`` (scripted through ``saga_sim``, the simulated
engine's replay extension), the agent waits the tool's time, sends the tool result, and at the
end marks the workflow complete through the REST API. Context sizes are scaled down
(``context_scale``) so a laptop demo stays light; tool gaps are capped.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from nodeagent.openai_api import CHARS_PER_TOKEN
from nodeagent.workloads.model import WorkflowSpec
from nodeagent.workloads.synthetic import generate

log = logging.getLogger("saga.demo.agents")
FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "


def text_of(tokens: int, salt: str) -> str:
    """Text the gateway and node count as about ``tokens`` tokens."""
    body = (salt + " " + FILLER * (tokens * CHARS_PER_TOKEN // len(FILLER) + 1))
    return body[: max(tokens, 1) * CHARS_PER_TOKEN]


@dataclass(frozen=True, slots=True)
class AgentMix:
    """What each tenant runs: task kind, how many tasks at once, pause between task starts."""

    kind: str = "mix"
    concurrency: int = 2
    start_interval_s: float = 4.0


@dataclass(frozen=True, slots=True)
class DemoLoad:
    context_scale: float = 0.1
    max_gap_s: float = 6.0
    max_calls: int = 12


async def drive(client: Any, http: httpx.AsyncClient, spec: WorkflowSpec, model: str,
                load: DemoLoad, rng: random.Random) -> None:
    """Run one task as an agent would, through the gateway."""
    headers = {"X-Saga-Workflow": spec.workflow_id, "X-Saga-Template": spec.template}
    calls = spec.calls[: load.max_calls]
    first = max(int(calls[0].input_tokens * load.context_scale), 32)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": text_of(first * 3 // 4, f"system prompt of {spec.template}")},
        {"role": "user", "content": text_of(first // 4, f"task {spec.workflow_id}")},
    ]
    tools = [{"type": "function", "function": {"name": call.tool or "tool",
                                               "parameters": {"type": "object"}}}
             for call in calls if call.tool][:1]
    for i, call in enumerate(calls):
        last = i == len(calls) - 1
        use_tool = call.tool is not None and not last
        reply = await client.chat.completions.create(
            model=model, messages=messages, tools=tools or None, extra_headers=headers,
            extra_body={"saga_sim": {
                "output_tokens": max(int(call.output_tokens * load.context_scale), 8),
                "finish_reason": "tool_calls" if use_tool else "stop",
                "tool_name": call.tool if use_tool else None}})
        message = reply.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        if last:
            break
        await asyncio.sleep(min(call.gap_after_s, load.max_gap_s) * rng.uniform(0.5, 1.0))
        grown = calls[i + 1].input_tokens - call.input_tokens - call.output_tokens
        new_tokens = max(int(grown * load.context_scale), 16)
        if use_tool and message.tool_calls:
            messages.append({"role": "tool", "tool_call_id": message.tool_calls[0].id,
                             "content": text_of(new_tokens, f"{call.tool} output step {i}")})
        else:
            messages.append({"role": "user", "content": text_of(new_tokens, f"step {i}")})
    found = await http.get("/api/workflows", params={"external_id": spec.workflow_id})
    for item in found.json().get("items", []):
        await http.post(f"/api/workflows/{item['id']}/complete")


async def run_tenant(base_url: str, tenant: str, key: str, mix: AgentMix, load: DemoLoad,
                     seed: int, stop: asyncio.Event) -> int:
    """Keep ``mix.concurrency`` tasks of one tenant running until ``stop``; returns tasks done."""
    import openai

    rng = random.Random(f"{tenant}-{seed}")
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=3)
    done = 0
    async with httpx.AsyncClient(base_url=base_url, timeout=60,
                                 headers={"Authorization": f"Bearer {key}"}) as http:
        model = await served_model(client, stop)
        if model is None:
            return done
        # a run's own ids: a demo restarted on its database must not reuse finished workflows
        run = format(int(time.time()) % 36**5, "x")
        workload = generate(mix.kind, 200, seed=seed)
        tasks: set[asyncio.Task[None]] = set()
        index = 0
        while not stop.is_set():
            while len(tasks) < mix.concurrency and not stop.is_set():
                spec = workload.workflows[index % len(workload.workflows)]
                spec = WorkflowSpec(f"{tenant}-{spec.workflow_id}-{run}-{index // 200}",
                                    tenant, spec.template, 0.0, spec.calls)
                index += 1
                tasks.add(asyncio.create_task(drive(client, http, spec, model, load, rng)))
                await asyncio.sleep(mix.start_interval_s * rng.uniform(0.5, 1.5))
            finished, tasks = await asyncio.wait(tasks, timeout=1.0,
                                                 return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                if task.exception() is not None:
                    log.warning("agent of %s failed: %s", tenant, task.exception())
                else:
                    done += 1
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await client.close()
    return done


async def served_model(client: Any, stop: asyncio.Event) -> str | None:
    """The first model a node serves, waiting for nodes to register (None: stopped first)."""
    while not stop.is_set():
        models = (await client.models.list()).data
        if models:
            return str(models[0].id)
        await asyncio.sleep(1.0)
    return None


async def run_agents(base_url: str, keys: Mapping[str, str], mixes: Mapping[str, AgentMix],
                     stop: asyncio.Event, load: DemoLoad | None = None, seed: int = 0) -> int:
    """Run every tenant's agents until ``stop``; returns the number of tasks completed."""
    load = load or DemoLoad()
    results = await asyncio.gather(*[
        run_tenant(base_url, tenant, key, mixes.get(tenant, AgentMix()), load, seed, stop)
        for tenant, key in keys.items()])
    return sum(results)

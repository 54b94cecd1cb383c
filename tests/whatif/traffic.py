"""Recorded traffic for what-if tests, written as the gateway writes it: workflows, completed
calls with their timings and token counts, tool calls, and each call's prompt structure from
real chat messages (a system prompt shared by every workflow, a task of its own, the
conversation re-sent call after call)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from controlplane.nodes.models import Node
from controlplane.tenants.models import Tenant
from controlplane.whatif.recording import record_prompt
from controlplane.workflows.models import AgentTemplate, Call, CallOutcome, ToolCall, Workflow
from nodeagent.openai_api import Message, count_prompt_tokens

SYSTEM = "You are a careful software agent. " * 40  # 344 tokens: 21 full blocks shared
PROFILE = "h100-llama3-8b"


@dataclass
class Chat:
    messages: tuple[Message, ...]

    def canonical_messages(self) -> tuple[Message, ...]:
        return self.messages


def record_traffic(start: datetime, tenants: dict[str, int], calls: int = 3,
                   spacing_s: float = 4.0) -> dict[str, Any]:
    """``tenants``: slug -> workflows. Each workflow: ``calls`` calls of 0.5 s with a 1 s tool
    between them; workflows start ``spacing_s`` apart."""
    template, _ = AgentTemplate.objects.get_or_create(name="swe")
    node, _ = Node.objects.get_or_create(name="sim-a", defaults={"profile": PROFILE})
    made: dict[str, Any] = {"workflows": [], "calls": []}
    k = 0
    for slug, n in tenants.items():
        tenant, _ = Tenant.objects.get_or_create(
            slug=slug, defaults={"name": slug, "weight": 2.0 if slug == "acme" else 1.0,
                                 "slo_slowdown": 2.0})
        for i in range(n):
            t = start + timedelta(seconds=k * spacing_s)
            k += 1
            wf = Workflow.objects.create(tenant=tenant, template=template, submitted_at=t,
                                         external_id=f"{slug}-{i}")
            messages = [Message("system", SYSTEM), Message("user", f"task {slug} {i}: fix " * 30)]
            clock = t + timedelta(seconds=0.2)
            for seq in range(calls):
                prompt = count_prompt_tokens(messages)
                call = Call.objects.create(
                    workflow=wf, seq=seq, node=node, prompt_tokens=prompt, output_tokens=24,
                    queued_at=clock, started_at=clock, finished_at=clock + timedelta(seconds=0.5),
                    outcome=CallOutcome.COMPLETED)
                record_prompt(call.pk, Chat(tuple(messages)))
                made["calls"].append(call)
                clock += timedelta(seconds=0.5)
                messages.append(Message("assistant", f"run the tests, step {seq} " * 4))
                if seq < calls - 1:
                    ToolCall.objects.create(workflow=wf, after_call=call, name="pytest",
                                            started_at=clock,
                                            ended_at=clock + timedelta(seconds=1.0))
                    clock += timedelta(seconds=1.0)
                    messages.append(Message("tool", f"{seq} passed, 1 failed " * 10,
                                            tool_call_id=f"t{seq}"))
            end = clock + timedelta(seconds=0.1)
            Workflow.objects.filter(pk=wf.pk).update(
                state="completed", finished_at=end, tct_s=(end - t).total_seconds(),
                est_isolated_s=(end - t).total_seconds() * 0.9, slo_status="met", slo_met=True)
            made["workflows"].append(wf)
    return made

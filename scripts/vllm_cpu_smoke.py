#!/usr/bin/env python3
"""A real vLLM engine on CPU, scheduled by SAGA, end to end (no GPU, no download).

Run it in the CPU engine's environment (``scripts/setup_vllm_env.sh cpu``)::

    "$(scripts/setup_vllm_env.sh cpu --print-path)"/bin/python scripts/vllm_cpu_smoke.py

It writes the tiny random-weight Llama of ``saga model tiny`` into a scratch folder (or takes
``--model DIR``), starts the node agent's engine on it (``VllmBackend``: vLLM's ``AsyncLLM``
with ``scheduler_cls`` = SAGA's, ``load_format="dummy"``, eager, prefix caching,
``VLLM_CPU_KVCACHE_SPACE=1``) and checks, against the engine-core process:

1. the engine starts and reports its KV capacity;
2. ``saga_control describe`` answers from the engine core: the scheduler there is SAGA's, with
   its policies;
3. a chat streams text and ends with a finish reason and usage;
4. a chat with tools and a tool-call history renders through the model's chat template and is
   served with the Hermes tool parser;
5. a workflow's second call, after a ``tool_start`` under the ``ttl`` eviction policy, reuses
   its first call's prefix (cached tokens > 0) and the scheduler pinned blocks meanwhile;
6. concurrent calls of several workflows all finish; the stat logger saw prefix-cache queries;
7. a live policy swap through the control channel is applied in the engine core.

Prints one ``PASS``/``FAIL`` line per check, the engine start time and a JSON summary; exits 1
when a check fails, 2 on bad input. The ``if __name__ == "__main__"`` guard matters: vLLM's
engine core is a spawned process that re-imports this file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def _env() -> None:
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


class Checks:
    def __init__(self) -> None:
        self.results: list[tuple[str, bool, str]] = []

    def check(self, name: str, ok: bool, detail: Any = "") -> bool:
        self.results.append((name, bool(ok), str(detail)))
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
        return bool(ok)

    @property
    def failed(self) -> list[str]:
        return [name for name, ok, _ in self.results if not ok]


async def _generate(backend: Any, request: Any) -> dict[str, Any]:
    text, chunks, final = [], 0, None
    async for chunk in backend.generate(request):
        chunks += 1
        text.append(chunk.text)
        if chunk.finish_reason is not None:
            final = chunk
    usage = final.usage if final is not None else None
    return {"chunks": chunks, "text": "".join(text),
            "finish_reason": final.finish_reason if final else None,
            "tool_calls": [c.name for c in final.tool_calls] if final else [],
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "cached_tokens": usage.cached_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0}


async def run(model: str, max_model_len: int, checks: Checks) -> dict[str, Any]:
    from nodeagent.agent.engine import GenerationRequest, Message
    from nodeagent.agent.vllm_backend import VllmBackend, chat_messages, tool_specs
    from nodeagent.vllm_hooks import compat

    summary: dict[str, Any] = {"vllm": "==".join(compat.distribution()),
                               "problems": compat.verify()}
    checks.check("vLLM internals SAGA relies on", not summary["problems"],
                 summary["problems"] or f"{len(compat.INTERNALS)} present")
    started = time.monotonic()
    backend = VllmBackend(model, max_model_len=max_model_len, tool_call_parser="hermes",
                          node_id="cpu-smoke")
    summary["engine_start_s"] = round(time.monotonic() - started, 1)
    summary["kv_capacity_tokens"] = backend.info.kv_capacity_tokens
    summary["scheduler_cls"] = backend.llm.vllm_config.scheduler_config.scheduler_cls
    summary["engine_args"] = dict(backend.options.engine_args)
    print(f"engine started in {summary['engine_start_s']} s; KV capacity "
          f"{backend.info.kv_capacity_tokens} tokens; scheduler {summary['scheduler_cls']}",
          flush=True)
    try:
        checks.check("engine reports its KV capacity", backend.info.kv_capacity_tokens > 0,
                     backend.info)
        described = await backend.link.call("describe", {})
        summary["describe"] = described
        checks.check("saga_control answers from the engine core (SAGA scheduler there)",
                     described.get("node_id") == "cpu-smoke"
                     and described.get("scheduling_policy") == "priority",
                     {k: described.get(k) for k in ("node_id", "scheduling_policy")})
        policies = {k: v["name"] for k, v in described.get("policies", {}).items()
                    if isinstance(v, dict)}
        checks.check("its policies", policies == {"eviction": "aeg", "admission": "saga",
                                                  "fairness": "afs"}, policies)

        def request(rid: str, wf: str, messages: tuple[Message, ...], tools: tuple[str, ...] = (),
                    max_tokens: int = 12) -> GenerationRequest:
            return GenerationRequest(request_id=rid, workflow_id=wf, tenant="smoke",
                                     template="smoke-agent", messages=messages,
                                     max_output_tokens=max_tokens, tools=tools)

        plain = await _generate(backend, request("r-plain", "wf-plain", (
            Message("system", "You are a helpful coding agent."),
            Message("user", "Please fix the failing test in tests/test_api.py."))))
        summary["plain"] = plain
        checks.check("a chat streams and finishes",
                     plain["finish_reason"] in ("stop", "length") and plain["chunks"] >= 2
                     and plain["completion_tokens"] > 0, plain)

        history = (Message("system", "You are a helpful coding agent."),
                   Message("user", "List the files, then read main.py."),
                   Message("assistant", "", tool_calls=(("bash", '{"command": "ls"}'),)),
                   Message("tool", "main.py tests", tool_call_id="call_0"))
        prompt = backend.tokenizer.apply_chat_template(
            chat_messages(history), tools=tool_specs(("bash", "read_file")),
            add_generation_prompt=True, tokenize=False)
        tooled = await _generate(backend, request("r-tools", "wf-tools", history,
                                                  tools=("bash", "read_file")))
        summary["tools"] = tooled
        checks.check("the chat template renders tools and tool calls",
                     "<tools>" in prompt and '"name": "bash"' in prompt
                     and "<tool_response>" in prompt, f"{len(prompt)} characters")
        checks.check("a chat with tools is served (Hermes parser)",
                     tooled["finish_reason"] in ("stop", "length", "tool_calls")
                     and tooled["prompt_tokens"] > 100, tooled)

        backend.apply_policy("eviction", "ttl", {"ttl_s": 30})
        context = " ".join(f"Step {i}: the agent reads the file and runs the tests again."
                           for i in range(24))
        first = (Message("system", "You are a helpful coding agent."),
                 Message("user", context))
        one = await _generate(backend, request("r-wf-1", "wf-A", first, max_tokens=4))
        backend.tool_started("wf-A", "bash")
        await backend.link.flush()
        second = (*first, Message("assistant", "I ran the tests."),
                  Message("user", "Now fix the bug."))
        two = await _generate(backend, request("r-wf-2", "wf-A", second, max_tokens=4))
        after = await backend.link.call("describe", {})
        summary["workflow"] = {"first": one, "second": two, "describe": {
            k: after.get(k) for k in ("workflows", "pinned_blocks_total",
                                      "released_blocks_total", "eviction_evaluations")}}
        checks.check("ttl swapped in live (engine core)",
                     after.get("policies", {}).get("eviction", {}).get("name") == "ttl",
                     after.get("policies", {}).get("eviction"))
        checks.check("the second call reuses the first call's prefix",
                     two["cached_tokens"] > 0 and two["cached_tokens"] >= one["prompt_tokens"] // 2,
                     f"prompt {two['prompt_tokens']}, cached {two['cached_tokens']}")
        checks.check("tool-call retention pinned the workflow's blocks",
                     int(after.get("pinned_blocks_total") or 0) > 0,
                     summary["workflow"]["describe"])

        many = await asyncio.gather(*(
            _generate(backend, request(f"r-c{i}", f"wf-c{i % 3}", (
                Message("system", "You are a helpful coding agent."),
                Message("user", f"Task {i}: {context[: 200 + 40 * i]}")), max_tokens=8))
            for i in range(6)))
        summary["concurrent"] = [m["finish_reason"] for m in many]
        checks.check("6 concurrent calls of 3 workflows finish",
                     all(m["finish_reason"] in ("stop", "length") for m in many),
                     summary["concurrent"])
        backend.load()  # asks for describe + failures; the stat logger has run meanwhile
        await backend.link.flush()
        load = backend.load()
        counters = backend.counters()
        summary["load"] = {"kv_total_tokens": load.kv_total_tokens,
                           "prefix_cache_hit_rate": round(load.prefix_cache_hit_rate, 3),
                           "prefix_cache_queries": counters["prefix_cache_queries"],
                           "generation_tokens": counters["generation_tokens"],
                           "workflows": counters.get("workflows")}
        checks.check("the stat logger sees the engine's steps",
                     counters["prefix_cache_queries"] > 0 and counters["generation_tokens"] > 0,
                     summary["load"])
        checks.check("no control errors or policy failures",
                     not backend.link.errors and not backend.drain_policy_failures(),
                     f"control errors {backend.link.errors}")
    finally:
        await backend.close()
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: a fresh "
                        "`saga model tiny` folder in a scratch directory)")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--json", default=None, metavar="FILE", help="write the summary here")
    args = parser.parse_args(argv)
    _env()
    from nodeagent.agent.tiny_model import write_tiny_model

    with tempfile.TemporaryDirectory(prefix="saga-tiny-") as scratch:
        model = args.model or str(write_tiny_model(Path(scratch) / "tiny"))
        checks = Checks()
        try:
            summary = asyncio.run(run(model, args.max_model_len, checks))
        except ValueError as exc:  # EngineStartError: one line
            print(f"vllm_cpu_smoke: error: {exc}", file=sys.stderr)
            return 2
    summary["checks"] = {name: ok for name, ok, _ in checks.results}
    text = json.dumps(summary, indent=2, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    failed = checks.failed
    print(f"{len(checks.results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

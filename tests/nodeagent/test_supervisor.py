"""An engine that dies: the node goes unavailable, the engine is restarted a bounded number of
times, and after the last failed attempt the agent stops with one line (exit status 1).

The engines here are the real simulated backend wrapped so a test can make it report a death
(``failure()``, which the vLLM backend answers from vLLM's own engine-dead flag). A real vLLM
engine core being killed is not tested yet (issue 12)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from nodeagent.agent.engine import EngineUnavailable, GenerationRequest, SimScript
from nodeagent.agent.sim_backend import SimBackend
from nodeagent.agent.supervisor import EngineRestartsExhausted, SupervisedEngine


class Mortal(SimBackend):
    """The simulated engine, killable."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("h100-llama3-8b", *args, model_name="m", **kwargs)
        self.dead: str | None = None
        self.closed = False

    def failure(self) -> str | None:
        return self.dead

    async def close(self) -> None:
        self.closed = True
        await super().close()


def request(rid: str) -> GenerationRequest:
    return GenerationRequest(request_id=rid, workflow_id="w", tenant="t", template="t",
                             messages=(), max_output_tokens=2, raw_prompt="hello",
                             script=SimScript(2, "stop"))


async def _drain(engine: Any, rid: str) -> str | None:
    last = None
    async for chunk in engine.generate(request(rid)):
        last = chunk.finish_reason or last
    return last


async def test_a_dead_engine_is_replaced_and_the_node_goes_down_and_up() -> None:
    first, second = Mortal(speed=1000.0), Mortal(speed=1000.0)
    built: list[Mortal] = []

    def factory() -> Mortal:
        built.append(second)
        return second

    events: list[str] = []
    supervised = SupervisedEngine(first, factory, max_restarts=2, poll_s=0.01,
                                  backoff_s=(0.0,))
    supervised.on_down = lambda: events.append(f"down: {supervised.unavailable()}")
    supervised.on_up = lambda: events.append("up")
    watch = asyncio.create_task(supervised.watch())
    assert await _drain(supervised, "a") == "stop"
    first.dead = "engine core died (SIGKILL)"
    for _ in range(200):
        if events[-1:] == ["up"]:
            break
        await asyncio.sleep(0.01)
    assert events == ["down: engine core died (SIGKILL)", "up"]
    assert first.closed and built == [second] and supervised.engine is second
    assert supervised.unavailable() is None and supervised.restarts == 1
    assert await _drain(supervised, "b") == "stop"  # served by the new engine
    assert supervised.counters()["engine_restarts"] == 1.0
    watch.cancel()


async def test_restarts_are_bounded_and_the_last_error_is_said_once() -> None:
    attempts: list[int] = []

    def factory() -> Mortal:
        attempts.append(1)
        raise ValueError("--model /models/x: no such folder")

    engine = Mortal(speed=1000.0)
    supervised = SupervisedEngine(engine, factory, max_restarts=3, poll_s=0.01,
                                  backoff_s=(0.0, 0.01))
    watch = asyncio.create_task(supervised.watch())
    engine.dead = "the vLLM engine core died (EngineDeadError)"
    for _ in range(100):
        if supervised.unavailable():
            break
        await asyncio.sleep(0.01)
    with pytest.raises(EngineUnavailable, match="engine core died"):
        supervised.generate(request("c"))  # a retryable 503 while it restarts
    with pytest.raises(EngineRestartsExhausted) as exhausted:
        await asyncio.wait_for(watch, 5)
    assert len(attempts) == 3
    message = str(exhausted.value)
    assert "\n" not in message
    assert message == ("the vLLM engine core died (EngineDeadError) and 3 restarts failed; "
                       "last: --model /models/x: no such folder")


def test_negative_restarts_are_refused() -> None:
    with pytest.raises(ValueError, match="max_restarts"):
        SupervisedEngine(Mortal(), lambda: Mortal(), max_restarts=-1)

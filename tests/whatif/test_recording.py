"""The gateway's prompt-structure recorder on PostgreSQL: batched from its event loop (one
statement per batch, not per call), the digests a replay reads, and failures that lose only
their batch's structures."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.gateway import pg
from controlplane.whatif import recording
from controlplane.whatif.digests import block_chain, deployment_key
from controlplane.whatif.models import PromptStructure
from controlplane.whatif.recording import PromptRecorder, record_prompt, stand_in_tokens
from controlplane.workflows.models import Call
from nodeagent.openai_api import Message
from tests.whatif.traffic import SYSTEM, Chat, record_traffic

pytestmark = pytest.mark.django_db(transaction=True)


def _calls_without_structures(n: int) -> list[Call]:
    made = record_traffic(timezone.now() - timedelta(minutes=5), {"acme": n}, calls=1)
    calls: list[Call] = made["calls"]
    PromptStructure.objects.filter(call__in=calls).delete()
    return calls


def _run(go: Callable[[], Awaitable[PromptRecorder]]) -> PromptRecorder:
    """Run on a loop of its own and close that loop's PostgreSQL pool afterwards."""
    async def closing() -> PromptRecorder:
        try:
            return await go()
        finally:
            await pg.close()
    return asyncio.run(closing())


def _body(i: int) -> Chat:
    return Chat((Message("system", SYSTEM), Message("user", f"task {i}: fix " * 30)))


@pytest.mark.parametrize("inline_tokens", [recording.INLINE_TOKENS, 0], ids=["loop", "thread"])
def test_calls_added_together_share_one_statement_with_the_digests_a_replay_reads(
        inline_tokens: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recording, "INLINE_TOKENS", inline_tokens)
    calls = _calls_without_structures(5)

    async def go() -> PromptRecorder:
        recorder = PromptRecorder()
        for i, call in enumerate(calls):
            recorder.add(call.pk, _body(i), 400)
        await recorder.flush()
        return recorder

    recorder = _run(go)
    assert (recorder.batches, recorder.recorded) == (1, 5)
    for i, call in enumerate(calls):
        row = PromptStructure.objects.get(call=call)
        tokens = stand_in_tokens(_body(i))
        assert row.tokens == len(tokens)
        assert bytes(row.digests) == block_chain(tokens, deployment_key())


def test_calls_arriving_during_a_write_wait_for_the_next_batch() -> None:
    calls = _calls_without_structures(4)

    async def go() -> PromptRecorder:
        recorder = PromptRecorder()
        recorder.add(calls[0].pk, _body(0), 400)
        await asyncio.sleep(0)  # the first batch has started
        for i, call in enumerate(calls[1:], start=1):
            recorder.add(call.pk, _body(i), 400)
        await recorder.flush()
        return recorder

    recorder = _run(go)
    assert (recorder.batches, recorder.recorded) == (2, 4)
    assert PromptStructure.objects.filter(call__in=calls).count() == 4


def test_a_structure_recorded_twice_keeps_the_first_and_fails_nothing() -> None:
    calls = _calls_without_structures(2)
    record_prompt(calls[0].pk, _body(0))

    async def go() -> PromptRecorder:
        recorder = PromptRecorder()
        recorder.add(calls[0].pk, _body(99), 400)
        recorder.add(calls[1].pk, _body(1), 400)
        await recorder.flush()
        return recorder

    assert _run(go).recorded == 2
    first = PromptStructure.objects.get(call=calls[0])
    assert bytes(first.digests) == block_chain(stand_in_tokens(_body(0)), deployment_key())
    assert PromptStructure.objects.filter(call=calls[1]).exists()


def test_a_failed_batch_is_logged_and_the_next_one_is_written(
        caplog: pytest.LogCaptureFixture) -> None:
    calls = _calls_without_structures(1)
    missing = Call.objects.order_by("-pk").first().pk + 1000  # type: ignore[union-attr]

    async def go() -> PromptRecorder:
        recorder = PromptRecorder()
        recorder.add(missing, _body(0), 400)  # no such call: the batch's insert is refused
        await recorder.flush()
        recorder.add(calls[0].pk, _body(1), 400)
        await recorder.flush()
        return recorder

    with caplog.at_level(logging.WARNING, logger="saga.whatif"):
        recorder = _run(go)
    assert (recorder.batches, recorder.recorded) == (2, 1)
    assert any(f"({missing}...) not recorded" in r.getMessage() for r in caplog.records)
    assert PromptStructure.objects.filter(call=calls[0]).exists()

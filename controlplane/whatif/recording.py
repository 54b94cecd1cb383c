"""The gateway's side of replay: each admitted call's prompt structure, recorded off the hot
path (in a store thread, after the call row exists; a failure is logged, never the call's)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from controlplane.whatif.digests import BLOCK_TOKENS, block_chain, deployment_key

log = logging.getLogger("saga.whatif")


def stand_in_tokens(body: Any) -> list[str]:
    """The request's prompt as the stand-in tokens the nodes and the gateway count."""
    from nodeagent.agent.prompt_blocks import chat_tokens, text_tokens

    if hasattr(body, "canonical_messages"):
        return chat_tokens(body.canonical_messages())
    return text_tokens(body.prompt_text())


def record_prompt(call_pk: int, body: Any) -> None:
    from controlplane.whatif.models import PromptStructure

    tokens = stand_in_tokens(body)
    PromptStructure.objects.create(call_id=call_pk, block_tokens=BLOCK_TOKENS,
                                   tokens=len(tokens),
                                   digests=block_chain(tokens, deployment_key()))


def record_prompt_soon(call_pk: int, body: Any) -> None:
    """Fire and forget from the gateway's event loop."""
    from controlplane.stores import in_db_thread

    async def record() -> None:
        try:
            await in_db_thread(record_prompt)(call_pk, body)
        except Exception as exc:  # a replay misses one call's structure; the call is unaffected
            log.warning("prompt structure of call %s not recorded: %s", call_pk, exc)

    _pending.add(asyncio.ensure_future(record()))
    for task in [t for t in _pending if t.done()]:
        _pending.discard(task)


_pending: set[asyncio.Future[None]] = set()
"""Strong references to the recordings in flight (the loop keeps only weak ones)."""

"""A prompt's structure as keyed block digests: what a replay needs to reproduce prefix reuse,
and nothing that reveals the prompt.

The prompt is cut into the stand-in tokens every SAGA component counts with (4 characters a
token, 4 marker tokens per chat message: ``nodeagent.agent.prompt_blocks``), the tokens into
blocks of ``BLOCK_TOKENS``. Block i's digest is HMAC-SHA256 under a per-deployment key of
(digest i-1, block i's tokens), truncated to ``DIGEST_BYTES``: chained like vLLM's block hashes,
so two prompts share exactly the digests of their common full-block prefix, within a workflow
and across workflows. Without the key a digest cannot be recomputed from a guessed text, so
the stored chain confirms nothing about what was said; with it (the deployment itself) one
could only test guesses, which the text-free store is meant to make pointless to keep around.
The last, partial block is not digested: it can never be a cache hit.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from django.conf import settings

BLOCK_TOKENS = 16
"""Tokens per digested block: vLLM's default block size, and the demo profiles'."""

DIGEST_BYTES = 8
"""64 bits per block: collisions among the blocks of hours of traffic are negligible."""


def deployment_key() -> bytes:
    """``SAGA_REPLAY_DIGEST_KEY`` when set, else derived from ``SECRET_KEY`` (per deployment)."""
    explicit = getattr(settings, "SAGA_REPLAY_DIGEST_KEY", "")
    if explicit:
        return explicit.encode()
    return hmac.new(settings.SECRET_KEY.encode(), b"saga.whatif.prompt-digests",
                    hashlib.sha256).digest()


def block_chain(tokens: Sequence[str], key: bytes, block_tokens: int = BLOCK_TOKENS) -> bytes:
    """The concatenated digests of the full blocks of ``tokens`` (``DIGEST_BYTES`` each)."""
    out = bytearray()
    previous = b""
    for start in range(0, len(tokens) - block_tokens + 1, block_tokens):
        body = "\x00".join(tokens[start:start + block_tokens]).encode("utf-8", "surrogatepass")
        previous = hmac.new(key, previous + body, hashlib.sha256).digest()[:DIGEST_BYTES]
        out += previous
    return bytes(out)


def split_chain(chain: bytes) -> list[bytes]:
    return [chain[i:i + DIGEST_BYTES] for i in range(0, len(chain), DIGEST_BYTES)]

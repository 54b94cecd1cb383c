"""Live prompts as chained KV blocks, the way vLLM's prefix cache sees them.

A simulated node has no tokenizer, so a deterministic stand-in turns text into tokens: every 4
characters are one token (OpenAI's rule of thumb, and exactly what
:func:`nodeagent.openai_api.count_prompt_tokens` counts), and a chat message adds 4 marker tokens
for its role and fields, as a chat template would. Tokens are grouped into blocks of the node's
block size; each full block is keyed by its parent block and a digest of its tokens, as vLLM's
block hashes chain, so two prompts share exactly the full blocks of their common token prefix:
a prompt that grows *inside* one message (a ``/v1/completions`` client, an appended last message,
a system prompt with a per-request suffix) hits every full block of the shared prefix.

Each block is a segment of a growing :class:`~nodeagent.workloads.model.ContextTree` (a last
partial block is a segment of its own, which the cache never serves: only full blocks are hits,
as in vLLM). A segment reached by a second workflow becomes shared (owner None).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from nodeagent.agent.engine import Message
from nodeagent.openai_api import CHARS_PER_TOKEN, TOKENS_PER_MESSAGE
from nodeagent.sim.kvcache import TreeIndex
from nodeagent.workloads.model import ROOT, ContextTree


def text_tokens(text: str) -> list[str]:
    """The stand-in tokens of plain text: 4-character pieces (at least one token)."""
    if not text:
        return [""]
    return [text[i:i + CHARS_PER_TOKEN] for i in range(0, len(text), CHARS_PER_TOKEN)]


def message_tokens(message: Message) -> list[str]:
    """A chat message as a template would render it: marker tokens, then its body's pieces.

    The markers carry the role and the tool-call id, so equal bodies under other roles differ.
    """
    marker = f"\x1e{message.role}\x1f{message.tool_call_id}"
    body = message.content + "".join(f"{name}{args}" for name, args in message.tool_calls)
    pieces = text_tokens(body) if body else []
    return [f"{marker}\x1d{i}" for i in range(TOKENS_PER_MESSAGE)] + pieces


def chat_tokens(messages: Sequence[Message]) -> list[str]:
    tokens: list[str] = []
    for message in messages:
        tokens.extend(message_tokens(message))
    return tokens


class GrowingTreeIndex(TreeIndex):
    """A TreeIndex that follows a ContextTree as segments are added at run time."""

    def append(self, seg: int) -> None:
        tree, bs = self.tree, self.block_size
        assert seg == len(self.parent), "segments must be indexed in creation order"
        start, end = tree.start_tokens(seg), tree.end_tokens(seg)
        self.parent.append(tree.parent(seg))
        self.start.append(start)
        self.end.append(end)
        self.owned.append(end // bs - start // bs)
        self.owner.append(tree.owner(seg))


def _digest(parent: bytes, tokens: Sequence[str]) -> bytes:
    h = hashlib.blake2b(parent, digest_size=16)
    for token in tokens:
        h.update(token.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.digest()


class BlockPromptTree:
    """Block-chained prompts of one node (see the module docstring)."""

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.tree = ContextTree()
        self.index = GrowingTreeIndex(self.tree, block_size)
        self._children: dict[tuple[int, bytes], int] = {}

    def path_for(self, tokens: Sequence[str], workflow_id: str) -> list[int]:
        """Segments root..last block of ``tokens`` (a last partial block included)."""
        bs = self.block_size
        path: list[int] = []
        seg, digest = ROOT, b""
        for start in range(0, len(tokens), bs):
            block = tokens[start:start + bs]
            digest = _digest(digest, block)
            seg = self._child(seg, digest, len(block), workflow_id)
            path.append(seg)
        return path

    def _child(self, parent: int, digest: bytes, size: int, workflow_id: str) -> int:
        key = (parent, digest)
        seg = self._children.get(key)
        if seg is None:
            seg = self.tree.add(parent, size, owner=workflow_id)
            self.index.append(seg)
            self._children[key] = seg
        elif self.tree.owner(seg) not in (None, workflow_id):
            self.tree.mark_shared(seg)  # and its ancestors
            s = seg
            while s != ROOT and self.index.owner[s] is not None:
                self.index.owner[s] = None
                s = self.tree.parent(s)
        return seg

    def end_tokens(self, seg: int) -> int:
        return self.tree.end_tokens(seg)

    def common_prefix_tokens(self, a: int, b: int) -> int:
        return self.tree.common_prefix_tokens(a, b)

"""Live prompts as prefix segments: each chat message becomes a segment of a growing
``ContextTree``, keyed by its parent segment and a digest of its canonical content.

An agent re-sends its whole conversation on every call, so a workflow's next prompt walks the
segments of the previous one and only the new messages add segments: exactly the prefix reuse
the simulated KV cache needs. A segment reached by a second workflow (a shared system prompt)
becomes shared (owner None), as in the workload replays.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from nodeagent.agent.engine import Message
from nodeagent.openai_api import count_message_tokens
from nodeagent.sim.kvcache import TreeIndex
from nodeagent.workloads.model import ROOT, ContextTree


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


def message_digest(message: Message) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for part in (message.role, message.content, message.tool_call_id,
                 *(f"{name}\x00{args}" for name, args in message.tool_calls)):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.digest()


class PromptTree:
    def __init__(self, block_size: int) -> None:
        self.tree = ContextTree()
        self.index = GrowingTreeIndex(self.tree, block_size)
        self._children: dict[tuple[int, bytes], int] = {}

    def extend(self, parent: int, message: Message, workflow_id: str) -> int:
        """The segment for ``message`` after ``parent``, created on first sight."""
        key = (parent, message_digest(message))
        seg = self._children.get(key)
        if seg is None:
            seg = self.tree.add(parent, count_message_tokens(message), owner=workflow_id)
            self.index.append(seg)
            self._children[key] = seg
        elif self.tree.owner(seg) not in (None, workflow_id):
            self.tree.mark_shared(seg)
            for s in self.tree.path(seg):
                self.index.owner[s] = self.tree.owner(s)
        return seg

    def path_for(self, messages: Sequence[Message], workflow_id: str) -> list[int]:
        """Segments root..last message of a prompt."""
        path: list[int] = []
        seg = ROOT
        for message in messages:
            seg = self.extend(seg, message, workflow_id)
            path.append(seg)
        return path

    def end_tokens(self, seg: int) -> int:
        return self.tree.end_tokens(seg)

"""Workflow state built from vLLM requests, and the policy views that describe it.

vLLM knows requests; SAGA's policies reason about workflows. This registry follows each
workflow through its calls (tagged requests, see :mod:`.identity`) and tool pauses (told by the
node agent through the control channel) and answers :class:`~plugins.views.WorkflowView` and
:class:`~plugins.views.CallView` for the policies. It also produces the workflow events the
policy manager learns from (the Agent Execution Graph): the scheduler forwards what these
methods return.

Approximations, because an engine has no cost model of itself: ``service_s`` is the wall time
of the engine steps that served the workflow, split between the step's requests by scheduled
tokens (:mod:`.accounting`); ``isolated_s`` is that service plus the time spent in tools (what
the task would take with the GPU to itself if batching cost nothing); ``cached_tokens`` is the
context its latest call had computed, not decreased when blocks are later evicted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from nodeagent.vllm_hooks.identity import RequestIdentity
from plugins.views import CallView, WorkflowEvent, WorkflowView


@dataclass(slots=True)
class CallRecord:
    """One request (LLM call); ``view`` is built once (its fields never change) because the
    policies ask for it at every step of every waiting call."""

    call_id: str
    workflow_id: str
    seq: int
    view: CallView


@dataclass(slots=True)
class WorkflowRecord:
    """What the engine knows about one workflow."""

    workflow_id: str
    tenant: str
    template: str
    tagged: bool
    arrival_s: float
    calls_started: int = 0
    calls_done: int = 0
    context_tokens: int = 0
    cached_tokens: int = 0
    service_s: float = 0.0
    tool_total_s: float = 0.0
    tool_name: str | None = None
    tool_start_s: float | None = None
    last_seen_s: float = 0.0
    done: bool = False
    waiting: set[str] = field(default_factory=set)
    running: set[str] = field(default_factory=set)
    last_block_hashes: Sequence[object] = ()

    @property
    def state(self) -> str:
        if self.done:
            return "done"
        if self.running:
            return "running"
        if self.waiting:
            return "queued"
        return "waiting_tool"


class WorkflowRegistry:
    """Workflows and calls of one engine, keyed by workflow id and request id."""

    def __init__(self, node_id: str, block_size: int) -> None:
        self.node_id = node_id
        self.block_size = block_size
        self.workflows: dict[str, WorkflowRecord] = {}
        self.calls: dict[str, CallRecord] = {}

    # ------------------------------------------------------------------ lifecycle

    def call_started(
        self,
        request_id: str,
        ident: RequestIdentity,
        now_s: float,
        arrival_s: float,
        prompt_tokens: int,
        cached_tokens: int,
        block_hashes: Sequence[object],
    ) -> list[WorkflowEvent]:
        """A request was added: the workflow's next call (ends a tool pause if one is open)."""
        events: list[WorkflowEvent] = []
        wf = self.workflows.get(ident.workflow_id)
        if wf is None or wf.done:
            wf = WorkflowRecord(
                workflow_id=ident.workflow_id,
                tenant=ident.tenant,
                template=ident.template,
                tagged=ident.tagged,
                arrival_s=arrival_s,
            )
            self.workflows[ident.workflow_id] = wf
        if wf.tool_start_s is not None:
            wf.tool_total_s += max(now_s - wf.tool_start_s, 0.0)
            events.append(self._event("tool_end", wf, now_s, tool_name=wf.tool_name))
            wf.tool_start_s = None
            wf.tool_name = None
        prefix_tokens = _common_prefix_blocks(wf.last_block_hashes, block_hashes) * self.block_size
        wf.last_block_hashes = tuple(block_hashes)
        view = CallView(
            call_id=request_id,
            workflow_id=wf.workflow_id,
            tenant=wf.tenant,
            template=wf.template,
            seq=wf.calls_started,
            prompt_tokens=prompt_tokens,
            cached_tokens=cached_tokens,
            arrival_s=arrival_s,
            node_cached_tokens=((self.node_id, cached_tokens),),
        )
        self.calls[request_id] = CallRecord(request_id, wf.workflow_id, wf.calls_started, view)
        wf.calls_started += 1
        wf.waiting.add(request_id)
        wf.context_tokens = max(wf.context_tokens, prompt_tokens)
        wf.last_seen_s = now_s
        events.append(
            self._event(
                "call_start",
                wf,
                now_s,
                prompt_tokens=prompt_tokens,
                cached_tokens=cached_tokens,
                prefix_tokens=prefix_tokens,
            )
        )
        return events

    def call_admitted(self, request_id: str, computed_tokens: int) -> None:
        """The request got KV blocks and runs (first admission or resumption)."""
        wf = self._workflow_of(request_id)
        if wf is not None:
            wf.waiting.discard(request_id)
            wf.running.add(request_id)
            wf.cached_tokens = max(wf.cached_tokens, computed_tokens)

    def call_preempted(self, request_id: str) -> None:
        wf = self._workflow_of(request_id)
        if wf is not None:
            wf.running.discard(request_id)
            wf.waiting.add(request_id)

    def call_finished(
        self, request_id: str, now_s: float, output_tokens: int, computed_tokens: int
    ) -> list[WorkflowEvent]:
        """A request finished (stopped, hit its length limit or was aborted)."""
        call = self.calls.pop(request_id, None)
        if call is None:
            return []
        wf = self.workflows.get(call.workflow_id)
        if wf is None:
            return []
        wf.waiting.discard(request_id)
        wf.running.discard(request_id)
        wf.calls_done += 1
        wf.context_tokens = call.view.prompt_tokens + output_tokens
        wf.cached_tokens = computed_tokens
        wf.last_seen_s = now_s
        events = [self._event("call_end", wf, now_s, output_tokens=output_tokens)]
        if not wf.tagged:  # a plain vLLM request is a whole one-call workflow
            events.extend(self.workflow_ended(wf.workflow_id, now_s))
        return events

    def tool_started(
        self, workflow_id: str, tool_name: str | None, now_s: float
    ) -> list[WorkflowEvent]:
        """The node agent says the workflow's agent now runs ``tool_name``."""
        wf = self.workflows.get(workflow_id)
        if wf is None or wf.done:
            raise KeyError(workflow_id)
        if wf.tool_start_s is not None:  # a tool follows a tool: close the first one
            wf.tool_total_s += max(now_s - wf.tool_start_s, 0.0)
        wf.tool_name = tool_name
        wf.tool_start_s = now_s
        wf.last_seen_s = now_s
        return [self._event("tool_start", wf, now_s, tool_name=tool_name)]

    def tool_ended(self, workflow_id: str, now_s: float) -> list[WorkflowEvent]:
        """The node agent says the workflow's tool finished (its next call follows)."""
        wf = self.workflows.get(workflow_id)
        if wf is None or wf.tool_start_s is None:
            return []
        wf.tool_total_s += max(now_s - wf.tool_start_s, 0.0)
        event = self._event("tool_end", wf, now_s, tool_name=wf.tool_name)
        wf.tool_start_s = None
        wf.tool_name = None
        wf.last_seen_s = now_s
        return [event]

    def workflow_ended(self, workflow_id: str, now_s: float) -> list[WorkflowEvent]:
        wf = self.workflows.pop(workflow_id, None)
        if wf is None:
            return []
        wf.done = True
        for request_id in (*wf.waiting, *wf.running):
            self.calls.pop(request_id, None)
        return [self._event("workflow_end", wf, now_s)]

    def add_service(self, request_id: str, gpu_s: float) -> None:
        wf = self._workflow_of(request_id)
        if wf is not None:
            wf.service_s += gpu_s

    def idle_workflows(self, now_s: float, idle_s: float) -> list[str]:
        """Tagged workflows with no call in flight that have been silent for ``idle_s``."""
        return [
            w.workflow_id
            for w in self.workflows.values()
            if not w.waiting and not w.running and now_s - w.last_seen_s >= idle_s
        ]

    def forget(self, workflow_id: str) -> None:
        wf = self.workflows.pop(workflow_id, None)
        if wf is not None:
            for request_id in (*wf.waiting, *wf.running):
                self.calls.pop(request_id, None)

    # ------------------------------------------------------------------ views

    def workflow_view(self, workflow_id: str, now_s: float) -> WorkflowView | None:
        wf = self.workflows.get(workflow_id)
        if wf is None:
            return None
        in_tool = now_s - wf.tool_start_s if wf.tool_start_s is not None else 0.0
        in_tool = max(in_tool, 0.0)
        return WorkflowView(
            workflow_id=wf.workflow_id,
            tenant=wf.tenant,
            template=wf.template,
            state=wf.state,
            arrival_s=wf.arrival_s,
            calls_done=wf.calls_done,
            context_tokens=wf.context_tokens,
            cached_tokens=wf.cached_tokens,
            home_node=self.node_id,
            tool_name=wf.tool_name if wf.tool_start_s is not None else None,
            tool_elapsed_s=in_tool,
            service_s=wf.service_s,
            isolated_s=wf.service_s + wf.tool_total_s + in_tool,
            elapsed_s=max(now_s - wf.arrival_s, 0.0),
        )

    def call_view(self, request_id: str) -> CallView | None:
        call = self.calls.get(request_id)
        return call.view if call is not None else None

    def workflow_id_of(self, request_id: str) -> str | None:
        call = self.calls.get(request_id)
        return call.workflow_id if call is not None else None

    def tenant_of(self, workflow_id: str) -> str | None:
        wf = self.workflows.get(workflow_id)
        return wf.tenant if wf is not None else None

    # ------------------------------------------------------------------ helpers

    def _workflow_of(self, request_id: str) -> WorkflowRecord | None:
        call = self.calls.get(request_id)
        return self.workflows.get(call.workflow_id) if call is not None else None

    @staticmethod
    def _event(kind: str, wf: WorkflowRecord, now_s: float, **kw: object) -> WorkflowEvent:
        return WorkflowEvent(
            kind=kind,
            workflow_id=wf.workflow_id,
            tenant=wf.tenant,
            template=wf.template,
            time_s=now_s,
            **kw,  # type: ignore[arg-type]
        )


def _common_prefix_blocks(previous: Sequence[object], current: Sequence[object]) -> int:
    """Leading block hashes two prompts share (chained hashes: equal means same prefix)."""
    n = min(len(previous), len(current))
    if n == 0 or previous[0] != current[0]:
        return 0
    if previous[n - 1] == current[n - 1]:
        return n
    lo, hi = 0, n - 1  # invariant: previous[lo] == current[lo], previous[hi] != current[hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if previous[mid] == current[mid]:
            lo = mid
        else:
            hi = mid
    return lo + 1

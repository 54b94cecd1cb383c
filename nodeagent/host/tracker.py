"""Workflows and their calls on one node, for every engine.

Engines know requests; policies reason about workflows. The tracker follows each workflow
through its calls (started, admitted, preempted, finished) and the gaps between them (tool
starts and ends as the host learns them), answers :class:`~plugins.views.WorkflowView` and
:class:`~plugins.views.CallView` for the policies through the contract's builders, and produces
the workflow events the policy manager and the Agent Execution Graph learn from (the caller
forwards what each method returns, in order).

What the engine supplies: per call, its prompt size, the cached prefix it found, how much of the
prompt repeats the workflow's previous context (``prefix_tokens``, for the AEG), and its
isolated time on an idle node (from the engine's cost model, or its measured per-token costs);
per workflow, on request, the tokens of its private context cached now (``cached_tokens``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from plugins.views import CallView, WorkflowEvent, WorkflowView, workflow_view

CachedTokens = Callable[[str], int]


@dataclass(slots=True)
class TrackedCall:
    call_id: str
    workflow_id: str
    seq: int
    view: CallView
    prefix_tokens: int = 0
    """Its prompt's prefix repeating the workflow's previous call (what isolated time reuses)."""
    admitted: bool = False


@dataclass(slots=True)
class TrackedWorkflow:
    workflow_id: str
    tenant: str
    template: str
    tagged: bool
    arrival_s: float
    calls_started: int = 0
    calls_done: int = 0
    context_tokens: int = 0
    service_s: float = 0.0
    isolated_done_s: float = 0.0
    isolated_current_s: float = 0.0
    tool_name: str | None = None
    tool_open: bool = False
    gap_since_s: float | None = None
    last_seen_s: float = 0.0
    waiting: set[str] = field(default_factory=set)
    running: set[str] = field(default_factory=set)

    @property
    def state(self) -> str:
        if self.running:
            return "running"
        if self.waiting:
            return "queued"
        return "waiting_tool"


class WorkflowTracker:
    """Workflows and calls of one node, keyed by workflow id and call (request) id."""

    def __init__(self, node_id: str, cached_tokens: CachedTokens | None = None) -> None:
        self.node_id = node_id
        self.cached_tokens = cached_tokens or (lambda workflow_id: 0)
        self.workflows: dict[str, TrackedWorkflow] = {}
        self.calls: dict[str, TrackedCall] = {}

    # ------------------------------------------------------------------ lifecycle
    def call_started(self, call_id: str, workflow_id: str, tenant: str, template: str, *,
                     now_s: float, arrival_s: float, prompt_tokens: int, cached_tokens: int,
                     prefix_tokens: int, isolated_s: float, tagged: bool = True
                     ) -> list[WorkflowEvent]:
        """A call arrived: the workflow's next call (it closes an open tool: ``tool_end``)."""
        events: list[WorkflowEvent] = []
        wf = self.workflows.get(workflow_id)
        if wf is None:
            wf = self.workflows[workflow_id] = TrackedWorkflow(
                workflow_id, tenant, template, tagged, arrival_s)
        if wf.tool_open:
            events.append(self._event("tool_end", wf, now_s, tool_name=wf.tool_name))
            wf.tool_open = False
        if wf.gap_since_s is not None:
            wf.isolated_done_s += max(now_s - wf.gap_since_s, 0.0)
            wf.gap_since_s = None
        wf.tool_name = None
        view = CallView(call_id=call_id, workflow_id=workflow_id, tenant=wf.tenant,
                        template=wf.template, seq=wf.calls_started, prompt_tokens=prompt_tokens,
                        cached_tokens=cached_tokens, arrival_s=arrival_s,
                        node_cached_tokens=((self.node_id, cached_tokens),))
        self.calls[call_id] = TrackedCall(call_id, workflow_id, wf.calls_started, view,
                                          prefix_tokens)
        wf.calls_started += 1
        wf.waiting.add(call_id)
        wf.context_tokens = prompt_tokens
        wf.isolated_current_s = isolated_s
        wf.last_seen_s = now_s
        events.append(self._event("call_start", wf, now_s, prompt_tokens=prompt_tokens,
                                  cached_tokens=cached_tokens, prefix_tokens=prefix_tokens))
        return events

    def call_admitted(self, call_id: str) -> TrackedCall | None:
        """The call got KV blocks and runs (first admission or resumption); returns it."""
        call = self.calls.get(call_id)
        wf = self.workflows.get(call.workflow_id) if call is not None else None
        if call is None or wf is None:
            return None
        wf.waiting.discard(call_id)
        wf.running.add(call_id)
        call.admitted = True
        return call

    def call_preempted(self, call_id: str) -> None:
        wf = self._workflow_of(call_id)
        if wf is not None:
            wf.running.discard(call_id)
            wf.waiting.add(call_id)

    def call_finished(self, call_id: str, now_s: float, output_tokens: int,
                      isolated_s: float | None = None) -> list[WorkflowEvent]:
        """The call ended (stopped, hit its length limit, or was aborted). ``isolated_s``: its
        isolated time now that its output is known (replaces the estimate made at arrival)."""
        call = self.calls.pop(call_id, None)
        wf = self.workflows.get(call.workflow_id) if call is not None else None
        if call is None or wf is None:
            return []
        wf.waiting.discard(call_id)
        wf.running.discard(call_id)
        wf.calls_done += 1
        wf.context_tokens = call.view.prompt_tokens + output_tokens
        if isolated_s is not None:
            wf.isolated_current_s = isolated_s
        wf.isolated_done_s += wf.isolated_current_s
        wf.isolated_current_s = 0.0
        wf.gap_since_s = now_s
        wf.last_seen_s = now_s
        events = [self._event("call_end", wf, now_s, output_tokens=output_tokens)]
        if not wf.tagged:  # a plain request is a whole one-call workflow
            events.extend(self.workflow_ended(wf.workflow_id, now_s))
        return events

    def tool_started(self, workflow_id: str, tool_name: str | None, now_s: float
                     ) -> list[WorkflowEvent]:
        """The workflow's agent now runs ``tool_name`` (raises KeyError for an unknown one)."""
        wf = self.workflows.get(workflow_id)
        if wf is None:
            raise KeyError(workflow_id)
        events: list[WorkflowEvent] = []
        if wf.tool_open:  # a tool follows a tool: the first one ended
            events.append(self._event("tool_end", wf, now_s, tool_name=wf.tool_name))
        wf.tool_name = tool_name
        wf.tool_open = True
        wf.last_seen_s = now_s
        events.append(self._event("tool_start", wf, now_s, tool_name=tool_name))
        return events

    def tool_ended(self, workflow_id: str, now_s: float) -> list[WorkflowEvent]:
        """The workflow's tool finished (its next call follows)."""
        wf = self.workflows.get(workflow_id)
        if wf is None or not wf.tool_open:
            return []
        wf.tool_open = False
        wf.last_seen_s = now_s
        return [self._event("tool_end", wf, now_s, tool_name=wf.tool_name)]

    def workflow_ended(self, workflow_id: str, now_s: float) -> list[WorkflowEvent]:
        wf = self.workflows.pop(workflow_id, None)
        if wf is None:
            return []
        for call_id in (*wf.waiting, *wf.running):
            self.calls.pop(call_id, None)
        events = []
        if wf.tool_open:
            events.append(self._event("tool_end", wf, now_s, tool_name=wf.tool_name))
        events.append(self._event("workflow_end", wf, now_s))
        return events

    def add_service(self, call_id: str, gpu_s: float) -> None:
        wf = self._workflow_of(call_id)
        if wf is not None:
            wf.service_s += gpu_s

    def idle_workflows(self, now_s: float, idle_s: float) -> list[str]:
        """Workflows with no call in flight that have been silent for ``idle_s``."""
        return [w.workflow_id for w in self.workflows.values()
                if not w.waiting and not w.running and now_s - w.last_seen_s >= idle_s]

    def forget(self, workflow_id: str) -> None:
        wf = self.workflows.pop(workflow_id, None)
        if wf is not None:
            for call_id in (*wf.waiting, *wf.running):
                self.calls.pop(call_id, None)

    # ------------------------------------------------------------------ views
    def workflow_view(self, workflow_id: str, now_s: float) -> WorkflowView | None:
        wf = self.workflows.get(workflow_id)
        if wf is None:
            return None
        return workflow_view(
            workflow_id=wf.workflow_id, tenant=wf.tenant, template=wf.template, state=wf.state,
            now_s=now_s, arrival_s=wf.arrival_s, calls_done=wf.calls_done,
            context_tokens=wf.context_tokens, cached_tokens=self.cached_tokens(wf.workflow_id),
            home_node=self.node_id, tool_name=wf.tool_name, gap_since_s=wf.gap_since_s,
            service_s=wf.service_s, isolated_done_s=wf.isolated_done_s,
            isolated_current_s=wf.isolated_current_s)

    def call_view(self, call_id: str) -> CallView | None:
        call = self.calls.get(call_id)
        return call.view if call is not None else None

    def workflow_id_of(self, call_id: str) -> str | None:
        call = self.calls.get(call_id)
        return call.workflow_id if call is not None else None

    def tenant_of(self, workflow_id: str) -> str | None:
        wf = self.workflows.get(workflow_id)
        return wf.tenant if wf is not None else None

    def _workflow_of(self, call_id: str) -> TrackedWorkflow | None:
        call = self.calls.get(call_id)
        return self.workflows.get(call.workflow_id) if call is not None else None

    @staticmethod
    def _event(kind: str, wf: TrackedWorkflow, now_s: float, **kw: object) -> WorkflowEvent:
        return WorkflowEvent(kind=kind, workflow_id=wf.workflow_id, tenant=wf.tenant,
                             template=wf.template, time_s=now_s, **kw)  # type: ignore[arg-type]

"""The gateway's hot path (``controlplane.gateway.ledger``) records what the ORM path
(``controlplane.gateway.calls``) records.

Both paths run the same calls (the same outcomes, usage, tools and instants, on a frozen clock)
for two tenants on the same nodes, and every column they write is compared: the calls, the
workflow (state, home, timestamps and the routing view's accumulators ``service_s``,
``calls_isolated_s``, ``calls_wall_s``, ``context_tokens``), its tool calls, and in Redis the
tokens charged and the in-flight leases left. Then the ledger alone under concurrency: two calls
of one workflow racing, the first calls of a new workflow racing, many finishes in one group
commit, and a finish PostgreSQL refuses in a batch of good ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db.models import DateTimeField
from django.utils import timezone

from controlplane import quotas
from controlplane.gateway import ledger, pg
from controlplane.gateway.calls import Identity, Outcome, Ticket, begin_call, finish_call
from controlplane.gateway.directory import ClusterDirectory
from controlplane.gateway.keys import Caller
from controlplane.gateway.routing_state import AsyncRedisRoutingState, RedisRoutingState
from controlplane.nodes.models import Node, NodeStatus
from controlplane.quotas import QuotaExceeded
from controlplane.tenants.models import Tenant
from controlplane.workflows import services
from controlplane.workflows.models import Call, CallOutcome, ToolCall, Workflow
from controlplane.workflows.states import WorkflowState
from nodeagent.openai_api import OpenAIError

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "llama-3-8b"
BASE = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)


class Clock:
    """``timezone.now`` frozen at ``at`` (both paths then write the same instants)."""

    def __init__(self) -> None:
        self.at = BASE

    def __call__(self) -> datetime:
        return self.at

    def set(self, seconds: float) -> None:
        self.at = BASE + timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    """Freeze ``django.utils.timezone.now`` and the model fields that default to it."""
    frozen = Clock()
    monkeypatch.setattr(timezone, "now", frozen)
    fields = [f for model in (Workflow, Call, ToolCall) for f in model._meta.concrete_fields
              if isinstance(f, DateTimeField) and f.default is not None
              and getattr(f.default, "__name__", "") == "now"]
    for field in fields:
        monkeypatch.setattr(field, "default", frozen)
        field.__dict__.pop("_get_default", None)  # Field caches its default's callable
    yield frozen
    for field in fields:
        field.__dict__.pop("_get_default", None)


@pytest.fixture
def gateway(redis_url: str, settings: Any) -> Iterator[ClusterDirectory]:
    """Two sim nodes that are up (never called: the test plays the nodes' answers), a fresh
    routing state and the directory the gateway would read."""
    import redis

    settings.REDIS_URL = redis_url
    quotas._counter = None  # noqa: SLF001 (the token counter follows settings.REDIS_URL)
    RedisRoutingState(redis_url).clear()
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter("saga:tpm:*"):
        client.delete(key)
    for i in range(2):
        node = Node(name=f"gpu-{i}", model_name=MODEL, profile="h100-llama3-8b",
                    kv_capacity_tokens=200_000, max_num_seqs=64, status=NodeStatus.UP,
                    address=f"http://127.0.0.1:{9 + i}")
        node.assign_new_token()
        node.save()
    directory = ClusterDirectory()
    directory.refresh(force=True)
    assert all(entry.cost is not None for entry in directory.nodes_for(MODEL))
    yield directory
    quotas._counter = None  # noqa: SLF001


def caller_of(tenant: Tenant) -> Caller:
    return Caller(0, "", tenant.pk, tenant.slug, tenant.tokens_per_minute,
                  tenant.max_concurrent_workflows)


@dataclass(frozen=True)
class Step:
    """One call of the scenario: when it arrives and ends, its prompt and how it ends."""

    arrive_s: float
    end_s: float
    prompt: int
    outcome: Outcome


def _usage(outcome: str, prompt: int, cached: int, output: int, *, reason: str = "stop",
           tools: tuple[str, ...] = (), service: float | None = None,
           first_token_s: float | None = None, error: str = "") -> Outcome:
    first = BASE + timedelta(seconds=first_token_s) if first_token_s is not None else None
    return Outcome(outcome, finish_reason=reason, prompt_tokens=prompt, cached_tokens=cached,
                   completion_tokens=output, tool_names=tools, first_token_at=first,
                   error=error, service_s=service)


SCENARIO = [
    # a tool call: the workflow waits for the tool (one ToolCall, started at the call's end)
    Step(1.0, 1.8, 1200, _usage(CallOutcome.COMPLETED, 1200, 0, 40, reason="tool_calls",
                                tools=("grep", "bash", "grep"), service=0.31,
                                first_token_s=1.5)),
    # the next call ends the tool and runs; most of its prompt was cached on its home node
    Step(4.0, 4.6, 1300, _usage(CallOutcome.COMPLETED, 1300, 1232, 25, service=0.12,
                                first_token_s=4.2)),
    # the node refused it (no usage: the gateway's own prompt count stays)
    Step(5.0, 5.1, 1400, Outcome(CallOutcome.FAILED, error="node answered 500: b'boom'")),
    # the node died mid-stream after its first token
    Step(6.0, 6.5, 1500, Outcome(CallOutcome.NODE_LOST, first_token_at=BASE + timedelta(
        seconds=6.2), error="RemoteProtocolError()")),
    # the client left
    Step(7.0, 7.2, 1550, Outcome(CallOutcome.CANCELLED, error="client went away")),
    # more cached tokens reported than the prompt has: capped at the prompt
    Step(8.0, 9.0, 1600, _usage(CallOutcome.COMPLETED, 1600, 5000, 10, reason="length",
                                service=0.2, first_token_s=8.5)),
    # a second tool
    Step(10.0, 11.0, 1700, _usage(CallOutcome.COMPLETED, 1700, 1600, 30, reason="tool_calls",
                                  tools=("edit",), service=0.05, first_token_s=10.4)),
    # the tool ends; the call completes with its usage and no service figure
    Step(20.0, 21.5, 1800, _usage(CallOutcome.COMPLETED, 1800, 1744, 12, first_token_s=21.0)),
]

IGNORED_WORKFLOW = {"id", "tenant_id", "template_id", "home_node_id"}
IGNORED_CALL = {"id", "workflow_id", "node_id"}
IGNORED_TOOL = {"id", "workflow_id", "after_call_id"}


def _row(obj: Any, ignored: set[str]) -> dict[str, Any]:
    return {f.attname: getattr(obj, f.attname) for f in type(obj)._meta.concrete_fields
            if f.attname not in ignored}


def recorded(tenant: Tenant) -> dict[str, Any]:
    """Everything the calls wrote for ``tenant``'s workflow ``w``, ids left out.

    The node is compared as "every call on the workflow's home": which of two idle nodes a new
    workflow gets depends on its id (the routing policy's tie-break), and the ids differ."""
    workflow = Workflow.objects.get(tenant=tenant, external_id="w")
    calls = list(Call.objects.filter(workflow=workflow).order_by("seq"))
    assert workflow.home_node_id is not None
    assert all(c.node_id == workflow.home_node_id for c in calls)
    seq_of = {c.pk: c.seq for c in calls}
    tools = [{**_row(t, IGNORED_TOOL), "after_seq": seq_of.get(t.after_call_id)}
             for t in ToolCall.objects.filter(workflow=workflow).order_by("started_at")]
    return {"workflow": _row(workflow, IGNORED_WORKFLOW),
            "template": workflow.template.name,
            "calls": [_row(c, IGNORED_CALL) for c in calls],
            "tools": tools}


def tokens_charged(redis_url: str, tenant: Tenant) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    window = quotas.minute_window(time.time())[0]
    return sum(int(client.get(quotas.tokens_key(tenant.pk, w)) or 0)
               for w in (window - 1, window))


def inflight(redis_url: str) -> int:
    state = RedisRoutingState(redis_url)
    return sum(f.calls for f in state.inflight(["gpu-0", "gpu-1"]).values())


def run_orm(tenant: Tenant, directory: ClusterDirectory, clock: Clock, redis_url: str) -> None:
    state = RedisRoutingState(redis_url)
    for step in SCENARIO:
        clock.set(step.arrive_s)
        ticket = begin_call(caller_of(tenant), Identity("w", "swe-agent"), MODEL, step.prompt,
                            directory, state, "gw-orm")
        clock.set(step.end_s)
        assert finish_call(ticket, step.outcome, state) is True
        assert finish_call(ticket, step.outcome, state) is False  # never recorded twice


def on_loop(work: Callable[[AsyncRedisRoutingState], Awaitable[Any]], redis_url: str) -> Any:
    """Run ``work`` on an event loop of its own, as the gateway's, and close the loop's
    PostgreSQL pools and Redis connection afterwards."""
    async def main() -> Any:
        state = AsyncRedisRoutingState(redis_url)
        try:
            return await work(state)
        finally:
            await state.close()
            await pg.close()
    return asyncio.run(main())


def run_ledger(tenant: Tenant, directory: ClusterDirectory, clock: Clock,
               redis_url: str) -> None:
    async def work(state: AsyncRedisRoutingState) -> None:
        for step in SCENARIO:
            clock.set(step.arrive_s)
            ticket = await ledger.begin(caller_of(tenant), Identity("w", "swe-agent"), MODEL,
                                        step.prompt, directory, state, "gw-fast")
            clock.set(step.end_s)
            assert await ledger.finish(ticket, step.outcome, state) is True
            assert await ledger.finish(ticket, step.outcome, state) is False

    on_loop(work, redis_url)


def test_the_ledger_records_every_column_the_orm_path_records(
        gateway: ClusterDirectory, clock: Clock, redis_url: str) -> None:
    orm = Tenant.objects.create(slug="orm", name="ORM", tokens_per_minute=10**9)
    fast = Tenant.objects.create(slug="fast", name="Fast", tokens_per_minute=10**9)
    clock.set(0.0)
    run_orm(orm, gateway, clock, redis_url)
    clock.set(0.0)
    run_ledger(fast, gateway, clock, redis_url)

    expected, got = recorded(orm), recorded(fast)
    # The gateway process that held each pending call differs by design; nothing else may.
    assert [c["gateway"] for c in got["calls"]] == [""] * len(SCENARIO)
    for path in (expected, got):
        for call in path["calls"]:
            call.pop("gateway")
    assert got["workflow"] == expected["workflow"]
    assert got["tools"] == expected["tools"]
    assert got["template"] == expected["template"]
    assert len(got["calls"]) == len(expected["calls"]) == len(SCENARIO)
    for mine, theirs in zip(got["calls"], expected["calls"], strict=True):
        assert mine == theirs

    # The scenario did what it says (so the comparison compared something).
    workflow = got["workflow"]
    assert workflow["state"] == WorkflowState.RUNNING
    assert workflow["calls_wall_s"] == pytest.approx(sum(s.end_s - s.arrive_s for s in SCENARIO))
    assert workflow["service_s"] == pytest.approx(0.31 + 0.12 + 0.2 + 0.05)
    assert workflow["calls_isolated_s"] > 0 and workflow["context_tokens"] == 1800 + 12
    assert [t["name"] for t in got["tools"]] == ["bash,grep", "edit"]
    assert [t["after_seq"] for t in got["tools"]] == [0, 6]
    assert all(t["ended_at"] is not None for t in got["tools"])
    assert [c["outcome"] for c in got["calls"]] == [s.outcome.outcome for s in SCENARIO]
    assert got["calls"][5]["cached_tokens"] == 1600
    assert got["calls"][2]["prompt_tokens"] == 1400  # the gateway's count, no usage came
    assert sum(c["isolated_s"] is not None for c in got["calls"]) == 5

    # Redis: the same tokens charged per tenant, and no lease left behind.
    charged = tokens_charged(redis_url, orm)
    assert charged == sum(c["prompt_tokens"] + c["output_tokens"] for c in expected["calls"])
    assert tokens_charged(redis_url, fast) == charged
    assert inflight(redis_url) == 0


def test_an_interrupted_call_is_replaced_by_its_holders_outcome_on_both_paths(
        gateway: ClusterDirectory, clock: Clock, redis_url: str) -> None:
    """Reconciliation presumed the call interrupted (the holder's lease lapsed); the holder's
    own outcome then replaces it, once, with the same accumulators on both paths."""
    orm = Tenant.objects.create(slug="orm", name="ORM")
    fast = Tenant.objects.create(slug="fast", name="Fast")
    first = SCENARIO[0]
    done = _usage(CallOutcome.COMPLETED, 1200, 0, 40, service=0.3, first_token_s=1.5)
    interrupted = Outcome(CallOutcome.INTERRUPTED, error="closed by reconciliation")

    clock.set(0.0)
    state = RedisRoutingState(redis_url)
    clock.set(first.arrive_s)
    ticket = begin_call(caller_of(orm), Identity("w", "swe-agent"), MODEL, first.prompt,
                        gateway, state, "gw-orm")
    clock.set(first.end_s)
    assert finish_call(ticket, interrupted, state) is True
    assert finish_call(ticket, interrupted, state) is False
    clock.set(first.end_s + 1)
    assert finish_call(ticket, done, state) is True
    assert finish_call(ticket, done, state) is False

    async def work(astate: AsyncRedisRoutingState) -> None:
        clock.set(first.arrive_s)
        ticket = await ledger.begin(caller_of(fast), Identity("w", "swe-agent"), MODEL,
                                    first.prompt, gateway, astate, "gw-fast")
        clock.set(first.end_s)
        assert await ledger.finish(ticket, interrupted, astate) is True
        assert await ledger.finish(ticket, interrupted, astate) is False
        clock.set(first.end_s + 1)
        assert await ledger.finish(ticket, done, astate) is True
        assert await ledger.finish(ticket, done, astate) is False

    on_loop(work, redis_url)
    expected, got = recorded(orm), recorded(fast)
    for path in (expected, got):
        for call in path["calls"]:
            call.pop("gateway")
    assert got == expected
    assert got["calls"][0]["outcome"] == CallOutcome.COMPLETED


def test_refusals_leave_nothing_pending_on_either_path(
        gateway: ClusterDirectory, clock: Clock, redis_url: str) -> None:
    """A spent tokens-per-minute quota (429) and a finished workflow (409) are refused the
    same way by both paths, with no call recorded and no lease taken."""
    clock.set(0.0)
    for slug, fast in (("orm", False), ("fast", True)):
        tenant = Tenant.objects.create(slug=slug, name=slug, tokens_per_minute=1000)
        caller = caller_of(tenant)
        quotas.charge_tokens(tenant.pk, 1000)
        done = services.create_workflow(tenant, "swe-agent", external_id="done",
                                        validate=False)
        services.finish_workflow(done, WorkflowState.CANCELLED)

        def begin(external: str, caller: Caller = caller, fast: bool = fast) -> None:
            if not fast:
                begin_call(caller, Identity(external, "swe-agent"), MODEL, 10, gateway,
                           RedisRoutingState(redis_url), "gw")
                return

            async def work(state: AsyncRedisRoutingState) -> None:
                await ledger.begin(caller, Identity(external, "swe-agent"), MODEL, 10,
                                   gateway, state, "gw")
            on_loop(work, redis_url)

        with pytest.raises(QuotaExceeded):
            begin("w")
        quotas.token_counter().add(tenant.pk, -1000, quotas.minute_window(time.time())[0])
        with pytest.raises(OpenAIError) as refused:
            begin("done")
        assert refused.value.status == 409 and refused.value.code == "workflow_finished"
        with pytest.raises(OpenAIError) as unknown:
            if fast:
                async def work(state: AsyncRedisRoutingState, caller: Caller = caller) -> None:
                    await ledger.begin(caller, Identity("x", "swe-agent"), "no-such-model",
                                       10, gateway, state, "gw")
                on_loop(work, redis_url)
            else:
                begin_call(caller, Identity("x", "swe-agent"), "no-such-model", 10, gateway,
                           RedisRoutingState(redis_url), "gw")
        assert unknown.value.status == 404
    assert not Call.objects.exists()
    assert inflight(redis_url) == 0


# ---------------------------------------------------------------------- concurrency
def _done(prompt: int, output: int = 5, *, tool: bool = False) -> Outcome:
    return Outcome(CallOutcome.COMPLETED, finish_reason="tool_calls" if tool else "stop",
                   prompt_tokens=prompt, completion_tokens=output,
                   tool_names=("bash",) if tool else (), service_s=0.01)


def test_racing_calls_of_one_workflow_are_each_admitted_once(
        gateway: ClusterDirectory, redis_url: str) -> None:
    """Two calls of a workflow waiting for its tool arrive together: both are recorded (seq 1
    and 2), the tool ends once, and both outcomes add to the workflow. The first calls of a new
    workflow racing create it once."""
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    caller = caller_of(tenant)

    async def work(state: AsyncRedisRoutingState) -> list[Ticket]:
        first = await ledger.begin(caller, Identity("w", "swe-agent"), MODEL, 100, gateway,
                                   state, "gw")
        assert await ledger.finish(first, _done(100, tool=True), state)
        racing = await asyncio.gather(*(
            ledger.begin(caller, Identity("w", "swe-agent"), MODEL, 200 + i, gateway, state,
                         "gw") for i in range(2)))
        results = await asyncio.gather(*(ledger.finish(t, _done(t.prompt_tokens), state)
                                         for t in racing))
        assert results == [True, True]
        fresh = await asyncio.gather(*(
            ledger.begin(caller, Identity("new", "swe-agent"), MODEL, 50, gateway, state,
                         "gw") for _ in range(4)))
        assert all(await asyncio.gather(*(ledger.finish(t, _done(50), state) for t in fresh)))
        return [first, *racing, *fresh]

    tickets = on_loop(work, redis_url)
    workflow = Workflow.objects.get(tenant=tenant, external_id="w")
    calls = list(workflow.calls.order_by("seq"))
    assert [c.seq for c in calls] == [0, 1, 2]
    assert sorted(c.prompt_tokens for c in calls[1:]) == [200, 201]
    assert all(c.outcome == CallOutcome.COMPLETED for c in calls)
    tool = ToolCall.objects.get(workflow=workflow)
    assert tool.ended_at is not None and tool.after_call_id == calls[0].pk
    assert workflow.state == WorkflowState.RUNNING
    assert workflow.service_s == pytest.approx(0.03)
    assert len({c.node_id for c in calls}) == 1 and workflow.home_node_id == calls[0].node_id
    fresh = Workflow.objects.get(tenant=tenant, external_id="new")
    assert sorted(fresh.calls.values_list("seq", flat=True)) == [0, 1, 2, 3]
    assert len({t.call_pk for t in tickets}) == len(tickets)
    assert inflight(redis_url) == 0


def test_concurrent_finishes_share_group_commits(gateway: ClusterDirectory,
                                                 redis_url: str) -> None:
    """40 calls ending at once are committed in a few batches, each call recorded once with
    its workflow's accumulators and tool."""
    tenant = Tenant.objects.create(slug="acme", name="Acme", tokens_per_minute=10**9)
    caller = caller_of(tenant)
    count = 40

    async def work(state: AsyncRedisRoutingState) -> tuple[int, int]:
        tickets = await asyncio.gather(*(
            ledger.begin(caller, Identity(f"w{i}", "swe-agent"), MODEL, 100 + i, gateway,
                         state, "gw") for i in range(count)))
        commits = ledger.group_commit()
        before = commits.batches, commits.finishes
        results = await asyncio.gather(*(
            ledger.finish(t, _done(t.prompt_tokens, tool=i % 2 == 0), state)
            for i, t in enumerate(tickets)))
        assert results == [True] * count
        return commits.batches - before[0], commits.finishes - before[1]

    batches, finishes = on_loop(work, redis_url)
    assert finishes == count and batches < count / 4, (batches, finishes)
    calls = Call.objects.filter(workflow__tenant=tenant)
    assert calls.filter(outcome=CallOutcome.COMPLETED).count() == count
    for i in range(count):
        workflow = Workflow.objects.get(tenant=tenant, external_id=f"w{i}")
        assert workflow.service_s == pytest.approx(0.01)
        assert workflow.context_tokens == 100 + i + 5
        tool = i % 2 == 0
        assert workflow.state == (WorkflowState.WAITING_TOOL if tool else WorkflowState.RUNNING)
        assert ToolCall.objects.filter(workflow=workflow).count() == (1 if tool else 0)
    assert tokens_charged(redis_url, tenant) == sum(100 + i + 5 for i in range(count))
    assert inflight(redis_url) == 0


def test_a_finish_postgresql_refuses_does_not_fail_the_others_in_its_batch(
        gateway: ClusterDirectory, redis_url: str) -> None:
    """A node that reports a usage PostgreSQL's constraints refuse (negative tokens) fails its
    own finish only: the batch is retried call by call, the others are recorded, and the bad one
    goes to the ORM path (``OrmFallback``) with its tokens refunded; through the gateway process
    it is then recorded ``failed`` instead of staying pending."""
    from controlplane.gateway.process import GatewayProcess
    from controlplane.gateway.runtime import routing_state

    tenant = Tenant.objects.create(slug="acme", name="Acme", tokens_per_minute=10**9)
    caller = caller_of(tenant)
    process = GatewayProcess(routing_state, gateway)
    bad = Outcome(CallOutcome.COMPLETED, finish_reason="stop", prompt_tokens=100,
                  completion_tokens=-7)

    async def work(state: AsyncRedisRoutingState) -> list[Any]:
        tickets = await asyncio.gather(*(
            ledger.begin(caller, Identity(f"w{i}", "swe-agent"), MODEL, 100, gateway, state,
                         process.id) for i in range(8)))
        process.hold(tickets[3])
        outcomes = [bad if i == 3 else _done(100) for i in range(8)]
        results = await asyncio.gather(*(ledger.finish(t, o, state)
                                         for t, o in zip(tickets, outcomes, strict=True)),
                                       return_exceptions=True)
        # The gateway process records the refused one as it can: failed, without the usage,
        # and says the answer must be withheld (it is not what was recorded).
        assert await process.record(tickets[3], bad, state, fast=True) is False
        return results

    results = on_loop(work, redis_url)
    assert isinstance(results[3], ledger.OrmFallback), results[3]
    assert [r for i, r in enumerate(results) if i != 3] == [True] * 7
    calls = {c.workflow.external_id: c for c in Call.objects.select_related("workflow")}
    assert all(calls[f"w{i}"].outcome == CallOutcome.COMPLETED for i in range(8) if i != 3)
    refused = calls["w3"]
    assert refused.outcome == CallOutcome.FAILED and "could not be recorded" in refused.error
    assert process.held() == []
    assert tokens_charged(redis_url, tenant) == 7 * 105 + 100
    assert inflight(redis_url) == 0

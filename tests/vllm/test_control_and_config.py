"""The control channel, the EngineCore utility, settings and request tags: bad input is
rejected with an error that names the field, and good input reaches the scheduler."""

from __future__ import annotations

import pytest

from tests.vllm.fakes import VLLM_MISSING_REASON

pytest.importorskip("vllm", reason=VLLM_MISSING_REASON)

from pathlib import Path
from types import SimpleNamespace

from vllm.v1.engine.core import EngineCore

from nodeagent.vllm_hooks import ControlError, SagaConfigError, SagaSchedulerConfig
from nodeagent.vllm_hooks.identity import RequestTagError, identify
from plugins.base import Policy, PolicyConfigError
from plugins.hookspecs import hookimpl
from tests.vllm.harness import FakeClock, make_request, make_scheduler, run_until_done, tokens


@pytest.fixture
def scheduler(llama_dir: Path, clock: FakeClock):  # type: ignore[no-untyped-def]
    return make_scheduler(llama_dir, clock=clock, saga={"node_id": "gpu-3"})


def test_engine_core_utility_forwards_to_the_scheduler(scheduler) -> None:  # type: ignore[no-untyped-def]
    engine = SimpleNamespace(scheduler=scheduler)
    reply = EngineCore.saga_control(engine, "describe", {})  # type: ignore[attr-defined]
    assert reply["node_id"] == "gpu-3"
    assert reply["policies"]["eviction"]["name"] == "aeg"  # SAGA's defaults
    with pytest.raises(RuntimeError, match="not SAGA's"):
        EngineCore.saga_control(SimpleNamespace(scheduler=object()), "describe", {})  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("command", "payload", "field"),
    [
        ("reboot", {}, "command"),
        ("activate", {"kind": "eviction"}, "name"),
        ("activate", {"kind": "eviction", "name": "ttl", "params": [1]}, "params"),
        ("activate_set", {}, "policy_set"),
        ("tool_start", {"tool_name": "bash"}, "workflow_id"),
        ("workflow_end", {"workflow_id": ""}, "workflow_id"),
        ("set_tenants", {"tenants": {"a": {"weight": -1}}}, "tenants.a.weight"),
        ("set_tenants", {"tenants": {"a": {"colour": 1}}}, "tenants.a.colour"),
    ],
)
def test_malformed_commands_name_the_field(scheduler, command, payload, field) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ControlError) as info:
        scheduler.saga_control(command, payload)
    assert info.value.field == field


def test_a_rejected_swap_changes_nothing(scheduler) -> None:  # type: ignore[no-untyped-def]
    before = scheduler.saga_manager.describe()
    with pytest.raises(PolicyConfigError) as info:
        scheduler.saga_control(
            "activate", {"kind": "eviction", "name": "ttl", "params": {"ttl_s": -5}}
        )
    assert info.value.field == "ttl_s"
    with pytest.raises(PolicyConfigError):
        scheduler.saga_control("activate_set", {"policy_set": "no-such-set"})
    assert scheduler.saga_manager.describe() == before


def test_swaps_and_tenants_through_the_channel(scheduler) -> None:  # type: ignore[no-untyped-def]
    reply = scheduler.saga_control("activate_set", {"policy_set": "continuum"})
    assert (reply["eviction"]["name"], reply["fairness"]["name"]) == ("ttl", "fcfs")
    reply = scheduler.saga_control(
        "activate_set", {"fairness": {"name": "vtc", "params": {"output_weight": 3.0}}}
    )
    assert reply["fairness"]["params"]["output_weight"] == 3.0
    scheduler.saga_control("set_tenants", {"tenants": {"gold": {"weight": 4}, "free": {}}})
    ctx = scheduler.saga_context(0.0)
    assert ctx.tenant("gold").weight == 4.0
    assert ctx.tenant("unknown").weight == 1.0


def test_workflow_lifecycle_reaches_the_policy_manager(scheduler, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    scheduler.add_request(
        make_request(
            "c0",
            tokens(0, 40),
            workflow="wf",
            tenant="gold",
            template="swe",
            arrival_time=clock.now,
        )
    )
    run_until_done(scheduler)
    scheduler.notify_tool_start("wf", "pytest")
    scheduler.notify_tool_start("ghost", "bash")  # unknown workflow: ignored, not fatal
    clock.advance(4.0)
    scheduler.add_request(
        make_request(
            "c1",
            tokens(0, 60),
            workflow="wf",
            tenant="gold",
            template="swe",
            arrival_time=clock.now,
        )
    )
    view = scheduler.saga_tracker.workflow_view("wf", clock.now)
    assert (view.tenant, view.template, view.calls_done, view.state) == ("gold", "swe", 1, "queued")
    # The AEG of template "swe" learned the tool and its 4 s latency.
    graph = scheduler.saga_manager.aeg.graph("swe")
    assert graph.counts["call"]["tool:pytest"] == 1.0
    assert "pytest" in graph.tools and "never-seen" not in graph.tools
    run_until_done(scheduler)
    scheduler.notify_workflow_end("wf")
    run_until_done(scheduler)
    scheduler.schedule()  # boundaries apply at the next step
    assert "wf" not in scheduler.saga_tracker.workflows


def test_untagged_requests_are_one_call_workflows(scheduler) -> None:  # type: ignore[no-untyped-def]
    scheduler.add_request(make_request("plain", tokens(0, 20)))
    assert scheduler.saga_tracker.workflow_view("plain", 0.0).tenant == "default"
    run_until_done(scheduler)
    assert scheduler.saga_tracker.workflows == {}


def test_identity_from_tags_and_session_id() -> None:
    tagged = make_request("r", [5], workflow="w", tenant="t", template="swe")
    assert identify(tagged) == identify(tagged)
    ident = identify(tagged)
    assert (ident.workflow_id, ident.tenant, ident.template, ident.tagged) == (
        "w",
        "t",
        "swe",
        True,
    )
    session = make_request("r2", [5])
    session.session_id = "sess-9"
    assert identify(session).workflow_id == "sess-9"
    assert identify(make_request("r3", [5])).tagged is False
    bad = make_request("r4", [5])
    bad.sampling_params.extra_args = {"saga_tenant": 7}
    with pytest.raises(RequestTagError) as info:
        identify(bad)
    assert info.value.field == "saga_tenant"


def test_a_badly_tagged_request_is_scheduled_untagged(scheduler) -> None:  # type: ignore[no-untyped-def]
    bad = make_request("r", tokens(0, 20))
    bad.sampling_params.extra_args = {"saga_workflow": ["not", "a", "string"]}
    scheduler.add_request(bad)
    assert run_until_done(scheduler) == ["r"]


def test_settings_from_additional_config_and_environment() -> None:
    config = SagaSchedulerConfig.from_sources(
        {"saga": {"node_id": "n1", "policy_set": "baseline"}},
        {"SAGA_EVICTION_WINDOW_BLOCKS": "64", "SAGA_ORDER_UNTAGGED": "true", "SAGA_NODE_ID": "x"},
    )
    assert (config.node_id, config.policy_set) == ("n1", "baseline")  # additional_config wins
    assert config.eviction_window_blocks == 64 and config.order_untagged is True


@pytest.mark.parametrize(
    ("additional", "environ", "field"),
    [
        ({"saga": {"colour": 1}}, {}, "colour"),
        ({"saga": {"max_pinned_fraction": 2.0}}, {}, "max_pinned_fraction"),
        ({"saga": {"eviction_window_blocks": 0}}, {}, "eviction_window_blocks"),
        ({}, {"SAGA_EVICTION_WINDOW_BLOCKS": "many"}, "eviction_window_blocks"),
        ({}, {"SAGA_ORDER_UNTAGGED": "perhaps"}, "order_untagged"),
        ({"saga": []}, {}, "saga"),
    ],
)
def test_bad_settings_name_the_field(additional, environ, field) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SagaConfigError) as info:
        SagaSchedulerConfig.from_sources(additional, environ)
    assert info.value.field == field


def test_a_bad_policy_set_stops_the_engine_at_start(llama_dir: Path) -> None:
    with pytest.raises(PolicyConfigError):
        make_scheduler(llama_dir, saga={"policy_set": "lru:nope:fcfs"})


class _RaisingFairness(Policy):
    """A fairness policy that fails at run time, to check the engine survives it."""

    name = "raises"
    kind = "fairness"

    @hookimpl
    def saga_call_priority(self, ctx, call, workflow, tenant) -> float:  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    @hookimpl
    def saga_record_service(self, ctx, call, prefill_tokens, decode_tokens, gpu_s) -> None:  # type: ignore[no-untyped-def]
        return None


def test_a_policy_that_raises_in_the_engine_is_replaced_and_reported(
    scheduler, clock: FakeClock
) -> None:  # type: ignore[no-untyped-def]
    scheduler.saga_manager.registry.add(_RaisingFairness, "test")
    scheduler.saga_control("activate", {"kind": "fairness", "name": "raises"})
    for i in range(3):
        scheduler.add_request(
            make_request(f"r{i}", tokens(10 * i, 20), workflow=f"w{i}", arrival_time=clock.now)
        )
    assert sorted(run_until_done(scheduler)) == ["r0", "r1", "r2"]
    failures = scheduler.saga_control("policy_failures", {})["failures"]
    assert [(f["kind"], f["name"], f["replaced_by"]) for f in failures] == [
        ("fairness", "raises", "afs")
    ]
    assert scheduler.saga_control("policy_failures", {})["failures"] == []
    assert scheduler.saga_describe()["policies"]["fairness"]["name"] == "afs"


def test_tool_end_records_the_tool_latency(scheduler, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    scheduler.add_request(make_request("c0", tokens(0, 20), workflow="wf", arrival_time=clock.now))
    run_until_done(scheduler)
    scheduler.notify_tool_start("wf", "browse")
    clock.advance(7.0)
    scheduler.saga_control("tool_end", {"workflow_id": "wf"})
    clock.advance(1.0)
    scheduler.add_request(make_request("c1", tokens(0, 30), workflow="wf", arrival_time=clock.now))
    record = scheduler.saga_tracker.workflows["wf"]
    # The whole gap since call 0 ended (7 s of tool, 1 s before the next call) is isolated time.
    assert record.isolated_done_s == pytest.approx(8.0, abs=1e-2)
    assert scheduler.saga_manager.aeg.graph("default").tools["browse"].n > 0


def test_load_graphs_installs_learned_execution_graphs() -> None:
    from nodeagent.vllm_hooks.control import ControlError, SchedulerControl
    from plugins.aeg import AEGRegistry
    from plugins.manager import PolicyManager
    from plugins.views import WorkflowEvent

    learned = AEGRegistry()
    learned.observe(WorkflowEvent("call_start", "w", "t", "swe-agent", 0.0, prompt_tokens=10))
    learned.observe(WorkflowEvent("call_end", "w", "t", "swe-agent", 1.0, output_tokens=5))
    learned.observe(WorkflowEvent("workflow_end", "w", "t", "swe-agent", 1.0))
    manager = PolicyManager()
    channel = SchedulerControl(manager, describe=dict, clock=lambda: 0.0)
    reply = channel.handle("load_graphs", {"graphs": [learned.to_json("swe-agent")]})
    assert reply == {"templates": ["swe-agent"]}
    assert manager.aeg.to_json("swe-agent")["workflows_seen"] == 1
    with pytest.raises(ControlError, match="graphs"):
        channel.handle("load_graphs", {"graphs": "nope"})

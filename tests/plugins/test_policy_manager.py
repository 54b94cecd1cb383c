"""Policy manager: discovery, validation, atomic swaps, fallback on failure, concurrency."""

from __future__ import annotations

import random
import textwrap
import threading
from collections import Counter
from collections.abc import Sequence
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins import hookimpl
from plugins.base import Policy, PolicyConfigError, PolicyError
from plugins.builtin import __saga_policies__ as BUILTINS
from plugins.manager import PolicyManager
from plugins.named_sets import POLICY_SETS, parse_policy_set
from plugins.policies.admission import PriorityAdmission
from plugins.policies.eviction import LRUEviction
from plugins.policies.fairness import FCFSFairness
from plugins.policies.routing import SessionAffinityRouting
from plugins.registry import PolicyRegistry
from plugins.testing import make_call, make_entry, make_node, make_tenant, make_workflow
from plugins.views import CacheEntryView, SchedulingContext, StaticContext, WorkflowEvent

ALL_NAMES = {
    "eviction": {"lru", "ttl", "aeg", "belady", "thunderagent", "kvflow"},
    "routing": {"round-robin", "least-loaded", "session-affinity", "prefix-aware", "saga",
                "thunderagent"},
    "admission": {"priority", "lpm", "saga", "thunderagent"},
    "fairness": {"fcfs", "vtc", "plas", "afs", "las"},
}


class ExplodingEviction(Policy):
    """Raises on every decision: the manager must fall back and report."""

    name = "exploding"
    kind = "eviction"
    version = "0.0"

    @hookimpl
    def saga_eviction_order(
        self, ctx: SchedulingContext, candidates: Sequence[CacheEntryView]
    ) -> list[int]:
        raise RuntimeError("boom")

    @hookimpl
    def saga_tool_retention_s(self, ctx, workflow):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")


class LyingRouting(SessionAffinityRouting):
    """Answers routing decisions the engine cannot execute."""

    name = "lying"

    @hookimpl
    def saga_route_call(self, ctx, call, workflow, nodes):  # type: ignore[no-untyped-def]
        return "no-such-node"


class LyingAdmission(PriorityAdmission):
    """Answers admission decisions the engine cannot execute."""

    name = "lying"

    @hookimpl
    def saga_admission_order(self, ctx, node, waiting, priorities):  # type: ignore[no-untyped-def]
        return [c.call_id for c in waiting][:-1]  # drops a call


class NoOpinionFairness(FCFSFairness):
    name = "shrug"

    @hookimpl
    def saga_call_priority(self, ctx, call, workflow, tenant):  # type: ignore[no-untyped-def]
        return None


def manager_with(*extra: type[Policy], **kwargs) -> PolicyManager:  # type: ignore[no-untyped-def]
    return PolicyManager([*BUILTINS, *extra], **kwargs)


# ----------------------------------------------------------------------------- discovery


def test_default_discovery_has_every_builtin_and_saga_defaults_active() -> None:
    manager = PolicyManager()
    for kind, names in ALL_NAMES.items():
        assert set(manager.registry.names(kind)) == names
    assert manager.current().names == ("aeg", "saga", "saga", "afs")
    assert [e.type for e in manager.events] == ["activated"] * 4


def test_explicit_registry_falls_back_to_the_kind_defaults() -> None:
    manager = PolicyManager([LRUEviction, SessionAffinityRouting, PriorityAdmission, FCFSFairness])
    assert manager.current().names == ("lru", "session-affinity", "priority", "fcfs")
    bare = PolicyManager([])
    assert bare.current().names == ("lru", "session-affinity", "priority", "fcfs")


def test_a_tier_manager_holds_only_the_kinds_it_calls() -> None:
    gateway = PolicyManager(kinds=("routing",))
    node = PolicyManager(kinds=("eviction", "admission", "fairness"))
    assert gateway.current().names == ("saga",) and gateway.current().kinds == ("routing",)
    assert node.current().names == ("aeg", "saga", "afs")
    assert node.current().routing is None
    with pytest.raises(PolicyConfigError, match="holds no routing policies") as info:
        node.activate("routing", "least-loaded")
    assert info.value.field == "kind"
    # A named set names every kind; each tier takes its own part of it.
    node.activate_set(**parse_policy_set("baseline").as_kwargs())
    gateway.activate_set(**parse_policy_set("baseline").as_kwargs())
    assert node.current().names == ("lru", "priority", "fcfs")
    assert gateway.current().names == ("session-affinity",)
    with pytest.raises(PolicyError, match="holds no routing policy"):
        node.current().route_call(StaticContext(), make_call(), make_workflow(), [make_node("a")])
    with pytest.raises(PolicyConfigError, match="unknown policy kinds"):
        PolicyManager(kinds=("batching",))


def _install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry_points: list[EntryPoint]
) -> None:
    (tmp_path / "thirdparty_policies.py").write_text(
        textwrap.dedent(
            """
            from plugins import hookimpl
            from plugins.base import Policy, PolicyParams


            class NewestFirst(Policy):
                name = "newest-first"
                kind = "eviction"
                version = "2.1"
                summary = "most recent first"

                class Params(PolicyParams):
                    scale: float = 1.0

                @hookimpl
                def saga_eviction_order(self, ctx, candidates):
                    return [e.entry_id for e in sorted(candidates, key=lambda e: -e.last_access_s)]

                @hookimpl
                def saga_tool_retention_s(self, ctx, workflow):
                    return 0.0


            class Alphabetical(Policy):
                name = "alphabetical"
                kind = "routing"

                @hookimpl
                def saga_route_call(self, ctx, call, workflow, nodes):
                    return min(n.node_id for n in nodes)

                @hookimpl
                def saga_rebalance(self, ctx, nodes, workflows):
                    return []


            class Incomplete(Policy):
                name = "incomplete"
                kind = "fairness"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("plugins.registry.entry_points", lambda group: entry_points)


def test_entry_points_load_modules_and_single_classes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install(
        tmp_path,
        monkeypatch,
        [
            EntryPoint("builtin", "plugins.builtin", "saga.policies"),  # deduplicated
            EntryPoint("one", "thirdparty_policies:NewestFirst", "saga.policies"),
            EntryPoint("alpha", "thirdparty_policies:Alphabetical", "saga.policies"),
            EntryPoint("broken", "no_such_module_xyz", "saga.policies"),
            EntryPoint("bad", "thirdparty_policies:Incomplete", "saga.policies"),
        ],
    )
    manager = PolicyManager.from_entry_points()
    infos = {(i.kind, i.name): i for i in manager.registry.infos()}
    assert ("eviction", "newest-first") in infos
    assert infos[("eviction", "newest-first")].version == "2.1"
    assert ("routing", "alphabetical") in infos
    assert ("eviction", "lru") in infos and ("fairness", "incomplete") not in infos
    errors = [e.message for e in manager.events if e.type == "discovery_error"]
    assert any("no_such_module_xyz" in m for m in errors)
    assert any("incomplete" in m and "misses hooks" in m for m in errors)
    manager.activate("eviction", "newest-first", {"scale": 2.0})
    entries = [make_entry(1, last_access_s=1.0), make_entry(2, last_access_s=2.0)]
    assert manager.current().eviction_order(StaticContext(), entries) == [2, 1]


def test_an_entry_point_naming_a_whole_module_registers_its_policies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install(tmp_path, monkeypatch, [EntryPoint("mod", "thirdparty_policies", "saga.policies")])
    registry = PolicyRegistry.discover()
    assert {"newest-first", "lru"} <= set(registry.names("eviction"))
    assert "alphabetical" in registry.names("routing")
    assert any("incomplete" in e for e in registry.errors)


def test_registry_rejects_clashes_and_wrong_hooks() -> None:
    class Clash(LRUEviction):
        pass

    registry = PolicyRegistry([LRUEviction])
    with pytest.raises(PolicyConfigError, match="clashes"):
        registry.add(Clash, "elsewhere")

    class WrongKind(FCFSFairness):
        name = "wrong"

        @hookimpl
        def saga_eviction_order(self, ctx, candidates):  # type: ignore[no-untyped-def]
            return []

    with pytest.raises(PolicyConfigError, match="other kinds") as info:
        registry.add(WrongKind)
    assert info.value.field == "hooks"


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kind", "name", "params", "field", "message"),
    [
        ("eviction", "nope", None, "name", "unknown eviction policy 'nope'; installed: "),
        ("eviction", "fcfs", None, "name", "'fcfs' is of kind fairness, not eviction"),
        ("scheduling", "lru", None, "kind", "unknown policy kind 'scheduling'"),
        ("eviction", "ttl", {"ttl_s": -5}, "ttl_s", "ttl_s: Input should be greater"),
        ("eviction", "ttl", {"ttl_seconds": 5}, "ttl_seconds", "ttl_seconds: Extra inputs"),
        ("routing", "saga", {"max_moves": "many"}, "max_moves", "max_moves: Input should be"),
        ("batching", "saga", None, "kind", "unknown policy kind 'batching'"),
        ("fairness", "vtc", {"input_weight": 0, "output_weight": 0}, "params", "both be 0"),
        ("fairness", "fcfs", {"by": "tenant"}, "by", "by: Input should be 'call' or"),
        ("fairness", "afs", ["delta_s", 1], "params", "must be a mapping"),
    ],
)
def test_invalid_activation_names_the_field_and_changes_nothing(
    kind: str,
    name: str,
    params,
    field: str,
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    manager = PolicyManager()
    before = manager.current()
    events = len(manager.events)
    with pytest.raises(PolicyConfigError) as info:
        manager.activate(kind, name, params)
    assert message in str(info.value)
    assert info.value.field == field
    assert manager.current() is before
    assert len(manager.events) == events


def test_activate_set_validates_everything_before_swapping() -> None:
    manager = PolicyManager()
    before = manager.current()
    with pytest.raises(PolicyConfigError, match="max_moves"):
        manager.activate_set(eviction="lru", routing=("saga", {"max_moves": -1}), fairness="vtc")
    assert manager.current() is before
    after = manager.activate_set(**parse_policy_set("baseline").as_kwargs())
    assert after.names == ("lru", "session-affinity", "priority", "fcfs")
    assert after.generation == before.generation + 1


def test_activation_builds_fresh_instances_with_validated_params() -> None:
    manager = PolicyManager()
    active = manager.activate("eviction", "ttl", {"ttl_s": "12.5"})
    assert active.params.ttl_s == 12.5  # type: ignore[attr-defined]
    assert manager.current().tool_retention_s(StaticContext(), make_workflow()) == 12.5
    again = manager.activate("eviction", "ttl", {"ttl_s": 12.5})
    assert again.instance is not active.instance
    event = manager.events[-1]
    assert (event.type, event.kind, event.name, event.params) == (
        "activated", "eviction", "ttl", {"ttl_s": 12.5, "per_tool_ttl_s": {}},
    )  # fmt: skip


# ----------------------------------------------------------------------------- failures


def test_a_raising_policy_falls_back_to_the_last_good_one_and_is_reported() -> None:
    manager = manager_with(ExplodingEviction)
    manager.activate("eviction", "ttl", {"ttl_s": 7.0})
    manager.activate("eviction", "exploding")
    seen = []
    manager.subscribe(seen.append)
    step = manager.current()
    entries = [make_entry(1, last_access_s=5.0), make_entry(2, last_access_s=1.0)]
    ctx = StaticContext()
    # This step: the last good policy (ttl) answers in place of the broken one.
    assert step.eviction_order(ctx, entries) == [2, 1]
    assert step.tool_retention_s(ctx, make_workflow()) == 7.0
    failures = [e for e in manager.events if e.type == "failure"]
    assert len(failures) == 1  # the rest of the step skips the broken policy
    failure = failures[0]
    assert (failure.kind, failure.name, failure.hook) == (
        "eviction",
        "exploding",
        "saga_eviction_order",
    )
    assert failure.error == "RuntimeError: boom"
    assert "raise RuntimeError" in (failure.traceback or "")
    assert failure.replaced_by == "ttl"
    assert seen == [failure]
    # Next step: ttl is active again, with its parameters.
    assert manager.current().names[0] == "ttl"
    assert manager.current().generation > step.generation


def test_without_a_last_good_policy_the_kind_default_answers() -> None:
    manager = manager_with(ExplodingEviction, initial={"eviction": "exploding"})
    entries = [make_entry(1, last_access_s=5.0), make_entry(2, last_access_s=1.0)]
    assert manager.current().eviction_order(StaticContext(), entries) == [2, 1]  # lru
    assert manager.current().names[0] == "lru"
    assert manager.events[-1].replaced_by == "lru"


def test_a_failed_policy_is_never_restored_as_last_good() -> None:
    manager = manager_with(ExplodingEviction)
    manager.activate("eviction", "exploding")  # last good: aeg
    manager.current().eviction_order(StaticContext(), [make_entry(1)])  # fails -> aeg
    manager.activate("eviction", "belady")  # last good stays aeg; exploding is not pushed
    manager.activate("eviction", "exploding")
    manager.current().eviction_order(StaticContext(), [make_entry(1)])
    assert manager.current().names[0] == "belady"


def test_answers_the_engine_cannot_execute_are_failures_too() -> None:
    manager = manager_with(LyingRouting, LyingAdmission)
    manager.activate_set(routing="session-affinity", admission="priority")
    manager.activate_set(routing="lying", admission="lying")
    step = manager.current()
    nodes = [make_node("a"), make_node("b")]
    ctx = StaticContext()
    assert step.route_call(ctx, make_call(), make_workflow(), nodes) in {"a", "b"}
    waiting = [make_call("x"), make_call("y")]
    order = step.admission_order(ctx, nodes[0], waiting, {"x": 1.0, "y": 0.0})
    assert order == ["y", "x"]
    failure = [e for e in manager.events if e.type == "failure"][0]
    assert "unknown node 'no-such-node'" in failure.message


def test_no_opinion_means_the_fallback_answers_without_a_failure() -> None:
    manager = manager_with(NoOpinionFairness, initial={"fairness": "shrug"})
    call = make_call(arrival_s=4.0)
    assert (
        manager.current().call_priority(StaticContext(), call, make_workflow(), make_tenant())
        == 4.0
    )
    assert not [e for e in manager.events if e.type == "failure"]


def test_facade_normalises_eviction_orders_and_filters_migrations() -> None:
    class Sloppy(LRUEviction):
        name = "sloppy"

        @hookimpl
        def saga_eviction_order(self, ctx, candidates):  # type: ignore[no-untyped-def]
            return [3, 99, 3]

    manager = manager_with(Sloppy, initial={"eviction": "sloppy"})
    entries = [make_entry(i) for i in (1, 2, 3)]
    assert manager.current().eviction_order(StaticContext(), entries) == [3, 1, 2]
    manager.activate_set(routing="saga")
    nodes = [make_node("hot", waiting=1, queue_delay_s=10.0), make_node("cool")]
    wfs = [
        make_workflow("run", state="running", home_node="hot"),
        make_workflow("tool", state="waiting_tool", home_node="hot"),
    ]
    moves = manager.current().rebalance(StaticContext(), nodes, wfs)
    assert [m.workflow_id for m in moves] == ["tool"]


def test_observe_feeds_the_aeg_and_the_policies() -> None:
    manager = PolicyManager(initial={"fairness": "vtc"})
    manager.observe(WorkflowEvent("call_start", "w1", "acme", "coder", 0.0, prompt_tokens=500))
    manager.observe(WorkflowEvent("call_end", "w1", "acme", "coder", 1.0, output_tokens=20))
    manager.observe(WorkflowEvent("tool_start", "w1", "acme", "coder", 1.0, tool_name="bash"))
    assert manager.predict("w1", now_s=2.0).p_next_call == pytest.approx(0.95)
    vtc = manager.current().fairness.instance
    assert "acme" in vtc.counters.counter  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- concurrency


def test_swaps_during_concurrent_scheduling_never_lose_or_duplicate_a_call() -> None:
    manager = PolicyManager()
    calls = [make_call(f"c{i}", workflow_id=f"w{i}", arrival_s=float(i)) for i in range(3000)]
    queue = list(calls)
    queue_lock = threading.Lock()
    admitted: list[str] = []
    admitted_lock = threading.Lock()
    inconsistent: list[str] = []
    nodes = [make_node(f"n{i}") for i in range(4)]
    tenant = make_tenant()
    stop = threading.Event()
    choices = [
        ("eviction", "lru"), ("eviction", "aeg"), ("eviction", "ttl"),
        ("routing", "saga"), ("routing", "round-robin"), ("routing", "session-affinity"),
        ("routing", "prefix-aware"), ("routing", "least-loaded"),
        ("admission", "saga"), ("admission", "priority"), ("admission", "lpm"),
        ("fairness", "fcfs"), ("fairness", "vtc"), ("fairness", "afs"), ("fairness", "plas"),
    ]  # fmt: skip

    def scheduler() -> None:
        while True:
            with queue_lock:
                batch = [queue.pop() for _ in range(min(7, len(queue)))]
            if not batch:
                return
            step = manager.current()  # once per step
            identity = (step.eviction, step.routing, step.admission, step.fairness)
            ctx = StaticContext(now_s=1.0, tenants={"t1": tenant})
            routed: dict[str, list] = {}  # type: ignore[type-arg]
            for call in batch:
                wf = make_workflow(call.workflow_id)
                node = step.route_call(ctx, call, wf, nodes)
                routed.setdefault(node, []).append(call)
            for node_id, waiting in routed.items():
                node = next(n for n in nodes if n.node_id == node_id)
                prio = step.priorities(ctx, waiting, lambda w: make_workflow(w), lambda t: tenant)
                order = step.admission_order(ctx, node, waiting, prio)
                with admitted_lock:
                    admitted.extend(order)
            if (step.eviction, step.routing, step.admission, step.fairness) != identity:
                inconsistent.append(repr(step))

    def swapper(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            kind, name = rng.choice(choices)
            manager.activate(kind, name)

    swappers = [threading.Thread(target=swapper, args=(s,)) for s in range(3)]
    schedulers = [threading.Thread(target=scheduler) for _ in range(4)]
    for t in swappers + schedulers:
        t.start()
    for t in schedulers:
        t.join()
    stop.set()
    for t in swappers:
        t.join()
    counts = Counter(admitted)
    assert len(counts) == len(calls)
    assert set(counts.values()) == {1}
    assert not inconsistent
    assert manager.current().generation > 10  # swaps really happened meanwhile
    assert not [e for e in manager.events if e.type == "failure"]


# ----------------------------------------------------------------------------- named sets


def test_named_sets_use_installed_policies_of_the_right_kinds() -> None:
    manager = PolicyManager()
    for name in POLICY_SETS:
        policies = manager.activate_set(**parse_policy_set(name).as_kwargs())
        assert policies.names == POLICY_SETS[name]
    assert manager.current().requires_oracle is False
    manager.activate_set(**parse_policy_set("belady").as_kwargs())
    assert manager.current().requires_oracle is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("saga", ("saga", "aeg", "saga", "saga", "afs")),
        ("mine=ttl:saga:lpm:vtc", ("mine", "ttl", "saga", "lpm", "vtc")),
        (" lru:round-robin:priority:plas ",
         ("lru:round-robin:priority:plas", "lru", "round-robin", "priority", "plas")),
        # the three-part form of the releases with one batching kind
        ("mine=ttl:saga:vtc", ("mine", "ttl", "saga", "saga", "vtc")),
        ("lru:prefix-aware:fcfs", ("lru:prefix-aware:fcfs", "lru", "prefix-aware", "lpm", "fcfs")),
    ],
)
def test_parse_policy_set(text: str, expected: tuple[str, ...]) -> None:
    spec = parse_policy_set(text)
    assert (spec.name, *spec.names) == expected


def test_the_legacy_form_moves_admission_band_to_the_admission_policy() -> None:
    spec = parse_policy_set("t=aeg:saga[max_moves=2;admission_band=1.5]:afs")
    assert spec.params == {"routing": {"max_moves": 2}, "admission": {"admission_band": 1.5}}
    manager = PolicyManager()
    policies = manager.activate_set(**spec.as_kwargs())
    assert policies.admission.params.admission_band == 1.5  # type: ignore[union-attr,attr-defined]
    assert policies.routing.params.max_moves == 2  # type: ignore[union-attr,attr-defined]


@pytest.mark.parametrize(
    ("text", "match"),
    [("", "empty"), ("nosuchset", "unknown policy set"), ("x=a:b", "EVICTION:ROUTING:ADMISSION"),
     ("=a:b:c", "empty name"), ("a::c", "EVICTION:ROUTING:ADMISSION"),
     ("lru:hash-ring:fcfs", "was not a batching policy")],
)  # fmt: skip
def test_parse_policy_set_errors(text: str, match: str) -> None:
    with pytest.raises(PolicyConfigError, match=match):
        parse_policy_set(text)


class FlakyEviction(LRUEviction):
    """LRU that starts raising after ``fail_after`` decisions (and in observe when asked)."""

    name = "flaky"

    class Params(LRUEviction.Params):
        fail_after: int = 0
        fail_in_observe: bool = False

    def __init__(self, params=None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(params)
        self.decisions = 0
        self.raised = False

    def _maybe_fail(self) -> None:
        self.decisions += 1
        if self.decisions > self.params.fail_after:  # type: ignore[attr-defined]
            self.raised = True
            raise ValueError(f"flaky after {self.decisions - 1}")

    @hookimpl
    def saga_eviction_order(self, ctx, candidates):  # type: ignore[no-untyped-def]
        self._maybe_fail()
        return super().saga_eviction_order(ctx, candidates)

    @hookimpl
    def saga_observe(self, ctx, event):  # type: ignore[no-untyped-def]
        if self.params.fail_in_observe:  # type: ignore[attr-defined]
            self.raised = True
            raise KeyError("observe")


actions = st.lists(
    st.one_of(
        st.tuples(st.just("activate"), st.sampled_from(["lru", "ttl", "aeg", "flaky"]),
                  st.integers(0, 3)),
        st.tuples(st.just("decide"), st.integers(0, 6), st.integers(0, 0)),
    ),
    min_size=1,
    max_size=25,
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(actions)
def test_raising_policies_always_fall_back_and_are_reported(script) -> None:  # type: ignore[no-untyped-def]
    manager = manager_with(FlakyEviction, initial={"eviction": "lru"})
    instances: list[FlakyEviction] = []
    ctx = StaticContext()
    for action, arg, extra in script:
        if action == "activate":
            params = {"fail_after": extra} if arg == "flaky" else None
            active = manager.activate("eviction", arg, params)
            if arg == "flaky":
                instances.append(active.instance)  # type: ignore[arg-type]
            continue
        entries = [make_entry(i, last_access_s=float(-i)) for i in range(arg)]
        step = manager.current()
        for _ in range(2):  # two decisions in the same step
            order = step.eviction_order(ctx, entries)
            assert sorted(order) == list(range(arg))
        current = manager.current().eviction.instance
        assert not getattr(current, "raised", False)
    failures = [e for e in manager.events if e.type == "failure"]
    assert len(failures) == sum(1 for i in instances if i.raised)
    assert all(f.name == "flaky" and f.error.startswith("ValueError") for f in failures)
    # A replacement is a last good policy (possibly another flaky one that had not failed yet).
    assert all(f.replaced_by in {"lru", "ttl", "aeg", "flaky"} for f in failures)


def test_a_policy_raising_in_a_notification_is_replaced_and_reported() -> None:
    manager = manager_with(FlakyEviction)
    manager.activate("eviction", "flaky", {"fail_after": 100, "fail_in_observe": True})
    manager.observe(WorkflowEvent("call_start", "w", "t", "a", 0.0, prompt_tokens=10))
    failure = [e for e in manager.events if e.type == "failure"][-1]
    assert (failure.hook, failure.name, failure.replaced_by) == ("saga_observe", "flaky", "aeg")
    assert manager.current().names[0] == "aeg"


def test_an_implementation_may_take_only_the_arguments_it_uses() -> None:
    class Terse(LRUEviction):
        name = "terse"

        @hookimpl
        def saga_eviction_order(self, candidates):  # type: ignore[no-untyped-def, override]
            return [e.entry_id for e in reversed(candidates)]

    manager = manager_with(Terse, initial={"eviction": "terse"})
    entries = [make_entry(1), make_entry(2)]
    assert manager.current().eviction_order(StaticContext(), entries) == [2, 1]
    assert not [e for e in manager.events if e.type == "failure"]

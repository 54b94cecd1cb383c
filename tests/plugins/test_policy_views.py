"""The contract's view and hook names exist, views are immutable, StaticContext works."""

from __future__ import annotations

import dataclasses

import pytest

from plugins import hookimpl, hookspec, hookspecs, views
from plugins.testing import make_workflow

CONTRACT_FIELDS = {
    "TenantView": ["name", "weight", "slo_slowdown", "slo_percentile"],
    "WorkflowView": [
        "workflow_id", "tenant", "template", "state", "arrival_s", "calls_done",
        "context_tokens", "cached_tokens", "home_node", "tool_name", "tool_elapsed_s",
        "service_s", "isolated_s", "elapsed_s",
    ],
    "CallView": [
        "call_id", "workflow_id", "tenant", "template", "seq", "prompt_tokens",
        "cached_tokens", "arrival_s",
    ],
    "CacheEntryView": [
        "entry_id", "workflow_id", "tenant", "tokens", "blocks", "depth_tokens",
        "last_access_s", "pinned", "next_use_s",
    ],
    "NodeView": [
        "node_id", "waiting", "running", "kv_free_tokens", "kv_total_tokens",
        "queue_delay_s", "load", "cached_workflows",
    ],
    "Migration": ["workflow_id", "source", "target"],
    "WorkflowEvent": [
        "kind", "workflow_id", "tenant", "template", "time_s", "prompt_tokens",
        "cached_tokens", "output_tokens", "tool_name",
    ],
    "Prediction": ["p_next_call", "expected_gap_s", "reuse_tokens"],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CONTRACT_FIELDS))
def test_views_have_the_contract_fields_in_order_and_are_frozen(name: str) -> None:
    cls = getattr(views, name)
    names = [f.name for f in dataclasses.fields(cls)]
    assert names[: len(CONTRACT_FIELDS[name])] == CONTRACT_FIELDS[name]
    assert cls.__dataclass_params__.frozen
    assert hasattr(cls, "__slots__")


def test_a_view_cannot_be_changed_by_a_policy() -> None:
    wf = make_workflow()
    with pytest.raises(dataclasses.FrozenInstanceError):
        wf.state = "done"  # type: ignore[misc]


def test_hook_markers_belong_to_the_saga_project() -> None:
    assert hookimpl.project_name == "saga"
    assert hookspec.project_name == "saga"


def test_decision_hooks_are_firstresult_and_notifications_are_not() -> None:
    for kind, names in hookspecs.HOOKS_BY_KIND.items():
        for name in names:
            opts = getattr(hookspecs, name).saga_spec
            expected = name != "saga_record_service"
            assert opts["firstresult"] is expected, (kind, name)
    assert hookspecs.saga_observe.saga_spec["firstresult"] is False


def test_static_context_neutral_prediction_and_lookup() -> None:
    wf = make_workflow("w9", cached_tokens=700)
    ctx = views.StaticContext(now_s=3.0, workflows={"w9": wf})
    assert isinstance(ctx, views.SchedulingContext)
    assert ctx.workflow("w9") is wf
    assert ctx.workflow("nope") is None
    pred = ctx.predict("w9")
    assert (pred.p_next_call, pred.expected_gap_s, pred.reuse_tokens) == (1.0, 0.0, 700.0)

"""The control websocket's protocol (``/ws/node/``), both directions, in one place.

The control plane (``controlplane.nodes.consumers``) and the node agent
(``nodeagent.agent.control``) build and parse every frame with these models, so the heartbeat
schema, the tenant and policy formats and the workflow events cannot drift apart between the two
sides. Every frame is a JSON object with a ``type``. Unknown extra fields are ignored (a newer
peer may send more); wrong types or out-of-range values are answered with an ``error`` frame
naming the field, and the connection stays up.

Node -> control plane: ``register``, ``heartbeat``, ``policy.ack``.
Control plane -> node: ``registered``, ``policy.sync``, ``policy``, ``tenants``,
``execution_graphs``, ``workflow`` (tool and workflow boundaries the gateway inferred),
``command``, ``heartbeat.ack``, ``closing``, ``error``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from plugins.hookspecs import KINDS

NonNegInt = Annotated[int, Field(ge=0)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Frame(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    def frame(self) -> dict[str, Any]:
        """The JSON-ready dict sent on the socket."""
        return self.model_dump(mode="json")


def _policy_kind(value: str) -> str:
    if value not in KINDS:
        raise ValueError(f"unknown policy kind {value!r}; expected one of {', '.join(KINDS)}")
    return value


# ---------------------------------------------------------------------------- shared parts
class TenantWire(BaseModel):
    """A tenant as nodes need it: its fair-share weight and SLO (``plugins.views.TenantView``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    name: str = Field(min_length=1, max_length=64)
    weight: float = Field(1.0, gt=0, allow_inf_nan=False)
    slo_slowdown: float = Field(5.0, ge=1, allow_inf_nan=False)
    slo_percentile: float = Field(99.0, gt=0, le=100)


class PolicyWire(BaseModel):
    """One activation a node applies and acknowledges by id."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    activation_id: Annotated[int, Field(ge=1)]
    kind: str
    name: str = Field(min_length=1, max_length=100)
    params: dict[str, Any] = Field(default_factory=dict)
    version: int = 1

    _kind = field_validator("kind")(_policy_kind)


# ---------------------------------------------------------------------------- node -> plane
class Register(Frame):
    type: Literal["register"] = "register"
    engine: Literal["vllm", "sim"]
    model: str = Field(default="", max_length=200)
    gpu_model: str = Field(default="", max_length=100)
    gpu_count: Annotated[int, Field(ge=1, le=1024)] = 1
    kv_capacity_tokens: NonNegInt = 0
    max_num_seqs: NonNegInt = 0
    profile: str = Field(default="", max_length=100)
    address: str = Field(default="", max_length=200)


MAX_CACHED_WORKFLOWS = 1024
"""Workflows a heartbeat reports private cached tokens for: those with the most."""


class Heartbeat(Frame):
    """A node's load in the contract's terms (``plugins.views.NodeView``), plus counters."""

    type: Literal["heartbeat"] = "heartbeat"
    waiting: NonNegInt = 0
    running: NonNegInt = 0
    kv_used_tokens: NonNegInt = 0
    kv_total_tokens: NonNegInt = 0
    prefix_cache_hit_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    queue_delay_s: NonNegFloat = 0.0
    load: NonNegFloat = 0.0
    cached_workflows: dict[str, NonNegInt] = Field(
        default_factory=dict, max_length=MAX_CACHED_WORKFLOWS,
        description="private cached tokens of the node's workflows (the largest "
                    f"{MAX_CACHED_WORKFLOWS})")
    isolated_prefill_s_per_token: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        default=None, description="measured from steps that served a single request (vLLM)")
    isolated_decode_s_per_token: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        default=None, description="measured from steps that served a single request (vLLM)")


class PolicyAck(Frame):
    """The node applied (or refused and kept the previous one of) an activation it was sent;
    ``run_time``: it had applied it, then the policy raised and was replaced."""

    type: Literal["policy.ack"] = "policy.ack"
    activation_id: Annotated[int, Field(ge=1)]
    kind: str
    applied: bool
    error: str = Field(default="", max_length=2000)
    run_time: bool = False
    hook: str = Field(default="", max_length=64)
    """For a run-time failure: the hook that raised ("" when the engine refused the policy)."""
    replaced_by: str = Field(default="", max_length=100)
    """For a run-time failure: the policy answering instead."""

    _kind = field_validator("kind")(_policy_kind)


NodeFrame = Annotated[Register | Heartbeat | PolicyAck, Field(discriminator="type")]
node_frames: TypeAdapter[Register | Heartbeat | PolicyAck] = TypeAdapter(NodeFrame)


# ---------------------------------------------------------------------------- plane -> node
class Registered(Frame):
    type: Literal["registered"] = "registered"
    node: str
    tenants: list[TenantWire] = Field(default_factory=list)
    execution_graphs: list[dict[str, Any]] = Field(default_factory=list)
    heartbeat_interval_s: float = 5.0
    heartbeat_timeout_s: float = 15.0


class PolicySync(Frame):
    type: Literal["policy.sync"] = "policy.sync"
    policies: list[PolicyWire] = Field(default_factory=list)


class PolicyPush(Frame):
    type: Literal["policy"] = "policy"
    policy: PolicyWire


class Tenants(Frame):
    type: Literal["tenants"] = "tenants"
    tenants: list[TenantWire] = Field(default_factory=list)


class ExecutionGraphs(Frame):
    type: Literal["execution_graphs"] = "execution_graphs"
    graphs: list[dict[str, Any]] = Field(default_factory=list)


class WorkflowBoundary(Frame):
    """A boundary the gateway inferred (or an agent reported through the REST API), pushed to
    the workflow's home node: nodes never infer tool boundaries themselves."""

    type: Literal["workflow"] = "workflow"
    event: Literal["tool_start", "tool_end", "workflow_end"]
    workflow_id: str = Field(min_length=1, max_length=64)
    tool_name: str | None = Field(default=None, max_length=200)
    outcome: str = Field(default="", max_length=32, description="workflow_end: final state")


class Command(Frame):
    type: Literal["command"] = "command"
    command: dict[str, Any]


class HeartbeatAck(Frame):
    type: Literal["heartbeat.ack"] = "heartbeat.ack"


class Closing(Frame):
    type: Literal["closing"] = "closing"
    code: int
    reason: str = ""


class Error(Frame):
    type: Literal["error"] = "error"
    field: str
    message: str


PlaneFrame = Annotated[
    Registered | PolicySync | PolicyPush | Tenants | ExecutionGraphs | WorkflowBoundary
    | Command | HeartbeatAck | Closing | Error,
    Field(discriminator="type"),
]
plane_frames: TypeAdapter[Any] = TypeAdapter(PlaneFrame)


def error_frame(exc: Exception) -> dict[str, Any]:
    """The ``error`` frame for a frame that failed validation (names the first bad field)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "type"
        return Error(field=field, message=first["msg"]).frame()
    return Error(field="type", message=str(exc)).frame()

"""The node-agent websocket protocol: what a node may send, validated before it touches the DB.

Unknown extra fields are ignored (newer agents may send more); wrong types or out-of-range
values are answered with an ``error`` frame naming the field, and the connection stays up.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

NonNegInt = Annotated[int, Field(ge=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class RegisterMessage(_Message):
    type: Literal["register"]
    engine: Literal["vllm", "sim"]
    model: str = Field(default="", max_length=200)
    gpu_model: str = Field(default="", max_length=100)
    gpu_count: Annotated[int, Field(ge=1, le=1024)] = 1
    kv_capacity_tokens: NonNegInt = 0
    address: str = Field(default="", max_length=200)


class HeartbeatMessage(_Message):
    type: Literal["heartbeat"]
    waiting: NonNegInt = 0
    running: NonNegInt = 0
    kv_used_tokens: NonNegInt = 0
    kv_total_tokens: NonNegInt = 0
    prefix_cache_hit_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    queue_delay_s: NonNegFloat = 0.0
    load: NonNegFloat = 0.0


class PolicyAckMessage(_Message):
    """The node applied (or refused and rolled back) an activation it was sent."""

    type: Literal["policy.ack"]
    activation_id: Annotated[int, Field(ge=1)]
    kind: Literal["eviction", "batching", "fairness"]
    applied: bool
    error: str = Field(default="", max_length=2000)


AnyNodeMessage = RegisterMessage | HeartbeatMessage | PolicyAckMessage
NodeMessage = Annotated[AnyNodeMessage, Field(discriminator="type")]
node_message_adapter: TypeAdapter[AnyNodeMessage] = TypeAdapter(NodeMessage)

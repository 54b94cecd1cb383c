"""Build a real vLLM 0.33 scheduler on CPU and drive it without a model.

Follows the recipe in the shared vLLM notes: a local tiny Llama config, one full-attention KV
cache group, and fake model outputs (one sampled token per request that finished its prefill).
Everything here calls vLLM's public constructors; nothing is copied from vLLM's tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from vllm.config import CacheConfig, ModelConfig, SchedulerConfig, VllmConfig
from vllm.sampling_params import SamplingParams
from vllm.utils.hashing import sha256
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.core.single_type_kv_cache_manager import register_all_kvcache_specs
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
from vllm.v1.outputs import ModelRunnerOutput
from vllm.v1.request import Request
from vllm.v1.structured_output import StructuredOutputManager

from nodeagent.vllm_hooks import SagaScheduler
from tests.vllm.fakes import EOS, FakeClock

BLOCK_SIZE = 16


def make_scheduler(
    model_dir: Path,
    *,
    cls: type[Scheduler] = SagaScheduler,
    num_blocks: int = 1000,
    max_num_seqs: int = 16,
    max_num_batched_tokens: int = 4096,
    scheduling_policy: str = "priority",
    saga: dict[str, Any] | None = None,
    clock: Callable[[], float] | None = None,
) -> Scheduler:
    """A scheduler of class ``cls`` over ``num_blocks`` KV blocks, prefix caching on."""
    model_config = ModelConfig(model=str(model_dir), skip_tokenizer_init=True, max_model_len=4096)
    scheduler_config = SchedulerConfig(
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        max_model_len=4096,
        enable_chunked_prefill=True,
        is_encoder_decoder=False,
        watermark=0.0,
        policy=scheduling_policy,  # type: ignore[arg-type]
    )
    cache_config = CacheConfig(
        block_size=BLOCK_SIZE, gpu_memory_utilization=0.9, enable_prefix_caching=True
    )
    vllm_config = VllmConfig(
        model_config=model_config,
        scheduler_config=scheduler_config,
        cache_config=cache_config,
        additional_config={"saga": saga} if saga is not None else {},
    )
    kv_cache_config = KVCacheConfig(
        num_blocks=num_blocks,
        kv_cache_tensors=[],
        kv_cache_groups=[
            KVCacheGroupSpec(
                ["layer"],
                FullAttentionSpec(
                    block_size=BLOCK_SIZE, num_kv_heads=1, head_size=1, dtype=torch.float32
                ),
            )
        ],
    )
    cache_config.num_gpu_blocks = num_blocks
    register_all_kvcache_specs(vllm_config)
    scheduler = cls(
        vllm_config=vllm_config,
        kv_cache_config=kv_cache_config,
        structured_output_manager=StructuredOutputManager(vllm_config),
        block_size=BLOCK_SIZE,
        log_stats=False,
    )
    if clock is not None:
        scheduler.saga_clock = clock  # type: ignore[attr-defined]
    return scheduler


_HASHER = None


def make_request(
    request_id: str,
    prompt: Sequence[int],
    *,
    max_tokens: int = 4,
    workflow: str | None = None,
    tenant: str | None = None,
    template: str | None = None,
    priority: int = 0,
    arrival_time: float | None = None,
) -> Request:
    """A request tagged like the node agent tags them (``extra_args``)."""
    global _HASHER
    if _HASHER is None:
        init_none_hash(sha256)
        _HASHER = get_request_block_hasher(BLOCK_SIZE, sha256)
    extra: dict[str, Any] = {}
    if workflow is not None:
        extra["saga_workflow"] = workflow
    if tenant is not None:
        extra["saga_tenant"] = tenant
    if template is not None:
        extra["saga_template"] = template
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=False, extra_args=extra or None)
    params.update_from_generation_config({}, EOS)
    return Request(
        request_id=request_id,
        prompt_token_ids=list(prompt),
        sampling_params=params,
        pooling_params=None,
        block_hasher=_HASHER,
        priority=priority,
        arrival_time=arrival_time,
    )


def fake_output(scheduler: Scheduler, output: SchedulerOutput, token: int = 7) -> ModelRunnerOutput:
    """One sampled token for every scheduled request whose prompt is fully computed."""
    req_ids = list(output.num_scheduled_tokens)
    sampled: list[list[int]] = []
    for req_id in req_ids:
        request = scheduler.requests[req_id]
        done_prefill = request.num_computed_tokens >= request.num_prompt_tokens
        sampled.append([token] if done_prefill else [])
    return ModelRunnerOutput(
        req_ids=req_ids,
        req_id_to_index={r: i for i, r in enumerate(req_ids)},
        sampled_token_ids=sampled,
        logprobs=None,
        prompt_logprobs_dict={},
        pooler_output=None,
    )


def step(
    scheduler: Scheduler, token: int = 7, clock: FakeClock | None = None, step_s: float = 0.0
) -> tuple[SchedulerOutput, list[str]]:
    """One engine step taking ``step_s`` on ``clock``; returns the output and the ids of the
    requests that finished in it."""
    output = scheduler.schedule()
    if clock is not None:
        clock.advance(step_s)
    engine_outputs = scheduler.update_from_output(output, fake_output(scheduler, output, token))
    finished: list[str] = []
    for outs in engine_outputs.values():
        finished.extend(o.request_id for o in outs.outputs if o.finish_reason is not None)
    return output, finished


def admit_and_measure_hit(scheduler: Scheduler, request: Request) -> int:
    """Add ``request``, run one step, return how many prompt tokens came from the prefix cache.

    The step's token budget covers the whole prompt, so what it did not schedule was cached.
    """
    scheduler.add_request(request)
    output, _ = step(scheduler)
    scheduled = output.num_scheduled_tokens.get(request.request_id)
    assert scheduled is not None, f"{request.request_id} was not admitted"
    return request.num_prompt_tokens - scheduled


def admitted_order(output: SchedulerOutput) -> list[str]:
    """Ids of the requests a step admitted for the first time, in admission order."""
    return [r.req_id for r in output.scheduled_new_reqs]


def run_until_done(
    scheduler: Scheduler,
    max_steps: int = 500,
    clock: FakeClock | None = None,
    step_s: float = 0.0,
    admitted: list[str] | None = None,
) -> list[str]:
    """Step until nothing is left; returns finished request ids in finishing order (and appends
    first admissions, in order, to ``admitted``)."""
    finished: list[str] = []
    for _ in range(max_steps):
        if not scheduler.has_requests():
            return finished
        output, done = step(scheduler, clock=clock, step_s=step_s)
        if admitted is not None:
            admitted.extend(admitted_order(output))
        finished.extend(done)
    raise AssertionError(f"requests still unfinished after {max_steps} steps")


def tokens(start: int, n: int) -> list[int]:
    """``n`` distinct token ids from ``start`` (ids stay below the tiny vocabulary)."""
    return [3 + (start + i) % 1000 for i in range(n)]


def ids(requests: Iterable[Request]) -> list[str]:
    return [r.request_id for r in requests]

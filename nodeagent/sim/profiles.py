"""Hardware/model profiles for the simulated engine, every figure with its source.

Sources (abbreviations used below):
  [CAL]   ../shared/calibration/README.md ("Model and hardware facts", "Derived from those
          profiles"); the per-forward linear tables come from the Vidur CSVs in the same folder.
  [VIDUR] Vidur A100 operator profiles, github.com/microsoft/vidur @ 7d47513 (MIT), embedded in
          profiles_data.py.
  [HF]    Llama-3 model configs (meta-llama/Meta-Llama-3-{8B,70B} config.json); the same dims
          are columns of the Vidur CSV (n_head, n_kv_head, n_embd, n_expanded_embd, vocab_size).
  [FA2]   Dao, "FlashAttention-2", arXiv 2307.08691: forward pass reaches 50-73% of A100 peak.
  [MEAS]  measured in this project on one NVIDIA H200 with nodeagent/sim/profiles_measure.py
          (numbers and run details in profiles_data.py).
  [EST]   an engineering estimate, labelled as such; change it here and the tests show the effect.

Linear-layer tables: A100 from Vidur [VIDUR]; H200 from our measurement of the weight GEMMs
[MEAS] plus Vidur's elementwise ops scaled by bandwidth; H100 (same GH100 compute as the H200,
less bandwidth) from the H200 table by the roofline split of ``scale_linear_table``. The same
split applied A100 -> H200 with datasheet ratios [CAL] reproduces our H200 GEMM measurement
within 28% at every grid point, and tests/sim/test_costmodel.py checks the Hopper profiles
against the LambdaLabs vLLM figures [CAL].
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from nodeagent.sim.profiles_data import (
    LLAMA3_8B_TP1_A100_MS,
    LLAMA3_8B_TP1_A100_NONGEMM_MS,
    LLAMA3_8B_TP1_H200_GEMM_MS,
    LLAMA3_70B_TP4_A100_MS,
    LLAMA3_70B_TP4_A100_NONGEMM_MS,
    LLAMA3_70B_TP4_H200_GEMM_MS,
    LLAMA3_70B_TP8_A100_MS,
)

Table = tuple[tuple[int, float], ...]

GB = 1e9
BYTES_PER_PARAM = 2  # bf16/fp16 weights and KV [CAL "KV bytes per token, fp16"]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Transformer dimensions [HF]; derived sizes are computed, not typed in."""

    name: str
    layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    vocab: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def layer_linear_params(self) -> int:
        """q,k,v,o projections + gated MLP (up, gate, down) of one decoder layer."""
        kv_dim = self.n_kv_heads * self.head_dim
        attn = self.d_model * (self.d_model + 2 * kv_dim) + self.d_model * self.d_model
        return attn + 3 * self.d_model * self.ffn_dim

    @property
    def linear_params(self) -> int:
        return self.layers * self.layer_linear_params

    @property
    def lm_head_params(self) -> int:
        return self.vocab * self.d_model

    @property
    def total_params(self) -> int:
        """Layers + input embedding + (untied) LM head: 8.03B / 70.55B for Llama-3 8B / 70B."""
        return self.linear_params + 2 * self.lm_head_params

    @property
    def weight_bytes(self) -> int:
        return self.total_params * BYTES_PER_PARAM

    @property
    def kv_bytes_per_token(self) -> int:
        """2 (K,V) x layers x kv_heads x head_dim x 2 bytes [CAL]: 128 KiB (8B), 320 KiB (70B)."""
        return 2 * self.layers * self.n_kv_heads * self.head_dim * BYTES_PER_PARAM


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """Datasheet figures of one GPU."""

    name: str
    peak_bf16_flops: float
    hbm_bytes_per_s: float
    memory_bytes: float
    allreduce_bus_bytes_per_s: float


LLAMA3_8B = ModelSpec("Llama-3-8B", layers=32, d_model=4096, n_heads=32, n_kv_heads=8,
                      ffn_dim=14336, vocab=128256)  # [HF]; Vidur CSV n_embd 4096 etc.
LLAMA3_70B = ModelSpec("Llama-3-70B", layers=80, d_model=8192, n_heads=64, n_kv_heads=8,
                       ffn_dim=28672, vocab=128256)  # [HF]; Vidur CSV n_embd 8192 etc.

# [CAL] "HBM bandwidth: A100-80GB 2.0 TB/s, H100 SXM 3.35 TB/s, H200 4.8 TB/s. Dense bf16: A100
# 312 TFLOP/s, H100/H200 ~990 TFLOP/s". Memory sizes: vendor datasheets (80 GB, 80 GB, 141 GB).
# All-reduce bus bandwidth [EST]: ~40% of the NVLink aggregate (A100 NVLink3 600 GB/s, H100/H200
# NVLink4 900 GB/s), the order nccl-tests all_reduce_perf reports on 8-GPU HGX boards.
A100_80GB = GpuSpec("A100-80GB", 312e12, 2.0e12, 80 * GB, 230 * GB)
H100_SXM = GpuSpec("H100-SXM", 990e12, 3.35e12, 80 * GB, 360 * GB)
H200 = GpuSpec("H200", 990e12, 4.8e12, 141 * GB, 360 * GB)

ATTN_FLOPS_EFFICIENCY = 0.5
"""Fraction of datasheet bf16 peak reached by prefill attention kernels: the low end of the
50-73% FlashAttention-2 reports on A100 [FA2]; on our H200 causal attention reached 41-61% of
990 TFLOP/s at 4k-32k tokens (12-19% at 1k) [MEAS]."""

HBM_EFFICIENCY = 0.8
"""Fraction of datasheet HBM bandwidth reached when decode attention reads KV [EST]; on our H200
single-token attention over a KV cache reached 81-93% of 4.8 TB/s at batch >= 16 with 8 KV heads
(8B), 51-90% with the 2 KV heads of a 70B TP4 shard (lowest at short contexts) [MEAS]."""

ALLREDUCE_LATENCY_S = 10e-6
"""Fixed cost of one small NCCL all-reduce inside an NVLink node [EST]; Vidur's CSV excludes
all-reduce [CAL "Files"]. Two all-reduces per layer (after attention, after MLP) with TP > 1."""

STEP_OVERHEAD_S = 1.0e-3
"""Per-step host cost not in the operator profile (scheduler, input prep, sampler) [EST]."""

GPU_MEMORY_UTILIZATION = 0.9
"""vLLM's default gpu_memory_utilization [CAL "0.9 utilisation"]."""

NON_KV_RESERVE_BYTES_PER_GPU = 1.0 * GB
"""Activations/CUDA context left out of the KV pool [EST], chosen so that the formula gives the
README's ~0.42M tokens for 8B on an 80 GB H100; the test checks it also lands within 8% of the
other two README capacity figures (A6000 13,248 blocks; 70B TP4 ~0.42M)."""

DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192
"""vLLM chunked-prefill token budget per step [CAL "max_num_batched_tokens 8192"]."""
DEFAULT_MAX_NUM_SEQS = 256
"""vLLM max running sequences per step [CAL "max_num_seqs 256"]."""
DEFAULT_BLOCK_SIZE = 16
"""vLLM KV block size in tokens [CAL "block size 16 tokens"]."""


def kv_capacity_tokens(model: ModelSpec, gpu: GpuSpec, gpus: int,
                       memory_bytes: float | None = None, block_size: int = DEFAULT_BLOCK_SIZE,
                       utilization: float = GPU_MEMORY_UTILIZATION) -> int:
    """KV tokens an instance can hold: (gpus x memory x utilisation - weights - gpus x reserve)
    / KV bytes per token, rounded down to whole blocks. This is how vLLM sizes its KV pool."""
    mem = gpu.memory_bytes if memory_bytes is None else memory_bytes
    free = gpus * (mem * utilization - NON_KV_RESERVE_BYTES_PER_GPU) - model.weight_bytes
    if free <= 0:
        raise ValueError(f"{model.name} does not fit on {gpus} x {gpu.name}")
    tokens = int(free // model.kv_bytes_per_token)
    return tokens - tokens % block_size


GEMMS_PER_LAYER = 4  # qkv, o, gate+up, down
GEMM_FIXED_LATENCY_S = 20e-6
"""Per-GEMM cost that does not shrink with a faster GPU (launch, ramp-up, tail). Fitted on our
H200 measurement against the Vidur A100 table at 1 token: (t_A100 - F) / bandwidth ratio + F =
t_H200 gives 23 us per GEMM for 8B and 18.5 us for 70B TP4 (profiles_data.py)."""


def fixed_forward_ms(model: ModelSpec) -> float:
    """Fixed GEMM latency of one forward, ms (see GEMM_FIXED_LATENCY_S)."""
    return model.layers * GEMMS_PER_LAYER * GEMM_FIXED_LATENCY_S * 1e3


def weight_read_ms(model: ModelSpec, tp: int, gpu: GpuSpec) -> float:
    """Time to stream one GPU's share of the linear weights from HBM at datasheet bandwidth."""
    return model.linear_params * BYTES_PER_PARAM / tp / gpu.hbm_bytes_per_s * 1e3


def scale_linear_table(table_ms: Table, model: ModelSpec, tp: int, src: GpuSpec,
                       dst: GpuSpec) -> Table:
    """Rescale a linear-layer table from ``src`` to ``dst`` GPU by a roofline split.

    Of the time t(n) at n tokens, the fixed GEMM latency F (``fixed_forward_ms``) does not
    scale; of the rest, the weight-read floor (``weight_read_ms`` on ``src``) scales with the
    datasheet bandwidth ratio and the remainder with the datasheet FLOP/s ratio [CAL]:
    alpha = clamp(1 - read / (t - F), 0, 1); t' = F + (t - F) (alpha / r_flops +
    (1 - alpha) / r_bw). At 1 token this is bandwidth scaling, at saturation compute scaling,
    the two regimes of [CAL "Decode is memory-bound ... Prefill is compute-bound"]. Checked
    against our H200 measurement (tests/sim/test_costmodel.py).
    """
    fixed = fixed_forward_ms(model)
    read = weight_read_ms(model, tp, src)
    r_flops = dst.peak_bf16_flops / src.peak_bf16_flops
    r_bw = dst.hbm_bytes_per_s / src.hbm_bytes_per_s
    out: list[tuple[int, float]] = []
    for n, ms in table_ms:
        var = max(ms - fixed, 1e-9)
        alpha = max(0.0, min(1.0, 1.0 - read / var))
        out.append((n, round(min(ms, fixed) + var * (alpha / r_flops + (1.0 - alpha) / r_bw),
                             4)))
    return tuple(out)


def interpolate(table_ms: Table, n: int) -> float:
    """Linear interpolation in a (tokens, ms) table (clamped at its ends)."""
    grid = [x for x, _ in table_ms]
    i = bisect.bisect_left(grid, n)
    if i < len(grid) and grid[i] == n:
        return table_ms[i][1]
    if i == 0:
        return table_ms[0][1]
    if i == len(grid):
        return table_ms[-1][1]
    (n0, y0), (n1, y1) = table_ms[i - 1], table_ms[i]
    return y0 + (y1 - y0) * (n - n0) / (n1 - n0)


def measured_linear_table(gemm_ms: Table, a100_nongemm_ms: Table, gpu: GpuSpec) -> Table:
    """Linear-layer table of a measured GPU: its measured GEMMs [MEAS] plus Vidur's A100
    elementwise ops (norms, rotary, activation, add) scaled by the bandwidth ratio, because
    those memory-bound ops are launch-bound when timed one by one in eager mode [MEAS]."""
    r_bw = gpu.hbm_bytes_per_s / A100_80GB.hbm_bytes_per_s
    return tuple((n, round(g + interpolate(a100_nongemm_ms, n) / r_bw, 4)) for n, g in gemm_ms)


@dataclass(frozen=True, kw_only=True)
class Profile:
    """One vLLM instance: model x GPU x tensor parallelism, plus scheduler limits.

    ``linear_ms_table`` is (batched tokens, ms per forward of all linear/norm ops) for THIS
    GPU; the other coefficients are datasheet figures or labelled estimates (module doc).
    """

    name: str
    model: str
    gpu: str
    tensor_parallel: int
    gpus_per_instance: int
    kv_capacity_tokens: int
    block_size: int = DEFAULT_BLOCK_SIZE
    max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS
    layers: int
    d_model: int
    kv_bytes_per_token: int
    lm_head_params: int
    peak_flops_per_gpu: float
    hbm_bytes_per_s_per_gpu: float
    allreduce_bus_bytes_per_s: float
    linear_ms_table: tuple[tuple[int, float], ...]
    linear_table_source: str
    attn_flops_efficiency: float = ATTN_FLOPS_EFFICIENCY
    hbm_efficiency: float = HBM_EFFICIENCY
    allreduce_latency_s: float = ALLREDUCE_LATENCY_S
    step_overhead_s: float = STEP_OVERHEAD_S

    def describe(self) -> str:
        """One line for reports."""
        return (f"{self.name}: {self.model} on {self.gpus_per_instance}x{self.gpu} "
                f"(TP{self.tensor_parallel}), KV {self.kv_capacity_tokens:,} tokens, "
                f"max_num_batched_tokens {self.max_num_batched_tokens}, "
                f"max_num_seqs {self.max_num_seqs}")


def make_profile(name: str, model: ModelSpec, gpu: GpuSpec, tp: int, table: Table,
                 table_source: str, **overrides: int | float) -> Profile:
    """Build a profile around a linear-layer table that is already for ``gpu``."""
    fields: dict[str, Any] = dict(
        name=name, model=model.name, gpu=gpu.name, tensor_parallel=tp, gpus_per_instance=tp,
        kv_capacity_tokens=kv_capacity_tokens(model, gpu, tp), layers=model.layers,
        d_model=model.d_model, kv_bytes_per_token=model.kv_bytes_per_token,
        lm_head_params=model.lm_head_params, peak_flops_per_gpu=gpu.peak_bf16_flops,
        hbm_bytes_per_s_per_gpu=gpu.hbm_bytes_per_s,
        allreduce_bus_bytes_per_s=gpu.allreduce_bus_bytes_per_s,
        linear_ms_table=table, linear_table_source=table_source,
    )
    fields.update(overrides)
    return Profile(**fields)


_VIDUR_8B = "Vidur A100 Llama-3-8B TP1 (sum of layer-op medians x 32) [VIDUR]"
_VIDUR_70B_TP4 = "Vidur A100 Llama-3-70B TP4 (sum of layer-op medians x 80) [VIDUR]"
_VIDUR_70B_TP8 = "Vidur A100 Llama-3-70B TP8 (sum of layer-op medians x 80) [VIDUR]"
_H200 = "H200 GEMMs measured in this project [MEAS] + Vidur A100 elementwise ops / bw ratio"
_H100 = ("H200 table rescaled to H100 (same GH100 compute, 3.35 vs 4.8 TB/s) by "
         "scale_linear_table")

H200_LLAMA3_8B_TABLE = measured_linear_table(LLAMA3_8B_TP1_H200_GEMM_MS,
                                             LLAMA3_8B_TP1_A100_NONGEMM_MS, H200)
H200_LLAMA3_70B_TP4_TABLE = measured_linear_table(LLAMA3_70B_TP4_H200_GEMM_MS,
                                                  LLAMA3_70B_TP4_A100_NONGEMM_MS, H200)

PROFILES: dict[str, Profile] = {p.name: p for p in (
    # The SAGA paper's setup: 64 A100-80GB as 16 instances of Llama-3-70B TP4 [SAGA.md].
    make_profile("a100-llama3-70b-tp4", LLAMA3_70B, A100_80GB, 4, LLAMA3_70B_TP4_A100_MS,
                 _VIDUR_70B_TP4),
    make_profile("a100-llama3-70b-tp8", LLAMA3_70B, A100_80GB, 8, LLAMA3_70B_TP8_A100_MS,
                 _VIDUR_70B_TP8),
    make_profile("a100-llama3-8b", LLAMA3_8B, A100_80GB, 1, LLAMA3_8B_TP1_A100_MS, _VIDUR_8B),
    make_profile("h200-llama3-8b", LLAMA3_8B, H200, 1, H200_LLAMA3_8B_TABLE, _H200),
    make_profile("h200-llama3-70b-tp4", LLAMA3_70B, H200, 4, H200_LLAMA3_70B_TP4_TABLE, _H200),
    make_profile("h100-llama3-8b", LLAMA3_8B, H100_SXM, 1,
                 scale_linear_table(H200_LLAMA3_8B_TABLE, LLAMA3_8B, 1, H200, H100_SXM), _H100),
    make_profile("h100-llama3-70b-tp4", LLAMA3_70B, H100_SXM, 4,
                 scale_linear_table(H200_LLAMA3_70B_TP4_TABLE, LLAMA3_70B, 4, H200, H100_SXM),
                 _H100),
)}

PAPER_PROFILE = "a100-llama3-70b-tp4"
PAPER_INSTANCES = 16
"""The SAGA paper's cluster: 16 instances x TP4 = 64 A100-80GB [SAGA.md]."""


def get_profile(name: str) -> Profile:
    """Profile by name; ValueError listing the valid names otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; valid: {', '.join(sorted(PROFILES))}") \
            from None


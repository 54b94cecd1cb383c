"""Print how far the cost model is from every calibration figure it is checked against.

    python -m nodeagent.sim.profiles_report

Same figures and tolerances as tests/sim/test_costmodel.py; this prints the measured errors so
a report can quote them (the tests only say pass/fail).
"""

from __future__ import annotations

from nodeagent.sim.costmodel import CostModel
from nodeagent.sim.profiles import (
    A100_80GB,
    GB,
    H200,
    LLAMA3_8B,
    LLAMA3_70B,
    PAPER_PROFILE,
    PROFILES,
    GpuSpec,
    get_profile,
    kv_capacity_tokens,
    scale_linear_table,
)
from nodeagent.sim.profiles_data import (
    LLAMA3_8B_TP1_A100_MS,
    LLAMA3_8B_TP1_A100_NONGEMM_MS,
    LLAMA3_8B_TP1_H200_GEMM_MS,
    LLAMA3_70B_TP4_A100_MS,
    LLAMA3_70B_TP4_A100_NONGEMM_MS,
    LLAMA3_70B_TP4_H200_GEMM_MS,
)

README_TABLE = (
    ("a100-llama3-8b", 1, 9.7), ("a100-llama3-8b", 128, 13.2), ("a100-llama3-8b", 512, 34.6),
    ("a100-llama3-70b-tp4", 1, 24.9), ("a100-llama3-70b-tp4", 128, 33.5),
    ("a100-llama3-70b-tp8", 1, 14.3), ("a100-llama3-70b-tp8", 128, 18.9),
)
"""calibration README, "Derived from those profiles": (profile, tokens, ms per forward)."""
README_SATURATION = (("a100-llama3-8b", 15_000.0), ("a100-llama3-70b-tp4", 6_250.0),
                     ("a100-llama3-70b-tp8", 11_700.0))
"""README "saturates near": ~15k, ~6.1-6.4k (midpoint), ~11.7k tok/s."""
LAMBDA_BENCH = (("a100-llama3-8b", 1518.0, 42.9), ("h100-llama3-8b", 3400.0, 19.8),
                ("a100-llama3-70b-tp4", 957.0, 88.3), ("h100-llama3-70b-tp4", 2243.0, 38.3))
"""README, LambdaLabs vLLM 0.5.4 FP8 benchmark: (profile, output tok/s, ms per token)."""
BENCH_CONTEXT_TOKENS = 1000


def linear_saturation(cm: CostModel) -> float:
    """Best linear-layer throughput over batch sizes 1k..32k tokens."""
    return max(n / cm.linear_seconds(n) for n in range(1024, 32769, 256))


def bench_throughput(profile: str, tok_s: float, ms: float) -> float:
    """Pure-decode throughput at the benchmark's implied concurrency (tok/s x s/token)."""
    batch = round(tok_s * ms / 1e3)
    step = CostModel(profile).step_seconds(0, 0, batch, batch * BENCH_CONTEXT_TOKENS)
    return batch / step


def report() -> list[str]:
    """Lines comparing the model with each figure (relative error in %)."""
    out = ["README derived table (linear layers, ms per forward):"]
    for name, n, ms in README_TABLE:
        got = CostModel(name).linear_seconds(n) * 1e3
        out.append(f"  {name:22s} {n:5d} tok  readme {ms:6.1f}  model {got:7.2f}  "
                   f"err {100 * (got / ms - 1):+5.1f}%")
    out.append("Linear-layer saturation (tok/s):")
    for name, tok_s in README_SATURATION:
        got = linear_saturation(CostModel(name))
        out.append(f"  {name:22s} readme ~{tok_s:7.0f}  model {got:7.0f}  "
                   f"err {100 * (got / tok_s - 1):+5.1f}%")
    out.append("KV capacity (tokens):")
    a6000 = GpuSpec("A6000", 38.7e12, 0.768e12, 48 * GB, 0.0)
    for label, got, ref in (
            ("8B on A6000 (PR 4454: 13,248 blocks)", kv_capacity_tokens(LLAMA3_8B, a6000, 1),
             13_248 * 16),
            ("8B on H100 (~0.42M)", get_profile("h100-llama3-8b").kv_capacity_tokens, 420_000),
            ("70B TP4 on 4xA100 (~0.42M)", get_profile(PAPER_PROFILE).kv_capacity_tokens,
             420_000)):
        out.append(f"  {label:40s} readme {ref:8d}  model {got:8d}  "
                   f"err {100 * (got / ref - 1):+5.1f}%")
    out.append("LambdaLabs FP8 benchmark vs modelled bf16 pure decode at the same concurrency:")
    modelled = {}
    for name, tok_s, ms in LAMBDA_BENCH:
        modelled[name] = bench_throughput(name, tok_s, ms)
        out.append(f"  {name:22s} measured {tok_s:6.0f} tok/s  model {modelled[name]:6.0f}  "
                   f"ratio {modelled[name] / tok_s:4.2f}x")
    for small, big in (("a100-llama3-8b", "h100-llama3-8b"),
                       ("a100-llama3-70b-tp4", "h100-llama3-70b-tp4")):
        meas = dict((n, t) for n, t, _ in LAMBDA_BENCH)
        m_ratio, got = meas[big] / meas[small], modelled[big] / modelled[small]
        out.append(f"  H100/A100 {big.split('-', 1)[1]:14s} measured {m_ratio:4.2f}x  "
                   f"model {got:4.2f}x  err {100 * (got / m_ratio - 1):+5.1f}%")
    out.append("Datasheet scaling A100 -> H200 of the weight GEMMs vs our H200 measurement:")
    for model, tp, all_ops, nongemm, measured in (
            (LLAMA3_8B, 1, LLAMA3_8B_TP1_A100_MS, LLAMA3_8B_TP1_A100_NONGEMM_MS,
             LLAMA3_8B_TP1_H200_GEMM_MS),
            (LLAMA3_70B, 4, LLAMA3_70B_TP4_A100_MS, LLAMA3_70B_TP4_A100_NONGEMM_MS,
             LLAMA3_70B_TP4_H200_GEMM_MS)):
        gemm = tuple((n, a - b) for (n, a), (_, b) in zip(all_ops, nongemm, strict=True))
        scaled = dict(scale_linear_table(gemm, model, tp, A100_80GB, H200))
        errs = [100 * (scaled[n] / ms - 1) for n, ms in measured]
        out.append(f"  {model.name} TP{tp}: err min {min(errs):+5.1f}% max {max(errs):+5.1f}% "
                   f"over {len(errs)} token counts 1..16384")
    out.append("Profiles:")
    out.extend("  " + p.describe() for p in PROFILES.values())
    return out


if __name__ == "__main__":
    print("\n".join(report()))

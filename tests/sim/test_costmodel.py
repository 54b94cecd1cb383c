"""The cost model reproduces the calibration figures of ../shared/calibration/README.md.

Tolerances (stated here, measured values in the final report):
- README derived table, ms per forward of the linear layers at 1/128/512 tokens: 10%.
- Linear-layer saturation throughput: inside the README band (70B TP4 6.1-6.4k tok/s) with 3%
  slack, and within 10% of "~15k" (8B TP1) and "~11.7k" (70B TP8).
- KV bytes per token: exact. KV capacity formula vs the README's three capacity figures: 8%.
- LambdaLabs vLLM benchmark (vLLM 0.5.4, FP8, 320 prompts): the model's pure-decode throughput
  at the benchmark's implied concurrency (Little: tok/s x s/token) must lie between 1x and 3x
  the measured throughput (the measurement also pays prefill stalls and queueing, which a
  single decode step does not), and the modelled H100/A100 speedup must be within 25% of the
  measured one (2.24x for 8B, 2.34x for 70B TP4).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.sim.costmodel import CostModel, dense_linear_seconds, isotonic
from nodeagent.sim.profiles import (
    A100_80GB,
    GB,
    H200,
    LLAMA3_8B,
    LLAMA3_70B,
    PAPER_INSTANCES,
    PAPER_PROFILE,
    PROFILES,
    GpuSpec,
    ModelSpec,
    Table,
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
    LLAMA3_70B_TP8_A100_MS,
)
from nodeagent.sim.profiles_vidur import NON_GEMM_OPS, linear_forward_table

CALIBRATION = Path(__file__).resolve().parents[3] / "shared" / "calibration"

# README "Derived from those profiles": (profile, tokens, ms per forward)
README_TABLE = [
    ("a100-llama3-8b", 1, 9.7), ("a100-llama3-8b", 128, 13.2), ("a100-llama3-8b", 512, 34.6),
    ("a100-llama3-70b-tp4", 1, 24.9), ("a100-llama3-70b-tp4", 128, 33.5),
    ("a100-llama3-70b-tp8", 1, 14.3), ("a100-llama3-70b-tp8", 128, 18.9),
]

# README "vLLM 0.5.4, FP8 weights, 320 prompts": profile -> (output tok/s, ms per token)
LAMBDA_BENCH = {
    "a100-llama3-8b": (1518.0, 42.9),
    "h100-llama3-8b": (3400.0, 19.8),
    "a100-llama3-70b-tp4": (957.0, 88.3),
    "h100-llama3-70b-tp4": (2243.0, 38.3),
}
BENCH_CONTEXT_TOKENS = 1000  # assumed mean KV per sequence (prompt + half the output)


@pytest.mark.parametrize(("profile", "tokens", "ms"), README_TABLE)
def test_linear_forward_matches_readme_table(profile: str, tokens: int, ms: float) -> None:
    got = CostModel(profile).linear_seconds(tokens) * 1e3
    assert got == pytest.approx(ms, rel=0.10)


def linear_saturation(profile: str) -> float:
    cm = CostModel(profile)
    return max(n / cm.linear_seconds(n) for n in range(1024, 32769, 256))


def test_linear_saturation_70b_tp4_in_readme_band() -> None:
    assert 6100 * 0.97 <= linear_saturation("a100-llama3-70b-tp4") <= 6400 * 1.03


@pytest.mark.parametrize(("profile", "tok_s"),
                         [("a100-llama3-8b", 15_000), ("a100-llama3-70b-tp8", 11_700)])
def test_linear_saturation_matches_readme(profile: str, tok_s: float) -> None:
    assert linear_saturation(profile) == pytest.approx(tok_s, rel=0.10)


@pytest.mark.skipif(not CALIBRATION.is_dir(), reason="../shared/calibration not present")
@pytest.mark.parametrize(("csv_name", "layers", "tp", "ops", "table"), [
    ("vidur_a100_Meta-Llama-3-8B_mlp.csv", 32, 1, None, LLAMA3_8B_TP1_A100_MS),
    ("vidur_a100_Meta-Llama-3-70B_mlp.csv", 80, 4, None, LLAMA3_70B_TP4_A100_MS),
    ("vidur_a100_Meta-Llama-3-70B_mlp.csv", 80, 8, None, LLAMA3_70B_TP8_A100_MS),
    ("vidur_a100_Meta-Llama-3-8B_mlp.csv", 32, 1, NON_GEMM_OPS, LLAMA3_8B_TP1_A100_NONGEMM_MS),
    ("vidur_a100_Meta-Llama-3-70B_mlp.csv", 80, 4, NON_GEMM_OPS,
     LLAMA3_70B_TP4_A100_NONGEMM_MS),
])
def test_embedded_tables_match_vidur_csv(csv_name: str, layers: int, tp: int,
                                         ops: tuple[str, ...] | None,
                                         table: tuple[tuple[int, float], ...]) -> None:
    path = CALIBRATION / csv_name
    got = (linear_forward_table(path, layers, tp, ops) if ops
           else linear_forward_table(path, layers, tp))
    assert got == table


def test_kv_bytes_per_token_from_readme() -> None:
    assert LLAMA3_8B.kv_bytes_per_token == 128 * 1024
    assert LLAMA3_70B.kv_bytes_per_token == 320 * 1024
    # "a 32k-token session holds 10 GiB" (70B)
    assert LLAMA3_70B.kv_bytes_per_token * 32 * 1024 == 10 * 2**30


def test_parameter_counts_match_model_cards() -> None:
    assert LLAMA3_8B.total_params == pytest.approx(8.03e9, rel=0.01)
    assert LLAMA3_70B.total_params == pytest.approx(70.55e9, rel=0.01)


def test_kv_capacity_matches_readme_figures() -> None:
    a6000 = GpuSpec("A6000", 38.7e12, 0.768e12, 48 * GB, 0.0)
    assert kv_capacity_tokens(LLAMA3_8B, a6000, 1) == pytest.approx(13_248 * 16, rel=0.08)
    assert get_profile("h100-llama3-8b").kv_capacity_tokens == pytest.approx(420_000, rel=0.08)
    assert get_profile(PAPER_PROFILE).kv_capacity_tokens == pytest.approx(420_000, rel=0.08)
    # "about 13 full 32k sessions per instance"
    assert get_profile(PAPER_PROFILE).kv_capacity_tokens // 32_768 in range(12, 15)


def test_paper_setup_is_64_gpus() -> None:
    p = get_profile(PAPER_PROFILE)
    assert (p.model, p.gpu, p.tensor_parallel) == ("Llama-3-70B", "A100-80GB", 4)
    assert p.gpus_per_instance * PAPER_INSTANCES == 64


def test_vllm_defaults() -> None:
    for p in PROFILES.values():
        assert (p.block_size, p.max_num_batched_tokens, p.max_num_seqs) == (16, 8192, 256)
        assert p.kv_capacity_tokens % p.block_size == 0


def modelled_bench_throughput(profile: str) -> float:
    tok_s, ms = LAMBDA_BENCH[profile]
    batch = round(tok_s * ms / 1e3)
    step = CostModel(profile).step_seconds(0, 0, batch, batch * BENCH_CONTEXT_TOKENS)
    return batch / step


@pytest.mark.parametrize("profile", sorted(LAMBDA_BENCH))
def test_decode_throughput_brackets_lambdalabs_benchmark(profile: str) -> None:
    measured = LAMBDA_BENCH[profile][0]
    assert measured <= modelled_bench_throughput(profile) <= 3.0 * measured


@pytest.mark.parametrize(("a100", "h100"), [("a100-llama3-8b", "h100-llama3-8b"),
                                            ("a100-llama3-70b-tp4", "h100-llama3-70b-tp4")])
def test_hopper_speedup_below_but_near_lambdalabs_fp8_ratio(a100: str, h100: str) -> None:
    """The benchmark ran FP8 weights: native FP8 tensor cores on the H100, weight-only FP8 on
    the A100, so its H100/A100 speedup (2.24x 8B, 2.34x 70B) is an upper bound for the bf16
    model; we require the bf16 speedup to be at most that and no more than 35% below it."""
    measured = LAMBDA_BENCH[h100][0] / LAMBDA_BENCH[a100][0]
    modelled = modelled_bench_throughput(h100) / modelled_bench_throughput(a100)
    assert 0.65 * measured <= modelled <= measured


@pytest.mark.parametrize(("model", "tp", "all_ops", "nongemm", "measured"), [
    (LLAMA3_8B, 1, LLAMA3_8B_TP1_A100_MS, LLAMA3_8B_TP1_A100_NONGEMM_MS,
     LLAMA3_8B_TP1_H200_GEMM_MS),
    (LLAMA3_70B, 4, LLAMA3_70B_TP4_A100_MS, LLAMA3_70B_TP4_A100_NONGEMM_MS,
     LLAMA3_70B_TP4_H200_GEMM_MS),
])
def test_datasheet_scaling_reproduces_h200_measurement(model: ModelSpec, tp: int,
                                                       all_ops: Table, nongemm: Table,
                                                       measured: Table) -> None:
    """scale_linear_table with datasheet ratios [README], A100 Vidur GEMMs -> H200, against
    the GEMMs we measured on an H200: within 30% at every measured token count."""
    gemm_a100 = tuple((n, a - b) for (n, a), (_, b) in zip(all_ops, nongemm, strict=True))
    scaled = dict(scale_linear_table(gemm_a100, model, tp, A100_80GB, H200))
    for n, ms in measured:
        assert scaled[n] == pytest.approx(ms, rel=0.30), n


def test_gpu_ordering_of_linear_tables() -> None:
    for size in ("8b", "70b-tp4"):
        a100, h100, h200 = (CostModel(f"{g}-llama3-{size}") for g in ("a100", "h100", "h200"))
        for n in range(1, 16385, 97):
            assert h200.linear_seconds(n) <= h100.linear_seconds(n) * 1.0001
            assert h100.linear_seconds(n) < a100.linear_seconds(n)


def test_h200_holds_more_kv_than_h100() -> None:
    assert get_profile("h200-llama3-8b").kv_capacity_tokens > 1.9 * get_profile(
        "h100-llama3-8b").kv_capacity_tokens


def test_get_profile_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="a100-llama3-70b-tp4"):
        get_profile("tpu-v5")


def test_empty_step_is_free_and_negative_rejected() -> None:
    cm = CostModel(PAPER_PROFILE)
    assert cm.step_seconds(0, 0, 0, 0) == 0.0
    with pytest.raises(ValueError):
        cm.step_seconds(-1, 0, 0, 0)


def test_decode_closed_form_equals_step_sum() -> None:
    cm = CostModel("a100-llama3-8b")
    loop = sum(cm.step_seconds(0, 0, 1, 5000 + i) for i in range(1, 301))
    assert cm.decode_seconds(300, 5000) == pytest.approx(loop, rel=1e-9)


def test_isolated_call_chunks_prefill_and_decodes() -> None:
    cm = CostModel(PAPER_PROFILE)
    expected = (cm.step_seconds(8192, 0, 0, 0) + cm.step_seconds(8192, 8192, 0, 0)
                + cm.step_seconds(3616, 16384, 0, 0) + cm.decode_seconds(99, 20_000))
    assert cm.isolated_call_seconds(20_000, 0, 100) == pytest.approx(expected, rel=1e-12)
    # a fully cached prompt still recomputes one token
    assert cm.isolated_call_seconds(20_000, 20_000, 1) == pytest.approx(
        cm.step_seconds(1, 19_999, 0, 0))


def test_long_context_prefill_is_attention_heavy() -> None:
    """Attention ~4 x layers x d_model x context FLOPs per token [README]: a chunk at 100k of
    context costs much more than the same chunk at the start."""
    cm = CostModel(PAPER_PROFILE)
    assert cm.step_seconds(8192, 100_000, 0, 0) > 2.0 * cm.step_seconds(8192, 0, 0, 0)


def test_isotonic_fit_is_monotone_and_pools_violators() -> None:
    assert isotonic([1.0, 3.0, 2.0, 4.0]) == [1.0, 2.5, 2.5, 4.0]
    dense = dense_linear_seconds(LLAMA3_8B_TP1_A100_MS)
    assert all(a <= b for a, b in zip(dense, dense[1:], strict=False))


profiles = st.sampled_from(sorted(PROFILES))
counts = st.integers(min_value=0, max_value=20_000)


@settings(max_examples=200, deadline=None)
@given(profiles, counts, counts, st.integers(0, 256), st.integers(0, 400_000),
       st.integers(0, 3), st.integers(1, 5000))
def test_step_time_monotone_in_every_argument(name: str, pf: int, pctx: int, dseq: int,
                                              dctx: int, which: int, extra: int) -> None:
    cm = CostModel(name)
    base = [pf, pctx, dseq, dctx]
    more = list(base)
    more[which] += extra
    assert cm.step_seconds(*more) >= cm.step_seconds(*base)


@settings(max_examples=100, deadline=None)
@given(profiles, st.integers(1, 200_000), st.floats(0, 1), st.integers(1, 4000))
def test_isolated_call_cheaper_with_more_cache_and_shorter_output(
        name: str, prompt: int, frac: float, out: int) -> None:
    cm = CostModel(name)
    cached = int(prompt * frac)
    t = cm.isolated_call_seconds(prompt, cached, out)
    assert cm.isolated_call_seconds(prompt, 0, out) >= t
    assert cm.isolated_call_seconds(prompt, cached, out + 1) > t


@settings(max_examples=100, deadline=None)
@given(profiles, st.integers(1, 50_000), st.integers(0, 200_000), st.integers(1, 4000))
def test_saturated_work_never_exceeds_running_alone(name: str, new: int, ctx: int,
                                                     out: int) -> None:
    """Work at the throughput-optimal point is at most the time the same work takes alone:
    prefill vs. the chunked prefill, one decoded token vs. a single-sequence decode step."""
    cm = CostModel(name)
    assert cm.prefill_work_seconds(new, ctx) <= cm.prefill_seconds(new, ctx) * (1 + 1e-9)
    assert cm.decode_work_seconds(1, ctx) <= cm.step_seconds(0, 0, 1, ctx) * (1 + 1e-9)
    assert cm.call_work_seconds(new, ctx, out + 1) > cm.call_work_seconds(new, ctx, out)


def test_table_sources_are_stated() -> None:
    assert "Vidur" in get_profile("a100-llama3-8b").linear_table_source
    assert "measured" in get_profile("h200-llama3-8b").linear_table_source
    assert "rescaled" in get_profile("h100-llama3-8b").linear_table_source

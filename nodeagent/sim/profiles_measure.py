"""Measure a Llama-3 decoder layer's operators on a real GPU, the way Vidur profiles them.

Run on a machine with PyTorch + CUDA (torch is NOT a SAGA dependency, so it is imported only
here, at run time)::

    python -m nodeagent.sim.profiles_measure --model llama3-8b --out h200.json

Per batched-token count it times, with CUDA events (median of ``--iters`` runs after warm-up),
the same per-layer operators as Vidur's CSV (input_layernorm, attn_pre_proj, attn_rope,
attn_post_proj, post_attention_layernorm, mlp_up_proj, mlp_act, mlp_down_proj, add) with bf16
weights of the model's shapes, and reports the per-forward sum x layers (like the calibration
README's derived table) and the GEMM-only sum (the four weight GEMMs: eager-mode timing of the
small elementwise ops is launch-bound, so profiles.py takes those from Vidur). It also times
causal FlashAttention prefill (achieved FLOP/s against the 4 x d_model x pairs count) and
single-token decode attention over a KV cache (achieved bytes/s), which check
``ATTN_FLOPS_EFFICIENCY`` and ``HBM_EFFICIENCY`` in profiles.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

from nodeagent.sim.profiles import LLAMA3_8B, LLAMA3_70B, ModelSpec
from nodeagent.sim.profiles_vidur import GEMM_OPS, VIDUR_LAYER_OPS, format_table

MODELS = {"llama3-8b": LLAMA3_8B, "llama3-70b": LLAMA3_70B}
TOKEN_GRID = (1, 2, 4, 8, 16, 32, 64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072,
              4096, 6144, 8192, 12288, 16384)


def _time_ms(torch: Any, fn: Any, iters: int, warmup: int = 10) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def measure_layer_ops(torch: Any, model: ModelSpec, tp: int, n: int,
                      iters: int) -> dict[str, float]:
    """Median ms of each Vidur layer operator at ``n`` batched tokens."""
    f = torch.nn.functional
    dev, dt = "cuda", torch.bfloat16
    d, hd = model.d_model, model.head_dim
    nh, nkv = model.n_heads // tp, model.n_kv_heads // tp
    ffn = model.ffn_dim // tp
    x = torch.randn(n, d, device=dev, dtype=dt)
    norm_w = torch.ones(d, device=dev, dtype=dt)
    w_qkv = torch.randn((nh + 2 * nkv) * hd, d, device=dev, dtype=dt) * 0.02
    w_o = torch.randn(d, nh * hd, device=dev, dtype=dt) * 0.02
    w_up = torch.randn(2 * ffn, d, device=dev, dtype=dt) * 0.02
    w_down = torch.randn(d, ffn, device=dev, dtype=dt) * 0.02
    q = torch.randn(n, nh, hd, device=dev, dtype=dt)
    k = torch.randn(n, nkv, hd, device=dev, dtype=dt)
    cos = torch.randn(n, 1, hd // 2, device=dev, dtype=dt)
    sin = torch.randn(n, 1, hd // 2, device=dev, dtype=dt)
    attn_out = torch.randn(n, nh * hd, device=dev, dtype=dt)
    up = torch.randn(n, 2 * ffn, device=dev, dtype=dt)
    act = torch.randn(n, ffn, device=dev, dtype=dt)

    def rope() -> None:
        for t in (q, k):
            a, b = t[..., : hd // 2], t[..., hd // 2:]
            torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)

    ops = {
        "input_layernorm": lambda: f.rms_norm(x, (d,), norm_w, 1e-5),
        "attn_pre_proj": lambda: f.linear(x, w_qkv),
        "attn_rope": rope,
        "attn_post_proj": lambda: f.linear(attn_out, w_o),
        "post_attention_layernorm": lambda: f.rms_norm(x, (d,), norm_w, 1e-5),
        "mlp_up_proj": lambda: f.linear(x, w_up),
        "mlp_act": lambda: f.silu(up[:, :ffn]) * up[:, ffn:],
        "mlp_down_proj": lambda: f.linear(act, w_down),
        "add": lambda: x + x,
    }
    assert tuple(ops) == VIDUR_LAYER_OPS
    return {name: _time_ms(torch, fn, iters) for name, fn in ops.items()}


def measure_prefill_attention(torch: Any, model: ModelSpec, tp: int, n: int,
                              iters: int) -> dict[str, float]:
    """Causal attention of n fresh tokens (one layer): ms and achieved TFLOP/s."""
    f = torch.nn.functional
    nh, nkv, hd = model.n_heads // tp, model.n_kv_heads // tp, model.head_dim
    q = torch.randn(1, nh, n, hd, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, nkv, n, hd, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, nkv, n, hd, device="cuda", dtype=torch.bfloat16)
    ms = _time_ms(torch, lambda: f.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                enable_gqa=True), iters)
    pairs = n * (n + 1) / 2
    flops = 4.0 * model.d_model / tp * pairs
    return {"tokens": n, "ms": ms, "tflops": flops / (ms * 1e-3) / 1e12}


def measure_decode_attention(torch: Any, model: ModelSpec, tp: int, batch: int, ctx: int,
                             iters: int) -> dict[str, float]:
    """One query token per sequence over ``ctx`` cached tokens (one layer): achieved GB/s."""
    f = torch.nn.functional
    nh, nkv, hd = model.n_heads // tp, model.n_kv_heads // tp, model.head_dim
    q = torch.randn(batch, nh, 1, hd, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(batch, nkv, ctx, hd, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(batch, nkv, ctx, hd, device="cuda", dtype=torch.bfloat16)
    ms = _time_ms(torch, lambda: f.scaled_dot_product_attention(q, k, v, enable_gqa=True),
                  iters)
    kv_bytes = 2 * batch * nkv * ctx * hd * 2
    return {"batch": batch, "ctx": ctx, "ms": ms, "gb_per_s": kv_bytes / (ms * 1e-3) / 1e9}


def matmul_tflops(torch: Any, size: int, iters: int) -> float:
    """bf16 size^3 matmul throughput (the README quotes 770-800 TFLOP/s on an H200)."""
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    ms = _time_ms(torch, lambda: a @ a, iters)
    return 2.0 * size**3 / (ms * 1e-3) / 1e12


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="llama3-8b")
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("profiles_measure: PyTorch is required", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("profiles_measure: no CUDA device", file=sys.stderr)
        return 2
    model = MODELS[args.model]
    torch.backends.cuda.matmul.allow_tf32 = False
    table, gemm_table = [], []
    ops_detail = {}
    for n in TOKEN_GRID:
        ops = measure_layer_ops(torch, model, args.tp, n, args.iters)
        ops_detail[n] = ops
        table.append((n, round(sum(ops.values()) * model.layers, 4)))
        gemm_table.append((n, round(sum(ops[op] for op in GEMM_OPS) * model.layers, 4)))
    result = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "model": model.name,
        "tp": args.tp,
        "linear_forward_ms": table,
        "gemm_forward_ms": gemm_table,
        "layer_ops_ms": ops_detail,
        "matmul_8192_tflops": matmul_tflops(torch, 8192, args.iters),
        "prefill_attention": [measure_prefill_attention(torch, model, args.tp, n, args.iters)
                              for n in (1024, 4096, 8192, 16384, 32768)],
        "decode_attention": [measure_decode_attention(torch, model, args.tp, b, c, args.iters)
                             for b, c in ((1, 8192), (16, 8192), (64, 4096), (64, 32768),
                                          (256, 2048), (8, 131072))],
    }
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "layer_ops_ms"}))
    print("gemm_forward_ms table for profiles_data.py:")
    print(format_table(tuple(gemm_table)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

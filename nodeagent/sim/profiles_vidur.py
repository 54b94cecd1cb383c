"""Build the per-forward linear-layer time tables that the cost model ships with.

Source: Vidur A100 operator profiles, github.com/microsoft/vidur @ 7d47513 (MIT licence), copied
to ../shared/calibration/vidur_a100_Meta-Llama-3-{8B,70B}_mlp.csv. Each row holds, for one
(num_tokens, num_tensor_parallel_workers), the median time in ms of ONE decoder layer's linear
and norm operators. The per-forward time is the sum of those medians times the layer count
(calibration README, "Derived from those profiles"). The result is embedded in
``profiles_data.py`` so the product never reads ../shared at run time; run
``python -m nodeagent.sim.profiles_vidur CSV LAYERS TP [all|gemm|nongemm]`` to regenerate a
table.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

VIDUR_LAYER_OPS: tuple[str, ...] = (
    "input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj",
    "post_attention_layernorm", "mlp_up_proj", "mlp_act", "mlp_down_proj", "add",
)
"""Per-layer operators summed (calibration README, "Files"); the embedding op is excluded."""

GEMM_OPS: tuple[str, ...] = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
"""The four weight GEMMs of a layer (qkv, o, gate+up, down)."""
NON_GEMM_OPS: tuple[str, ...] = tuple(op for op in VIDUR_LAYER_OPS if op not in GEMM_OPS)
"""Norms, rotary embedding, activation, residual add: elementwise, memory-bound."""
OP_SETS = {"all": VIDUR_LAYER_OPS, "gemm": GEMM_OPS, "nongemm": NON_GEMM_OPS}


def linear_forward_table(
    csv_path: str | Path, layers: int, tp: int, ops: tuple[str, ...] = VIDUR_LAYER_OPS
) -> tuple[tuple[int, float], ...]:
    """(num_tokens, ms per forward) pairs: sum of the layer-op medians x ``layers`` at ``tp``.

    The CSV holds two profiling rows per (num_tokens, tp); their sums are averaged.
    """
    rows: dict[int, list[float]] = {}
    with open(csv_path, newline="") as fh:
        for row in csv.DictReader(fh):
            if int(row["num_tensor_parallel_workers"]) != tp:
                continue
            per_layer = sum(float(row[f"time_stats.{op}.median"]) for op in ops)
            rows.setdefault(int(row["num_tokens"]), []).append(per_layer * layers)
    if not rows:
        raise ValueError(f"{csv_path}: no rows for num_tensor_parallel_workers={tp}")
    return tuple((n, round(sum(rows[n]) / len(rows[n]), 4)) for n in sorted(rows))


def format_table(table: tuple[tuple[int, float], ...]) -> str:
    """Python source of a table, five pairs per line."""
    lines = ["("]
    for i in range(0, len(table), 5):
        lines.append("    " + " ".join(f"({n}, {ms})," for n, ms in table[i:i + 5]))
    lines.append(")")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4) or (len(argv) == 4 and argv[3] not in OP_SETS):
        print("usage: python -m nodeagent.sim.profiles_vidur CSV LAYERS TP [all|gemm|nongemm]",
              file=sys.stderr)
        return 2
    ops = OP_SETS[argv[3]] if len(argv) == 4 else VIDUR_LAYER_OPS
    print(format_table(linear_forward_table(argv[0], int(argv[1]), int(argv[2]), ops)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

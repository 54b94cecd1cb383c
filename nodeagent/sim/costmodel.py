"""Step-time cost model of one vLLM instance, calibrated from published figures.

One engine step runs every layer once over the batch: the linear/norm GEMMs over all batched
tokens, then the attention kernels (FlashAttention for prefill chunks, paged attention for
decodes), then the tensor-parallel all-reduces. These kernels run one after another on the
GPU stream, so their times ADD; a max() (roofline) applies inside one kernel, and the measured
linear-layer table already contains that max for the GEMMs (memory-bound at 1 token,
compute-bound from ~1k tokens). So, with n = prefill_tokens + decode_seqs batched tokens:

  step = L(n)            linear/norm ops: Vidur (A100) / measured (H200) / rescaled (H100) table
       + 2 x layers x (a + 2(tp-1)/tp x n x d_model x 2 B / busbw)     TP all-reduces (tp > 1)
       + max(lm_bytes / bw, 2 x lm_params x n_logits / peak) / tp       LM head (not in Vidur)
       + 4 x layers x d_model x pairs / tp / (peak x eff_attn)          prefill attention
       + decode_context_tokens x kv_bytes_per_token / tp / (bw x eff_hbm)   decode KV read
       + overhead                                                      host work per step

where pairs = sum over prefill chunks of c x (p + c/2) token-context pairs (chunk of c new
tokens after p earlier ones; each token attends to all earlier tokens, QK^T + AV = 4 x d_model
FLOPs per pair per layer [CAL "attention ~4 x layers x d_model x context FLOPs per token"]),
and n_logits = decode_seqs + prefill chunks. Prefill attention's KV reads are inside its
efficiency (FA2: 50-73% of peak on A100; we measured 41-61% on an H200 at 4k-32k tokens); decode
attention's FLOPs are 2-3% of its KV-read time (4 FLOP per KV byte) and left out.
Figures and sources: ``nodeagent.sim.profiles``; errors: ``python -m
nodeagent.sim.profiles_report``.

Speed: the engine calls ``step_seconds`` millions of times, so the linear table is expanded once
per profile into a dense per-token list (linear interpolation between the grid points, made
non-decreasing by an isotonic fit because single medians are noisy) and every other term is a
precomputed coefficient: one list lookup and a handful of float operations per call (~0.3 us).
"""

from __future__ import annotations

from functools import lru_cache

from nodeagent.sim.profiles import PROFILES, Profile, get_profile

__all__ = ["CostModel", "Profile", "PROFILES", "get_profile", "dense_linear_seconds"]


def isotonic(values: list[float]) -> list[float]:
    """Least-squares non-decreasing fit (pool-adjacent-violators). Single Vidur medians jitter
    by a few % between neighbouring grid points; pooling keeps the fit unbiased where a
    running max would only ever round up."""
    blocks: list[list[float]] = []  # [mean, count]
    for v in values:
        blocks.append([v, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, c2 = blocks.pop()
            m1, c1 = blocks[-1]
            blocks[-1] = [(m1 * c1 + m2 * c2) / (c1 + c2), c1 + c2]
    out: list[float] = []
    for mean, count in blocks:
        out.extend([mean] * int(count))
    return out


@lru_cache(maxsize=32)
def dense_linear_seconds(table_ms: tuple[tuple[int, float], ...]) -> tuple[float, ...]:
    """Seconds of linear work for every batched-token count 0..max grid point.

    The grid values (the CSV has 451 points, 1..32768) are first made non-decreasing by an
    isotonic fit, then interpolated linearly for every token count in between.
    """
    if not table_ms or table_ms[0][0] < 1:
        raise ValueError("linear table must start at >= 1 token")
    grid = [n for n, _ in table_ms]
    fitted = isotonic([ms * 1e-3 for _, ms in table_ms])
    out = [0.0] * (grid[-1] + 1)
    for n in range(1, grid[0] + 1):
        out[n] = fitted[0]
    for i in range(len(grid) - 1):
        n0, n1, y0, y1 = grid[i], grid[i + 1], fitted[i], fitted[i + 1]
        span = n1 - n0
        for n in range(n0, n1 + 1):
            out[n] = y0 + (y1 - y0) * (n - n0) / span
    return tuple(out)


class CostModel:
    """Time of engine steps and of isolated calls for one ``Profile`` (see module docstring)."""

    def __init__(self, profile: Profile | str) -> None:
        p = get_profile(profile) if isinstance(profile, str) else profile
        self.profile = p
        tp = p.tensor_parallel
        self._lin = dense_linear_seconds(p.linear_ms_table)
        self._lin_max_n = len(self._lin) - 1
        # Beyond the table (> 32768 tokens; vLLM never batches that many by default): extend
        # with the average per-token slope of the last 10% of the table.
        tail = max(1, self._lin_max_n // 10)
        self._lin_slope = (self._lin[-1] - self._lin[-1 - tail]) / tail
        if tp > 1:
            self._ar_fixed = 2 * p.layers * p.allreduce_latency_s
            self._ar_per_token = (2 * p.layers * 2 * (tp - 1) / tp * p.d_model * 2
                                  / p.allreduce_bus_bytes_per_s)
        else:
            self._ar_fixed = 0.0
            self._ar_per_token = 0.0
        bw = p.hbm_bytes_per_s_per_gpu
        self._lm_mem = p.lm_head_params * 2 / tp / bw
        self._lm_per_logit = 2.0 * p.lm_head_params / tp / p.peak_flops_per_gpu
        self._attn_pair = (4.0 * p.layers * p.d_model / tp
                           / (p.peak_flops_per_gpu * p.attn_flops_efficiency))
        self._kv_read = p.kv_bytes_per_token / tp / (bw * p.hbm_efficiency)
        self._overhead = p.step_overhead_s
        # cheapest non-attention seconds per prefill token over chunk sizes up to the budget
        self._prefill_token_s = min(
            (self.step_seconds(n, 0, 0, 0) - self._attn_pair * n * 0.5 * n) / n
            for n in range(1, p.max_num_batched_tokens + 1))

    # ---------------------------------------------------------------- one step
    def linear_seconds(self, batched_tokens: int) -> float:
        """Linear/norm ops of one forward over ``batched_tokens`` tokens (interpolated Vidur)."""
        if batched_tokens <= self._lin_max_n:
            return self._lin[batched_tokens]
        return self._lin[-1] + (batched_tokens - self._lin_max_n) * self._lin_slope

    def step_seconds(self, prefill_tokens: int, prefill_context_tokens: int,
                     decode_seqs: int, decode_context_tokens: int,
                     prefill_chunks: int = 1) -> float:
        """Time of one engine step.

        ``prefill_tokens`` new prompt tokens are computed in ``prefill_chunks`` chunks whose
        earlier tokens sum to ``prefill_context_tokens`` (sum over chunks of tokens already in
        that sequence); ``decode_seqs`` sequences decode one token each while holding
        ``decode_context_tokens`` tokens of KV in total. With several chunks the attention
        pairs assume equal chunks; exact for the usual single chunk. 0 when the step is empty.
        """
        if (prefill_tokens | prefill_context_tokens | decode_seqs | decode_context_tokens) < 0:
            raise ValueError("step_seconds arguments must be >= 0")
        n = prefill_tokens + decode_seqs
        if n == 0:
            return 0.0
        t = self._lin[n] if n <= self._lin_max_n else self.linear_seconds(n)
        t += self._ar_fixed + self._ar_per_token * n + self._overhead
        logits = decode_seqs
        if prefill_tokens:
            chunks = prefill_chunks if prefill_chunks > 0 else 1
            logits += chunks
            t += self._attn_pair * prefill_tokens * (
                prefill_context_tokens + 0.5 * prefill_tokens) / chunks
        lm = self._lm_per_logit * logits
        t += lm if lm > self._lm_mem else self._lm_mem
        return t + self._kv_read * decode_context_tokens

    # ---------------------------------------------------------------- one call alone
    def prefill_seconds(self, new_tokens: int, context_tokens: int = 0) -> float:
        """Chunked prefill of ``new_tokens`` after ``context_tokens`` cached ones, alone on the
        instance: chunks of max_num_batched_tokens, each one step."""
        chunk = self.profile.max_num_batched_tokens
        t = 0.0
        done = 0
        while done < new_tokens:
            c = min(chunk, new_tokens - done)
            t += self.step_seconds(c, context_tokens + done, 0, 0)
            done += c
        return t

    def decode_seconds(self, steps: int, start_context_tokens: int) -> float:
        """``steps`` single-sequence decode steps, the first holding start_context+1 tokens of
        KV (closed form: the per-step cost is affine in the context)."""
        if steps <= 0:
            return 0.0
        base = self.step_seconds(0, 0, 1, 0)
        ctx_sum = steps * start_context_tokens + steps * (steps + 1) // 2
        return steps * base + self._kv_read * ctx_sum

    def isolated_call_seconds(self, prompt_tokens: int, cached_tokens: int,
                              output_tokens: int) -> float:
        """Latency of a call alone on an idle instance: chunked prefill of the uncached part
        (at least 1 token: vLLM always recomputes the last prompt token to get its logits),
        whose last step samples the first output token, then output_tokens-1 decode steps."""
        if prompt_tokens < 1 or output_tokens < 1 or cached_tokens < 0:
            raise ValueError("isolated_call_seconds needs prompt_tokens >= 1, "
                             "output_tokens >= 1, cached_tokens >= 0")
        cached = min(cached_tokens, prompt_tokens - 1)
        t = self.prefill_seconds(prompt_tokens - cached, cached)
        return t + self.decode_seconds(output_tokens - 1, prompt_tokens)

    # ---------------------------------------------------------------- saturated capacity
    def saturated_decode_batch(self, context_tokens: int) -> int:
        """Largest decode batch of sequences holding ``context_tokens`` each: bounded by
        max_num_seqs and by the KV pool (kv_capacity_tokens / context)."""
        p = self.profile
        fit = p.kv_capacity_tokens // max(1, context_tokens)
        return max(1, min(p.max_num_seqs, fit, p.max_num_batched_tokens))

    def prefill_work_seconds(self, new_tokens: int, context_tokens: int = 0) -> float:
        """Instance-seconds that ``new_tokens`` of prefill after ``context_tokens`` cost when
        the instance runs full max_num_batched_tokens steps (the throughput-optimal way):
        the cheapest per-token share of a step of up to max_num_batched_tokens prefill tokens
        (non-attention part) plus the exact attention pairs of this prefill."""
        if new_tokens <= 0:
            return 0.0
        return (new_tokens * self._prefill_token_s
                + self._attn_pair * new_tokens * (context_tokens + 0.5 * new_tokens))

    def decode_work_seconds(self, output_tokens: int, context_tokens: int) -> float:
        """Instance-seconds that decoding ``output_tokens`` after a ``context_tokens`` prompt
        cost at the largest decode batch such sequences allow (``saturated_decode_batch`` at
        the mid-output context): each token's share of a full decode step."""
        if output_tokens <= 0:
            return 0.0
        mid = context_tokens + output_tokens // 2
        b = self.saturated_decode_batch(mid)
        return output_tokens * self.step_seconds(0, 0, b, b * mid) / b

    def call_work_seconds(self, new_tokens: int, context_tokens: int,
                          output_tokens: int) -> float:
        """Saturated instance-seconds of one call that prefills ``new_tokens`` after
        ``context_tokens`` already-cached ones and decodes ``output_tokens``."""
        return (self.prefill_work_seconds(new_tokens, context_tokens)
                + self.decode_work_seconds(output_tokens, context_tokens + new_tokens))

    @staticmethod
    def capacity_instance_seconds_per_s(n_instances: int) -> float:
        """Compute capacity of a cluster in the unit of ``*_work_seconds``: each instance
        supplies one second of saturated work per second."""
        if n_instances < 1:
            raise ValueError("n_instances must be >= 1")
        return float(n_instances)

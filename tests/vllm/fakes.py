"""The parts of the test harness that do not need vLLM: the tiny model config and a clock."""

from __future__ import annotations

import json
from pathlib import Path

EOS = 2

VLLM_MISSING_REASON = (
    "vLLM is not installed in this environment; tests/vllm run in the vLLM environments "
    "(make test-vllm; scripts/setup_vllm_env.sh cpu|gpu builds them and prints their path)"
)

TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "vocab_size": 1024,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "bos_token_id": 1,
    "eos_token_id": EOS,
    "torch_dtype": "float16",
}


def write_tiny_llama(folder: Path) -> Path:
    (folder / "config.json").write_text(json.dumps(TINY_LLAMA))
    return folder


class FakeClock:
    """A manual clock for ``SagaScheduler.saga_clock``."""

    def __init__(self, start_s: float) -> None:
        self.now = start_s

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

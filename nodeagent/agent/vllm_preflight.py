"""Checks ``saga node --engine vllm`` makes before it starts vLLM, each failing in one line.

An engine start takes a minute on a CPU host (more on a GPU), and a failure inside vLLM's
engine-core process ends in tracebacks from other processes. What can be known beforehand is
checked here, without importing vLLM (the model's existence is checked before vLLM is even
imported): the model is a folder with a ``config.json``, or a Hugging Face id that is cached
when the hub is offline; on a CPU host, the attention head size is one vLLM's CPU kernels take
(a model with another one starts, then dies at its first step) and the KV cache can hold one
request of ``max_model_len`` tokens. Everything else is caught when the engine fails to start
(:mod:`nodeagent.agent.engine_startup`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

GIB = 1 << 30
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_TRUE = ("1", "true", "yes", "on")
_DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2,
                "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}


class EngineStartError(ValueError):
    """The engine cannot start: bad model, a model the kernels refuse, too little KV memory.
    The message is one line naming the problem (``saga node`` prints it and exits 2)."""


def read_config(model: str, path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EngineStartError(f"--model {model}: cannot read {path.name}: {exc}") from exc
    if not isinstance(config, dict):
        raise EngineStartError(f"--model {model}: {path.name} is not a JSON object")
    return config


def is_hub_id(model: str) -> bool:
    """Whether ``model`` names a Hugging Face model (``name`` or ``org/name``) rather than a
    folder (an existing path, or one that starts like a path)."""
    return (not Path(model).expanduser().exists() and bool(_HUB_ID.match(model))
            and not model.startswith((".", "~")))


def model_config(model: str) -> dict[str, Any] | None:
    """The model's ``config.json``: from its folder, or from the hub cache when the hub is
    offline (None for a hub id vLLM will download). Raises :class:`EngineStartError` when the
    model is not there."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise EngineStartError(f"--model {model}: not a folder (a model is a folder with a "
                                   "config.json, or a Hugging Face model id)")
        config_file = path / "config.json"
        if not config_file.is_file():
            raise EngineStartError(f"--model {model}: the folder has no config.json (not a "
                                   "Hugging Face model folder; saga model tiny DIR writes one)")
        return read_config(model, config_file)
    if not is_hub_id(model):
        raise EngineStartError(f"--model {model}: no such folder")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in _TRUE:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    cached = try_to_load_from_cache(model, "config.json")
    if not isinstance(cached, str):
        raise EngineStartError(
            f"--model {model}: no such folder, and no cached Hugging Face model of that name "
            "(HF_HUB_OFFLINE is set, so nothing is downloaded)")
    return read_config(model, Path(cached))


def _text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    text = config.get("text_config")
    return text if isinstance(text, Mapping) else config


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def head_size(config: Mapping[str, Any]) -> int | None:
    """The attention head size a Hugging Face config declares (None when it does not say)."""
    config = _text_config(config)
    explicit = _int(config.get("head_dim"))
    if explicit is not None:
        return explicit
    hidden, heads = _int(config.get("hidden_size")), _int(config.get("num_attention_heads"))
    if hidden is not None and heads:
        return hidden // heads
    return None


def check_cpu_head_size(model: str, config: Mapping[str, Any], supported: Sequence[int]) -> None:
    head = head_size(config)
    if head is not None and head not in supported:
        raise EngineStartError(
            f"--model {model}: attention head size {head} is not supported by vLLM's CPU "
            f"attention kernels (supported: {', '.join(map(str, supported))})")


def kv_bytes_per_token(config: Mapping[str, Any], kv_cache_dtype: str = "auto") -> int | None:
    """KV cache bytes one token takes in a plain full-attention decoder (every layer keeps K
    and V for every KV head); None for layouts this formula does not describe (sliding
    windows, MLA, hybrid or multimodal models, unknown dtypes)."""
    if "text_config" in config or config.get("sliding_window") or "kv_lora_rank" in config:
        return None
    if "layer_types" in config or "attention_type" in config:
        return None
    layers = _int(config.get("num_hidden_layers"))
    heads = _int(config.get("num_key_value_heads")) or _int(config.get("num_attention_heads"))
    head = head_size(config)
    dtype = kv_cache_dtype if kv_cache_dtype != "auto" else str(
        config.get("torch_dtype") or config.get("dtype") or "")
    size = _DTYPE_BYTES.get(dtype.removeprefix("torch."))
    if not (layers and heads and head and size):
        return None
    return 2 * layers * heads * head * size


def cpu_kv_cache_bytes(engine_args: Mapping[str, Any]) -> int | None:
    """The KV cache a CPU engine gets: ``VLLM_CPU_KVCACHE_SPACE`` GiB (vLLM reads it over any
    engine argument), else ``kv_cache_memory_bytes``; None when vLLM sizes it itself."""
    space = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "").strip()
    if space:
        try:
            value = int(space)
        except ValueError as exc:
            raise EngineStartError(f"VLLM_CPU_KVCACHE_SPACE={space!r} is not a whole number of "
                                   "GiB") from exc
        if value < 0:
            raise EngineStartError(f"VLLM_CPU_KVCACHE_SPACE={space!r} must be >= 0 (GiB)")
        return value * GIB if value else None
    explicit = _int(engine_args.get("kv_cache_memory_bytes"))
    return explicit if explicit else None


def max_model_len(config: Mapping[str, Any], requested: int | None) -> int | None:
    if requested is not None:
        return requested
    if config.get("rope_scaling"):
        return None
    return _int(_text_config(config).get("max_position_embeddings"))


def check_cpu_kv_memory(model: str, config: Mapping[str, Any], requested_len: int | None,
                        engine_args: Mapping[str, Any]) -> None:
    """Refuse a context the CPU KV cache cannot hold once (vLLM checks the same after loading
    the model, a minute later)."""
    available = cpu_kv_cache_bytes(engine_args)
    per_token = kv_bytes_per_token(config, str(engine_args.get("kv_cache_dtype", "auto")))
    length = max_model_len(config, requested_len)
    if available is None or per_token is None or length is None:
        return
    needed = per_token * length
    if needed > available:
        fits = available // per_token
        raise EngineStartError(
            f"--model {model}: too little KV cache memory: max_model_len {length} needs "
            f"{needed / GIB:.2f} GiB, the CPU KV cache has {available / GIB:.2f} GiB (holds "
            f"{fits} tokens); raise VLLM_CPU_KVCACHE_SPACE (GiB) or lower --max-model-len")

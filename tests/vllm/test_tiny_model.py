"""``saga model tiny``: the folder it writes is one vLLM and the node agent take as they are
(config, tokenizer, chat template with tools, Hermes tool calls), the same bytes every time;
and the node agent's start-up options for it on a CPU host."""

from __future__ import annotations

import pytest

from tests.vllm.fakes import VLLM_MISSING_REASON

pytest.importorskip("vllm", reason=VLLM_MISSING_REASON)

import argparse
import json
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer
from vllm.config import ModelConfig, VllmConfig
from vllm.renderers.registry import renderer_from_config

from nodeagent.agent import tiny_model
from nodeagent.agent.engine import GenerationRequest, Message
from nodeagent.agent.tiny_model import MARKER, SPECIAL_TOKENS, is_tiny_model, write_tiny_model
from nodeagent.agent.vllm_backend import (
    SYNC_SCHEDULER_CLS,
    EngineStartError,
    ToolCallExtractor,
    VllmOptions,
    build_engine_args,
    platform_options,
    preflight,
    render_prompt,
)
from nodeagent.vllm_hooks import compat


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tokenizer(tiny: Path) -> Any:
    return AutoTokenizer.from_pretrained(str(tiny))


def saga_model(*argv: str) -> int:
    """``saga model ...`` (the module registers the subcommand; the rest of the CLI needs the
    control plane's dependencies, which the gpu environment does not have)."""
    parser = argparse.ArgumentParser(prog="saga")
    tiny_model.register(parser.add_subparsers())
    return tiny_model.run(parser.parse_args(argv))


def test_the_same_folder_every_time(tiny: Path, tmp_path: Path) -> None:
    assert saga_model("model", "tiny", str(tmp_path / "again")) == 0
    names = sorted(p.name for p in tiny.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "again").iterdir())
    for name in names:
        assert (tiny / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    assert is_tiny_model(str(tiny)) and (tiny / MARKER).is_file()


def test_the_config_is_a_tiny_llama_the_cpu_kernels_take(tiny: Path, tokenizer: Any) -> None:
    config = json.loads((tiny / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"],
            config["num_key_value_heads"], config["head_dim"]) == (2, 128, 2, 1, 64)
    assert config["vocab_size"] == len(tokenizer) and 600 <= len(tokenizer) <= 700
    assert config["head_dim"] in compat.cpu_attention_head_sizes()
    assert [tokenizer.convert_ids_to_tokens(i) for i in range(len(SPECIAL_TOKENS))] == list(
        SPECIAL_TOKENS)
    model = ModelConfig(model=str(tiny), max_model_len=1024)
    assert model.get_head_size() == 64 and model.get_vocab_size() == len(tokenizer)


def test_the_chat_template_renders_tools_calls_and_results(tokenizer: Any) -> None:
    messages = (Message("system", "be brief"), Message("user", "list the files"),
                Message("assistant", "", tool_calls=(("bash", '{"command": "ls"}'),)),
                Message("tool", "a.py b.py", tool_call_id="call_0"))
    text = render_prompt(tokenizer, GenerationRequest(
        request_id="r", workflow_id="w", tenant="t", template="x", messages=messages,
        max_output_tokens=4, tools=("bash", "read_file")))
    assert text.startswith("<s><|im_start|>system\nbe brief\n\nYou may call these tools.")
    assert '"name": "bash"' in text and '"name": "read_file"' in text
    assert '<tool_call>\n{"name": "bash", "arguments": {"command": "ls"}}\n</tool_call>' in text
    assert "<tool_response>\na.py b.py\n</tool_response>" in text
    assert text.endswith("<|im_start|>assistant\n")
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == text  # byte-level: lossless
    assert tokenizer("hi").input_ids[0] == tokenizer.bos_token_id  # raw prompts get BOS


def test_vllms_renderer_and_the_hermes_parser_take_it(tiny: Path) -> None:
    renderer = renderer_from_config(VllmConfig(
        model_config=ModelConfig(model=str(tiny), max_model_len=1024)))
    vllm_tokenizer = renderer.get_tokenizer()
    extractor = ToolCallExtractor("hermes", vllm_tokenizer, ("bash",))
    assert extractor.skip_special_tokens is False  # the call markup is special tokens here
    content, calls = extractor.extract(
        'Let me look.<tool_call>\n{"name": "bash", "arguments": {"command": "ls"}}\n</tool_call>')
    assert content == "Let me look."
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("bash", {"command": "ls"})]


def test_the_node_agent_starts_it_eager_synchronous_and_without_weights(tiny: Path,
                                                                        monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    options = platform_options(str(tiny), VllmOptions(max_model_len=1024))
    assert options.engine_args == {"load_format": "dummy", "enforce_eager": True,
                                   "kv_cache_memory_bytes": 1 << 30}
    assert options.async_scheduling is False  # vLLM's CPU platform turns it off
    args = build_engine_args(str(tiny), options)
    assert (args.scheduler_cls, args.load_format, args.enforce_eager) == (
        SYNC_SCHEDULER_CLS, "dummy", True)
    preflight(str(tiny), options)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")
    assert "kv_cache_memory_bytes" not in platform_options(str(tiny), VllmOptions()).engine_args
    explicit = VllmOptions(engine_args={"load_format": "auto", "enforce_eager": False})
    assert platform_options(str(tiny), explicit).engine_args == {"load_format": "auto",
                                                                 "enforce_eager": False}


def test_models_the_cpu_engine_cannot_serve_are_refused_before_it_starts(
        tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    small_heads = write_tiny_model(tmp_path / "h16", head_dim=16)
    with pytest.raises(EngineStartError, match="attention head size 16 is not supported"):
        preflight(str(small_heads), VllmOptions())
    long = write_tiny_model(tmp_path / "long", max_positions=8_388_608)
    with pytest.raises(EngineStartError, match="too little KV cache memory"):
        preflight(str(long), VllmOptions(max_model_len=8_388_608))
    with pytest.raises(EngineStartError, match="no such folder"):
        preflight(str(tmp_path / "nothing"), VllmOptions())

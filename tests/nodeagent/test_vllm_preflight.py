"""Bad input to ``saga node --engine vllm`` fails in one line, before or during the engine start,
without vLLM installed: the model checks, the KV and head-size arithmetic, the capture of
start-up output from other processes, and ``saga model tiny`` without ``tokenizers``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from controlplane.cli import main as saga_main
from nodeagent.agent.engine_startup import CapturedStartup, one_line, root_cause, strip_prefix
from nodeagent.agent.vllm_preflight import (
    GIB,
    EngineStartError,
    check_cpu_head_size,
    check_cpu_kv_memory,
    head_size,
    kv_bytes_per_token,
    model_config,
)

TINY = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 128,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 64,
        "num_hidden_layers": 2, "max_position_embeddings": 4096, "torch_dtype": "bfloat16"}


def _model(tmp_path: Path, **overrides: object) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**TINY, **overrides}))
    return folder


def test_a_model_that_is_not_there_is_named(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EngineStartError, match="no such folder"):
        model_config(str(tmp_path / "missing"))
    with pytest.raises(EngineStartError, match="no such folder"):
        model_config("./nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(EngineStartError, match="not a folder"):
        model_config(str(tmp_path / "file"))
    with pytest.raises(EngineStartError, match="has no config.json"):
        model_config(str(tmp_path))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(EngineStartError, match="cannot read config.json"):
        model_config(str(bad))
    assert model_config(str(_model(tmp_path)))["head_dim"] == 64


def test_a_hub_id_is_left_to_vllm_unless_the_hub_is_offline(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert model_config("meta-llama/Llama-3.1-8B-Instruct") is None


def test_head_size_and_the_cpu_kernels(tmp_path: Path) -> None:
    assert head_size(TINY) == 64
    assert head_size({"hidden_size": 4096, "num_attention_heads": 32}) == 128
    assert head_size({"text_config": {"head_dim": 80}}) == 80
    assert head_size({}) is None
    check_cpu_head_size("m", TINY, (32, 64, 128))
    with pytest.raises(EngineStartError) as info:
        check_cpu_head_size("m", {**TINY, "head_dim": 16}, (32, 64, 128))
    message = str(info.value)
    assert "head size 16" in message and "32, 64, 128" in message and "\n" not in message


def test_kv_memory_for_one_full_context(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # 2 layers x (K, V) x 1 KV head x 64 x 2 bytes: what vLLM's CPU engine reports (1 GiB holds
    # 2,097,152 tokens of the tiny model).
    assert kv_bytes_per_token(TINY) == 512
    assert kv_bytes_per_token({**TINY, "torch_dtype": "float32"}) == 1024
    assert kv_bytes_per_token({**TINY, "sliding_window": 4096}) is None
    assert kv_bytes_per_token({**TINY, "torch_dtype": "int4"}) is None
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    check_cpu_kv_memory("m", TINY, 2_097_152, {})
    with pytest.raises(EngineStartError) as info:
        check_cpu_kv_memory("m", TINY, 8_388_608, {})
    message = str(info.value)
    assert "too little KV cache memory" in message and "4.00 GiB" in message
    assert "holds 2097152 tokens" in message and "VLLM_CPU_KVCACHE_SPACE" in message
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE")
    with pytest.raises(EngineStartError):
        check_cpu_kv_memory("m", TINY, 4096, {"kv_cache_memory_bytes": 1 << 20})
    check_cpu_kv_memory("m", TINY, None, {"kv_cache_memory_bytes": GIB})  # 4096 positions
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "lots")
    with pytest.raises(EngineStartError, match="whole number of GiB"):
        check_cpu_kv_memory("m", TINY, 4096, {})


VLLM_FAILURE = textwrap.dedent("""\
    (EngineCore pid=1) INFO 12-02 05:47:40 [core.py:133] Initializing a V1 LLM engine
    (EngineCore pid=1) ERROR 12-02 05:47:59 [core.py:1510] EngineCore failed to start.
    (EngineCore pid=1) ERROR 12-02 05:47:59 [core.py:1510] Traceback (most recent call last):
    (EngineCore pid=1) ERROR 12-02 05:47:59 [core.py:1510]     raise ValueError(
    (EngineCore pid=1) ERROR 12-02 05:47:59 [core.py:1510] ValueError: To serve at least one \
request with the model's max seq len (8388608), (4.0 GiB KV cache is needed
    Process EngineCore:
    Traceback (most recent call last):
      File "x.py", line 3, in <module>
    ValueError: To serve at least one request with the model's max seq len (8388608), (4.0 GiB \
KV cache is needed
    Traceback (most recent call last):
    RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}
    """)


def test_the_root_cause_is_the_last_real_exception() -> None:
    assert strip_prefix("(Worker pid=7) ERROR 12-02 05:40:03 [x.py:1] ValueError: a") == (
        "ValueError: a")
    cause = root_cause(VLLM_FAILURE.splitlines())
    assert cause == ("ValueError: To serve at least one request with the model's max seq len "
                     "(8388608), (4.0 GiB KV cache is needed")
    wrapped = ["(EngineCore pid=3) RuntimeError: Worker failed with error 'x', please check",
               "(Worker pid=4) ERROR 12-02 05:40:03 [m.py:9] ValueError: Available memory on "
               "node 0 is less than requested memory for kv (100.0 GiB).",
               "RuntimeError: Engine core initialization failed. See root cause above."]
    assert root_cause(wrapped) == ("ValueError: Available memory on node 0 is less than "
                                   "requested memory for kv (100.0 GiB).")
    assert root_cause(["RuntimeError: Engine core initialization failed."]) == (
        "RuntimeError: Engine core initialization failed.")
    assert root_cause(["all fine", "INFO started"]) is None


def test_one_line_of_a_multi_line_exception() -> None:
    assert one_line(ValueError("first\n\n  detail\nlast")) == "first last"
    assert one_line(RuntimeError("")) == "RuntimeError"


CHILD = ("import sys, traceback\nprint('child says hello', flush=True)\n"
         "raise ValueError('the kernel refuses head size 16')\n")


def test_a_failed_start_shows_nothing_and_keeps_the_cause(capfd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    capture = CapturedStartup(log_dir=str(tmp_path))
    with capture:
        # A child process inherits the captured descriptors, as vLLM's engine core does.
        code = subprocess.run([sys.executable, "-c", CHILD]).returncode
        assert code == 1
        capture.failed()
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "hello" not in out + err
    assert capture.root_cause() == "ValueError: the kernel refuses head size 16"
    assert capture.log_path is not None and "Traceback" in capture.log_path.read_text()


def test_a_successful_start_shows_its_output(capfd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with CapturedStartup(log_dir=str(tmp_path)) as capture:
        subprocess.run([sys.executable, "-c", "import sys; print('engine up');"
                        "print('a warning', file=sys.stderr)"], check=True)
    out, err = capfd.readouterr()
    assert "engine up" in out and "a warning" in err
    assert capture.log_path is None and not list(tmp_path.iterdir())


def test_saga_model_tiny_without_tokenizers_is_one_line(monkeypatch, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import fails as if not installed
    assert saga_main(["model", "tiny", str(tmp_path / "tiny")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "tokenizers" in err and "saga-controlplane[vllm-cpu]" in err
    assert saga_main(["model"]) == 2


def test_saga_node_vllm_refuses_a_missing_model_before_importing_vllm(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = saga_main(["node", "--control-plane", "http://127.0.0.1:1", "--token", "t",
                      "--engine", "vllm", "--model", str(tmp_path / "nothing")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == f"saga node: error: --model {tmp_path / 'nothing'}: no such folder"

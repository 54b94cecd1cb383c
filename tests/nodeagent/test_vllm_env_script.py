"""scripts/setup_vllm_env.sh: where each vLLM environment lives, and when it is rebuilt (its key
follows the pinned requirements and nothing else of the clone). Nothing is built here."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    scripts = tmp_path / "clone" / "scripts"
    scripts.mkdir(parents=True)
    for name in ("setup_vllm_env.sh", "requirements-vllm-cpu.txt", "requirements-vllm-gpu.txt"):
        shutil.copy(REPO / "scripts" / name, scripts / name)
    return tmp_path / "clone"


def _run(clone: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(clone / "scripts" / "setup_vllm_env.sh"), *args],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin:/usr/local/bin",
                               "PYTHON": shutil.which("python3") or "python3",
                               "SAGA_VENV_CACHE": str(cache)})


def test_each_flavour_has_its_folder_outside_the_clone_keyed_by_its_pins(clone: Path,
                                                                          tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cpu = _run(clone, cache, "cpu", "--print-path")
    gpu = _run(clone, cache, "gpu", "--print-path")
    assert cpu.returncode == gpu.returncode == 0, cpu.stderr + gpu.stderr
    cpu_path, gpu_path = Path(cpu.stdout.strip()), Path(gpu.stdout.strip())
    assert cpu_path.parent == gpu_path.parent == cache
    assert cpu_path.name.startswith("vllm-cpu-") and gpu_path.name.startswith("vllm-gpu-")
    assert not cache.exists()  # --print-path builds nothing
    # Another clone of the same pins finds the same environment.
    other = tmp_path / "other"
    shutil.copytree(clone, other)
    assert _run(other, cache, "cpu", "--print-path").stdout == cpu.stdout
    # A changed pin is a new environment.
    requirements = clone / "scripts" / "requirements-vllm-cpu.txt"
    requirements.write_text(requirements.read_text() + "six==1.17.0\n")
    assert _run(clone, cache, "cpu", "--print-path").stdout.strip() != str(cpu_path)
    assert _run(clone, cache, "gpu", "--print-path").stdout.strip() == str(gpu_path)


def test_bad_usage_exits_2(clone: Path, tmp_path: Path) -> None:
    for args in ((), ("rocm",), ("cpu", "--fast"), ("cpu", "--print-path", "extra")):
        result = _run(clone, tmp_path / "cache", *args)
        assert result.returncode == 2, args
        assert "usage: scripts/setup_vllm_env.sh cpu|gpu" in result.stderr


def test_the_pins_name_the_vllm_build_and_leave_out_what_the_cpu_engine_does_not_use() -> None:
    cpu = (REPO / "scripts" / "requirements-vllm-cpu.txt").read_text().splitlines()
    gpu = (REPO / "scripts" / "requirements-vllm-gpu.txt").read_text().splitlines()
    pins = {line.split("==")[0].lower(): line.split("==")[1]
            for line in cpu if line and not line.startswith("#")}
    assert pins["vllm-cpu"] == "0.32.0" and pins["torch"] == "2.13.0+cpu"
    assert not {"vllm", "triton", "torchvision", "torchaudio", "torchcodec"} & set(pins)
    assert {"django", "tokenizers", "pytest", "pluggy"} <= set(pins)
    assert "vllm==0.33.0" in gpu and "torch==2.13.0+cpu" in gpu
    for lines in (cpu, gpu):
        assert all("==" in line for line in lines if line and not line.startswith("#"))

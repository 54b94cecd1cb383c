#!/usr/bin/env python3
"""Run vLLM 0.33's own scheduler tests against stock vLLM and against SagaScheduler.

SAGA must not break vLLM: this script takes ``tests/v1/core/test_scheduler.py`` and
``test_prefix_caching.py`` (with their helpers) from the vLLM 0.33.0 source distribution, runs
them in a scratch folder outside the repository (vLLM's test code is never copied into SAGA),
and compares the outcomes per test:

* ``stock``: as vLLM ships them;
* ``saga``: every scheduler the tests build is a SAGA scheduler with its default policies
  (aeg / saga / afs): the names ``Scheduler`` and ``AsyncScheduler`` in the test modules and in
  their ``create_scheduler`` helpers are replaced by ``SagaSyncScheduler`` and ``SagaScheduler``
  (a test that builds vLLM's ``KVCacheManager`` or ``BlockPool`` directly is unaffected: SAGA
  does not replace those; the report counts how many tests built a SAGA scheduler);
* ``saga-baseline`` (optional): the same with SAGA's baseline policy set (lru /
  session-affinity / fcfs), which should reproduce stock vLLM exactly;
* ``saga-all`` (optional): SAGA's defaults with ``order_untagged`` on. vLLM's tests send
  untagged requests, which SAGA by design leaves in vLLM's order (it orders workflow calls);
  this mode lets the policies order them too, and shows which tests assert vLLM's FCFS order.

The tests' default model is ``facebook/opt-125m``; with no hub access the script writes a local
``facebook/opt-125m/config.json`` (the published OPT-125m architecture values) in the scratch
folder, which ModelConfig resolves as a local path. Tests that need other hub models (llava,
Qwen3-Next) or Triton fail in every mode.

Usage::

    make vllm-conformance     # or, with the environment scripts/setup_vllm_env.sh gpu prints:
    "$VENV"/bin/python scripts/vllm_conformance.py [--modes stock,saga,saga-baseline]

Prints ``stock: P passed F failed; saga: P passed F failed`` and the tests that pass stock but
fail under SAGA; exits 1 when there is such a test in ``saga`` or ``saga-baseline`` (``saga-all``
is informational), 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VLLM_VERSION = "0.33.0"
TEST_FILES = ("test_scheduler.py", "test_prefix_caching.py")
HELPERS = ("tests/v1/core/utils.py", "tests/v1/kv_connector/unit/utils.py")
PACKAGES = (
    "tests",
    "tests/v1",
    "tests/v1/core",
    "tests/v1/kv_connector",
    "tests/v1/kv_connector/unit",
)
MODES = ("stock", "saga", "saga-baseline", "saga-all")
INFORMATIONAL = frozenset({"saga-all"})
"""Modes whose differences from stock are expected and do not fail the run."""

OPT_125M_CONFIG = {
    "architectures": ["OPTForCausalLM"],
    "model_type": "opt",
    "hidden_size": 768,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "ffn_dim": 3072,
    "vocab_size": 50272,
    "max_position_embeddings": 2048,
    "word_embed_proj_dim": 768,
    "do_layer_norm_before": True,
    "pad_token_id": 1,
    "bos_token_id": 2,
    "eos_token_id": 2,
    "torch_dtype": "float16",
    "activation_function": "relu",
    "enable_bias": True,
    "layer_norm_elementwise_affine": True,
    "dropout": 0.1,
    "attention_dropout": 0.0,
    "init_std": 0.02,
    "layerdrop": 0.0,
    "use_cache": True,
}

CONFTEST = '''"""Written by SAGA's scripts/vllm_conformance.py: scheduler substitution."""
import json
import os

os.environ["VLLM_TARGET_DEVICE"] = "cpu"
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest

MODE = os.environ.get("SAGA_CONFORMANCE_MODE", "stock")
BUILT = []
REPORT = {}

if MODE != "stock":
    from nodeagent.vllm_hooks import SagaScheduler, SagaSchedulingMixin, SagaSyncScheduler

    _original_init = SagaSchedulingMixin.__init__

    def _counting_init(self, *args, **kwargs):
        _original_init(self, *args, **kwargs)
        BUILT.append(type(self).__name__)

    SagaSchedulingMixin.__init__ = _counting_init

    SUBSTITUTES = {"Scheduler": SagaSyncScheduler, "AsyncScheduler": SagaScheduler}
    HELPER_MODULES = ("tests.v1.core.utils", "tests.v1.kv_connector.unit.utils")

    @pytest.fixture(autouse=True)
    def _saga_substitution(request, monkeypatch):
        import importlib

        modules = [importlib.import_module(name) for name in HELPER_MODULES]
        modules.append(request.module)
        for module in modules:
            for name, cls in SUBSTITUTES.items():
                if name in vars(module):
                    monkeypatch.setattr(module, name, cls)
        before = len(BUILT)
        yield
        REPORT[request.node.nodeid] = len(BUILT) - before


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("SAGA_CONFORMANCE_REPORT")
    if path and MODE != "stock":
        with open(path, "w") as fh:
            json.dump(REPORT, fh)
'''


class UsageError(Exception):
    """Bad command-line input: reported on one line, exit status 2."""


@dataclass
class ModeResult:
    mode: str
    outcomes: dict[str, str]  # test id -> passed | failed | skipped
    built: dict[str, int]

    def count(self, outcome: str, file: str | None = None) -> int:
        return sum(
            1
            for test, o in self.outcomes.items()
            if o == outcome and (file is None or test.split("::")[0].endswith(file))
        )

    def summary(self, file: str | None = None) -> str:
        return f"{self.count('passed', file)} passed {self.count('failed', file)} failed"


def find_sdist(sdist_dir: Path) -> Path | None:
    candidate = sdist_dir / f"vllm-{VLLM_VERSION}.tar.gz"
    return candidate if candidate.is_file() else None


def fetch_sdist(sdist_dir: Path, vllm_python: Path, scratch: Path) -> Path:
    """Download the sdist with pip (registry only).

    ``pip download`` prepares the sdist's metadata, which runs vLLM's setup.py: it imports torch
    (taken from the vLLM environment), needs setuptools >= 77 and setuptools-rust (a throwaway
    build environment) and, with ``VLLM_TARGET_DEVICE=empty``, would append ``+empty`` to the
    version unless ``VLLM_VERSION_OVERRIDE`` pins it. Nothing is built or installed.
    """
    build_env = scratch / "sdist-build-env"
    if not (build_env / "bin" / "pip").exists():
        subprocess.run([sys.executable, "-m", "venv", str(build_env)], check=True)
        subprocess.run(
            [
                str(build_env / "bin" / "pip"),
                "install",
                "--quiet",
                "setuptools>=77",
                "setuptools-rust",
                "setuptools-scm",
                "wheel",
                "packaging",
                "jinja2",
            ],
            check=True,
        )
    site = subprocess.run(
        [
            str(vllm_python),
            "-c",
            "import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    build_site = next((build_env / "lib").glob("python3*/site-packages"))
    env = dict(
        os.environ,
        VLLM_TARGET_DEVICE="empty",
        VLLM_VERSION_OVERRIDE=VLLM_VERSION,
        PYTHONPATH=f"{build_site}{os.pathsep}{site}",
    )
    sdist_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            str(build_env / "bin" / "pip"),
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--no-build-isolation",
            f"vllm=={VLLM_VERSION}",
            "-d",
            str(sdist_dir),
        ],
        check=True,
        env=env,
    )
    found = find_sdist(sdist_dir)
    if found is None:
        raise UsageError(f"pip download did not leave vllm-{VLLM_VERSION}.tar.gz in {sdist_dir}")
    return found


def prepare_harness(sdist: Path, harness: Path) -> None:
    """Extract the test files and helpers into ``harness`` and write the conftest."""
    prefix = f"vllm-{VLLM_VERSION}/"
    wanted = {f"tests/v1/core/{name}" for name in TEST_FILES} | set(HELPERS)
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            rel = member.name[len(prefix) :] if member.name.startswith(prefix) else None
            if rel in wanted and member.isfile():
                source = tar.extractfile(member)
                assert source is not None
                target = harness / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(source.read())
                wanted.discard(rel)
    if wanted:
        raise UsageError(f"{sdist} lacks {', '.join(sorted(wanted))}")
    for package in PACKAGES:
        init = harness / package / "__init__.py"
        init.parent.mkdir(parents=True, exist_ok=True)
        init.touch()
    model = harness / "facebook" / "opt-125m"
    model.mkdir(parents=True, exist_ok=True)
    (model / "config.json").write_text(json.dumps(OPT_125M_CONFIG))
    (harness / "conftest.py").write_text(CONFTEST)


def run_mode(mode: str, harness: Path, vllm_python: Path, timeout_s: int) -> ModeResult:
    junit = harness / f"junit-{mode}.xml"
    built_report = harness / f"built-{mode}.json"
    env = dict(os.environ, SAGA_CONFORMANCE_MODE=mode, SAGA_CONFORMANCE_REPORT=str(built_report))
    for name in list(env):
        if name.startswith("SAGA_") and name not in (
            "SAGA_CONFORMANCE_MODE",
            "SAGA_CONFORMANCE_REPORT",
        ):
            del env[name]
    if mode == "saga-baseline":
        env["SAGA_POLICY_SET"] = "baseline"
    elif mode == "saga-all":
        env["SAGA_ORDER_UNTAGGED"] = "1"
    cmd = [
        str(vllm_python),
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={junit}",
        *(f"tests/v1/core/{name}" for name in TEST_FILES),
    ]
    proc = subprocess.run(
        cmd, cwd=harness, env=env, capture_output=True, text=True, timeout=timeout_s
    )
    if not junit.exists():
        tail = (proc.stdout + proc.stderr)[-2000:]
        raise RuntimeError(f"pytest ({mode}) produced no report (exit {proc.returncode}):\n{tail}")
    built = json.loads(built_report.read_text()) if built_report.exists() else {}
    return ModeResult(mode, parse_junit(junit), {k: int(v) for k, v in built.items()})


def parse_junit(path: Path) -> dict[str, str]:
    outcomes: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        classname = case.get("classname", "")
        test_id = classname.replace(".", "/") + ".py::" + case.get("name", "")
        if any(child.tag in ("failure", "error") for child in case):
            outcome = "failed"
        elif any(child.tag == "skipped" for child in case):
            outcome = "skipped"
        else:
            outcome = "passed"
        # A test that fails in setup and teardown appears twice; the worst outcome counts.
        if outcomes.get(test_id) != "failed":
            outcomes[test_id] = outcome
    return outcomes


def report(results: list[ModeResult]) -> int:
    stock = next((r for r in results if r.mode == "stock"), None)
    print("; ".join(f"{r.mode}: {r.summary()}" for r in results))
    for name in TEST_FILES:
        print(f"  {name}: " + "; ".join(f"{r.mode}: {r.summary(name)}" for r in results))
    regressions = 0
    for r in results:
        if r.mode == "stock":
            continue
        for name in TEST_FILES:
            in_file = [t for t in r.outcomes if t.split("::")[0].endswith(name)]
            with_saga = sum(1 for t in in_file if r.built.get(t, 0) > 0)
            print(f"{r.mode}: {name}: {with_saga} of {len(in_file)} tests built a SAGA scheduler")
        if stock is None:
            continue
        broken = sorted(
            t for t, o in stock.outcomes.items() if o == "passed" and r.outcomes.get(t) != "passed"
        )
        fixed = sorted(
            t for t, o in r.outcomes.items() if o == "passed" and stock.outcomes.get(t) != "passed"
        )
        if r.mode in INFORMATIONAL:
            print(
                f"{r.mode}: {len(broken)} tests pass stock but differ when SAGA orders untagged "
                "requests too (informational: they assert vLLM's FCFS admission order)"
            )
            for test in broken:
                print(f"  ORDER-DEPENDENT {test}")
        else:
            regressions += len(broken)
            print(f"{r.mode}: {len(broken)} tests pass stock but fail with SAGA")
            for test in broken:
                print(f"  REGRESSION {test}")
        for test in fixed:
            print(f"  passes only with SAGA: {test}")
    return 1 if regressions else 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="stock,saga", help=f"comma list of {', '.join(MODES)}")
    parser.add_argument("--sdist-dir", default="/tmp/vllm-sdist", type=Path)
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="scratch folder (default: a new temp dir)"
    )
    parser.add_argument(
        "--python",
        type=Path,
        default=Path(sys.executable),
        help="interpreter of the vLLM 0.33.0 environment (default: this one; "
        "scripts/setup_vllm_env.sh gpu builds it)",
    )
    parser.add_argument("--no-fetch", action="store_true", help="fail if the sdist is missing")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per mode")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if not modes or unknown:
        raise UsageError(
            f"--modes: unknown {', '.join(unknown) or 'empty'}; expected {', '.join(MODES)}"
        )
    args.modes = modes
    if not args.python.exists():
        raise UsageError(f"--python: {args.python} not found (run scripts/setup_vllm_env.sh gpu)")
    if args.timeout <= 0:
        raise UsageError("--timeout must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        work = args.work_dir or Path(tempfile.mkdtemp(prefix="saga-vllm-conformance-"))
        work.mkdir(parents=True, exist_ok=True)
        sdist = find_sdist(args.sdist_dir)
        if sdist is None:
            if args.no_fetch:
                raise UsageError(f"no vllm-{VLLM_VERSION}.tar.gz in {args.sdist_dir}")
            sdist = fetch_sdist(args.sdist_dir, args.python, work)
        harness = work / "harness"
        harness.mkdir(exist_ok=True)
        prepare_harness(sdist, harness)
    except UsageError as exc:
        print(f"vllm_conformance: {exc}", file=sys.stderr)
        return 2
    print(f"vllm_conformance: sdist {sdist}, scratch {harness}", flush=True)
    results = [run_mode(mode, harness, args.python, args.timeout) for mode in args.modes]
    return report(results)


if __name__ == "__main__":
    sys.exit(main())

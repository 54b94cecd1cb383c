"""``saga policies list [--json]``: what policies are installed, with their parameters.

The control plane's ``saga`` console script calls :func:`register` with its subparsers object and
dispatches to :func:`run` (also set as the parser's ``func`` default). ``python -m plugins.cli
policies list`` works on its own.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from plugins.base import PolicyError
from plugins.named_sets import POLICY_SETS
from plugins.registry import ENTRY_POINT_GROUP, PolicyInfo, PolicyRegistry


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``policies list [--json]`` to an argparse subparsers object; returns the parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "policies", help="installed scheduling policies", description=__doc__
    )
    sub = parser.add_subparsers(dest="policies_command", metavar="COMMAND")
    sub.required = True
    lister = sub.add_parser(
        "list", help="list installed policies (kind, name, version, params schema)"
    )
    lister.add_argument("--json", action="store_true", help="print machine-readable JSON")
    lister.add_argument(
        "--group",
        default=ENTRY_POINT_GROUP,
        help=f"entry-point group to discover (default {ENTRY_POINT_GROUP})",
    )
    parser.set_defaults(func=run)
    return parser


def _param_summary(info: PolicyInfo) -> str:
    fields = info.cls.Params.model_fields
    if not fields:
        return "-"
    parts = []
    for name, field in fields.items():
        default = field.get_default(call_default_factory=True)
        parts.append(f"{name}={default!r}")
    return ", ".join(parts)


def list_policies(registry: PolicyRegistry, as_json: bool, out: TextIO) -> None:
    infos = registry.infos()
    if as_json:
        document = {
            "policies": [info.to_dict() for info in infos],
            "sets": {name: list(triple) for name, triple in POLICY_SETS.items()},
            "errors": list(registry.errors),
        }
        json.dump(document, out, indent=2, sort_keys=False)
        out.write("\n")
        return
    rows = [
        (
            i.kind,
            i.name + (" *" if i.requires_oracle else ""),
            i.version,
            i.summary,
            _param_summary(i),
        )
        for i in infos
    ]
    header = ("KIND", "NAME", "VERSION", "SUMMARY", "PARAMS (defaults)")
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(4)]
    for row in [header, *rows]:
        cells = [row[c].ljust(widths[c]) for c in range(4)]
        out.write("  ".join([*cells, row[4]]).rstrip() + "\n")
    out.write("\n* needs the future of the trace (simulator only)\n")
    out.write("sets: " + "; ".join(f"{n}={':'.join(t)}" for n, t in POLICY_SETS.items()) + "\n")
    for error in registry.errors:
        out.write(f"warning: {error}\n")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Execute a parsed ``policies`` command; returns the exit status."""
    out = out if out is not None else sys.stdout
    command = getattr(args, "policies_command", None)
    try:
        if command == "list":
            registry = PolicyRegistry.discover(getattr(args, "group", ENTRY_POINT_GROUP))
            list_policies(registry, bool(getattr(args, "json", False)), out)
            return 0
    except PolicyError as exc:
        print(f"saga policies: {exc}", file=sys.stderr)
        return 2
    print(f"saga policies: unknown command {command!r}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="saga")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    register(subparsers)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

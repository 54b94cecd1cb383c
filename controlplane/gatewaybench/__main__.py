"""``python -m controlplane.gatewaybench``: the same as ``saga bench-gateway``."""

from __future__ import annotations

import sys

from controlplane.cli import OneLineErrorParser
from controlplane.gatewaybench import cli


def main(argv: list[str] | None = None) -> int:
    parser = OneLineErrorParser(prog="saga")
    cli.register(parser.add_subparsers(dest="command", parser_class=OneLineErrorParser))
    return cli.run(parser.parse_args(["bench-gateway", *(sys.argv[1:] if argv is None
                                                          else argv)]))


if __name__ == "__main__":
    sys.exit(main())

"""``python -m nodeagent.bench ...`` runs the bench without the ``saga`` console script."""

from __future__ import annotations

import sys

from nodeagent.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())

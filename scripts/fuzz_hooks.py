"""schemathesis hooks of ``make fuzz-api`` (``SCHEMATHESIS_HOOKS=fuzz_hooks``).

The run's own tenant, API keys and node are named in ``FUZZ_PROTECTED``; a generated case that
addresses one of them by path (patching the tenant, revoking a key, draining the node...) is
skipped, so that the fuzzer cannot lock the rest of its own run out. Everything else is sent.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

PROTECTED = frozenset(filter(None, os.environ.get("FUZZ_PROTECTED", "").split(",")))


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    values = {str(v) for v in (case.path_parameters or {}).values()}
    return not (values & PROTECTED)

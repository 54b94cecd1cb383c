"""Field-by-field comparison of two hosts' observations.

Every field must be equal on both hosts, except the ones listed in a tolerance table, which are
*measured* (on some host a clock or a measured cost, not a count) and compared within the
documented bound. A difference is reported with its path, both values and both host names.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Tolerance:
    absolute: float = 0.0
    relative: float = 0.0
    why: str = ""

    def accepts(self, a: float, b: float) -> bool:
        return abs(a - b) <= max(self.absolute, self.relative * max(abs(a), abs(b))) + 1e-9


EXACT = Tolerance(absolute=1e-9, why="computed from the same counts on both hosts")


def diff(a: Any, b: Any, tolerances: Mapping[str, Tolerance], path: str = "",
         ignore: Callable[[str], bool] | None = None) -> list[str]:
    """Differences between observations ``a`` and ``b``; a float field is looked up in
    ``tolerances`` by its last key (``arrival_s``) or its full path (``decisions.priorities``).
    ``ignore(path)`` leaves out fields compared elsewhere (a known disagreement's own test)."""
    if ignore is not None and path and ignore(_strip_indexes(path)):
        return []
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                out.append(f"{sub}: only on {'first' if key in a else 'second'} host "
                           f"({a.get(key, b.get(key))!r})")
                continue
            out.extend(diff(a[key], b[key], tolerances, sub, ignore))
        return out
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items vs {len(b)}: {a!r} vs {b!r}"]
        out = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out.extend(diff(x, y, tolerances, f"{path}[{i}]", ignore))
        return out
    if isinstance(a, bool) or isinstance(b, bool) or not (
            isinstance(a, int | float) and isinstance(b, int | float)):
        return [] if a == b else [f"{path}: {a!r} vs {b!r}"]
    if isinstance(a, int) and isinstance(b, int):
        return [] if a == b else [f"{path}: {a} vs {b}"]
    tolerance = _lookup(path, tolerances)
    if math.isinf(a) or math.isinf(b):
        return [] if a == b else [f"{path}: {a} vs {b}"]
    return [] if tolerance.accepts(float(a), float(b)) else [
        f"{path}: {a!r} vs {b!r} (tolerance {tolerance})"]


def _lookup(path: str, tolerances: Mapping[str, Tolerance]) -> Tolerance:
    plain = _strip_indexes(path)
    for key in (plain, plain.rsplit(".", 1)[-1]):
        if key in tolerances:
            return tolerances[key]
    parts = plain.split(".")
    for i in range(len(parts)):  # a parent's tolerance covers its fields (priorities.<call>)
        parent = ".".join(parts[: len(parts) - i])
        if parent in tolerances:
            return tolerances[parent]
        if parts[len(parts) - i - 1] in tolerances:
            return tolerances[parts[len(parts) - i - 1]]
    return EXACT


def _strip_indexes(path: str) -> str:
    out, depth = [], 0
    for ch in path:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def assert_same(a: Any, b: Any, tolerances: Mapping[str, Tolerance], hosts: tuple[str, str],
                what: str, ignore: Callable[[str], bool] | None = None) -> None:
    problems = diff(a, b, tolerances, ignore=ignore)
    if problems:
        listing = "\n  ".join(problems[:40])
        more = f"\n  ... and {len(problems) - 40} more" if len(problems) > 40 else ""
        raise AssertionError(
            f"{what}: {hosts[0]} and {hosts[1]} disagree on {len(problems)} field(s) "
            f"(first value: {hosts[0]}, second: {hosts[1]}):\n  {listing}{more}")

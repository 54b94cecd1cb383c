"""docs/policies.md documents every hook (datasette's pattern) and its example policy works."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from plugins import hookspecs
from plugins.manager import PolicyManager
from plugins.registry import PolicyRegistry
from plugins.testing import make_entry
from plugins.views import StaticContext

DOC = Path(__file__).resolve().parents[2] / "docs" / "policies.md"


@pytest.fixture(scope="module")
def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def _documented_hooks(text: str) -> dict[str, list[str]]:
    found = {}
    for match in re.finditer(r"^### (saga_\w+)\(([^)]*)\)", text, flags=re.MULTILINE):
        found[match.group(1)] = [a.strip() for a in match.group(2).split(",") if a.strip()]
    return found


@pytest.mark.parametrize("hook", hookspecs.ALL_HOOKS)
def test_every_hook_is_documented_with_its_arguments(doc_text: str, hook: str) -> None:
    documented = _documented_hooks(doc_text)
    assert hook in documented, f"{hook} is missing from docs/policies.md"
    spec_args = list(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert documented[hook] == spec_args


def test_docs_document_no_hook_that_does_not_exist(doc_text: str) -> None:
    assert set(_documented_hooks(doc_text)) == set(hookspecs.ALL_HOOKS)


def test_every_builtin_policy_is_in_the_docs_table(doc_text: str) -> None:
    for info in PolicyRegistry.discover(include_defaults=True).infos():
        assert f"| {info.kind} | `{info.name}` |" in doc_text


def test_every_hookspec_has_a_docstring() -> None:
    for hook in hookspecs.ALL_HOOKS:
        assert (getattr(hookspecs, hook).__doc__ or "").strip(), hook


def test_the_documented_example_policy_installs_and_runs(doc_text: str) -> None:
    code = re.search(r"```python\n(# mypkg/policies.py\n.*?)```", doc_text, flags=re.DOTALL)
    assert code is not None
    namespace: dict[str, object] = {"__name__": "mypkg_policies"}
    exec(compile(code.group(1), "policies.md", "exec"), namespace)
    cls = namespace["BiggestFirst"]
    manager = PolicyManager([cls])  # type: ignore[list-item]
    manager.activate("eviction", "biggest-first", {"min_blocks": 2})
    entries = [make_entry(1, blocks=1), make_entry(2, blocks=8), make_entry(3, blocks=3)]
    assert manager.current().eviction_order(StaticContext(), entries) == [2, 3, 1]

"""Static files the console takes from installed wheels rather than from the repository.

Plotly's browser bundle ships inside the ``plotly`` wheel (``plotly/package_data``), the same
file ``saga bench`` embeds in its reports; this finder serves it, with the wheel's licence, as
``saga/vendor/plotly/plotly.min.js`` and ``saga/vendor/plotly/<the licence file's name>``. It
works offline, follows the pinned wheel (constraints.txt) without a copy to keep in step, and
``collectstatic`` copies both files like any other static file.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.contrib.staticfiles.finders import BaseFinder, searched_locations
from django.core.checks import Error
from django.core.files.storage import FileSystemStorage

PREFIX = "saga/vendor/plotly"


def plotly_files() -> dict[str, Path]:
    """Name under PREFIX -> the file of that name in the installed plotly wheel."""
    import plotly

    files = {"plotly.min.js": Path(plotly.__file__).parent / "package_data" / "plotly.min.js"}
    for entry in importlib.metadata.distribution("plotly").files or ():
        if entry.name.upper().startswith("LICENSE"):
            files[Path(entry.name).name] = Path(str(entry.locate()))
            break
    return files


class PlotlyWheelFinder(BaseFinder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.files = plotly_files()
        self.storages = {}
        for name, path in self.files.items():
            storage = FileSystemStorage(location=str(path.parent))
            storage.prefix = PREFIX  # type: ignore[attr-defined]
            self.storages[name] = storage

    def check(self, **kwargs: Any) -> list[Error]:
        return [Error(f"the plotly wheel has no {name} at {path}", id="saga.E001")
                for name, path in self.files.items() if not path.is_file()]

    def find(self, path: str, find_all: bool = False, **kwargs: Any) -> Any:
        found = []
        for name, file in self.files.items():
            if path == f"{PREFIX}/{name}" and file.is_file():
                searched_locations.append(str(file.parent))
                found.append(str(file))
        if find_all or kwargs.get("all"):
            return found
        return found[0] if found else []

    def list(self, ignore_patterns: Any) -> Iterator[tuple[str, FileSystemStorage]]:
        for name, file in self.files.items():
            if file.is_file():
                yield name, self.storages[name]

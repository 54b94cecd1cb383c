"""What the browser tests share: Debian's Chromium (required in CI), the screenshot folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = Path(os.environ.get("SAGA_SCREENSHOT_DIR", "")
                   or Path(__file__).resolve().parents[2] / "artifacts" / "console")
"""Where the console tests save a screenshot of every page (git-ignored ``artifacts/``)."""


def chromium() -> str:
    """The browser; CI (SAGA_REQUIRE_BROWSER=1) fails without it, a laptop skips."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("SAGA_REQUIRE_BROWSER") == "1":
            pytest.fail("Chromium is required (apt-get install chromium)", pytrace=False)
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    return found

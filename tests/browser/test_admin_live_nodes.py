"""In a real browser (headless Chromium): the admin's node list follows heartbeats live."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from tests.browser.support import CHROMIUM_ARGS, chromium
from tests.live import NodeProcess, serve_control_plane

pytestmark = pytest.mark.django_db(transaction=True)


def test_node_status_updates_without_reloading(redis_url: str, settings: Any) -> None:
    executable = chromium()
    playwright = pytest.importorskip("playwright.async_api")
    get_user_model().objects.create_superuser("root", "", "pw-123456789")
    with serve_control_plane() as url:
        node = NodeProcess(url, "gpu-live", api_key=None).start()
        try:
            asyncio.run(_watch(playwright, executable, url))
        finally:
            node.stop()


async def _watch(playwright: Any, executable: str, url: str) -> None:
    async with playwright.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = await browser.new_page()
        await page.goto(f"{url}/admin/login/?next=/admin/nodes/node/")
        await page.fill("#id_username", "root")
        await page.fill("#id_password", "pw-123456789")
        await page.click("input[type=submit]")
        cell = page.locator("#result_list tr:has-text('gpu-live') .field-last_heartbeat_at")
        first = await cell.inner_text()
        # The next heartbeat (every 5 s) rewrites the cell in place, with seconds.
        await page.wait_for_function(
            "([sel, before]) => { const c = document.querySelector(sel);"
            " return c && c.textContent !== before; }",
            arg=["#result_list tr .field-last_heartbeat_at", first], timeout=15000)
        assert await page.locator("#result_list tr:has-text('gpu-live') .field-status"
                                  ).inner_text() == "Up"
        await browser.close()

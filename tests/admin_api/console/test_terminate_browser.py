"""A real gateway's session in the browser: on the dashboard, in play sessions, then terminated.

The whole path the issue names: Flussonic's ``new_session`` check admitted by a real
``authgate`` process, the dashboard counting it by itself (no reload), the play
sessions list showing it, **Terminate** clicked and confirmed, and the gateway
refusing the session's next check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest
from playwright.async_api import expect

from catena import ids, portals
from tests.authgate.conftest import Launcher, Portal, World
from tests.redis_servers import RedisBackend

from .conftest import Browsing, browser_sign_in, check_accessibility

pytestmark = pytest.mark.browser


async def test_a_gateway_session_shows_live_and_terminate_refuses_its_next_check(
    browsing: Browsing,
    portal: portals.CreatedPortal,
    pool: asyncpg.Pool,
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    world = World(pool)
    mine = Portal(ids.decode(portal.portalId) or 0, portal.portalId)
    await world.package(mine, "basic")
    await world.channel(mine, "sport", ["basic"])
    viewer = await world.subscriber(mine, ["basic"], max_sessions=1)
    launcher = Launcher(database_url, RedisBackend.single(redis_url), redis_prefix, tmp_path)
    try:
        gateway = await launcher.start()
        page = await browsing.new_page()
        await browser_sign_in(page, browsing.base, portal.ownerEmail, portal.ownerPassword)
        await expect(page.locator("#f-viewers")).to_have_text("0")

        assert (await gateway.auth(viewer, "sport", session="flu-1")).status == 200
        # The dashboard refreshes every 10 s by itself; the recorder flushes within a second.
        await expect(page.locator("#f-viewers")).to_have_text("1", timeout=25_000)

        await page.get_by_role("link", name="Play sessions").click()
        row = page.locator("tr.open")
        await expect(row).to_have_count(1)
        await expect(row).to_contain_text("sport")
        await row.get_by_role("link", name="Terminate").click()
        await expect(page.get_by_role("heading", level=1)).to_contain_text("sport")
        await check_accessibility(page)
        await page.get_by_label("Reason").fill("account sharing")
        await page.get_by_role("button", name="Terminate").click()
        await expect(page.locator(".notice")).to_have_text("Session on sport terminated")
        await expect(page.locator("tr.open")).to_have_count(0)

        # The gateway refuses the session's next check, within the second the promise allows.
        answer: Any = None
        for _ in range(20):
            answer = await gateway.auth(viewer, "sport", session="flu-1", request_type="update_session")
            if answer.status == 403:
                break
            await page.wait_for_timeout(100)
        assert answer.status == 403 and answer.reason == "session_terminated", answer.body
        # Its place is free: a new session of the same subscriber (limit 1) is admitted.
        assert (await gateway.auth(viewer, "sport", session="flu-2")).status == 200
        closed = await pool.fetchrow(
            "SELECT active, close_reason FROM play_sessions WHERE flussonic_id = 'flu-1'"
        )
        assert closed is not None and tuple(closed) == (False, "account sharing")
    finally:
        await launcher.stop_all()

"""Dashboard, Play sessions and Operations in Debian's Chromium (Playwright).

A session is recorded as the gateway records it (a ``play_sessions`` row, which
the statistics triggers count) and must show on the dashboard, which refreshes by
itself, and in the play sessions list.  Every page is checked with axe-core and
for sideways scrolling at 1280 and 390 px, in English and Russian;
``--console-screenshots=DIR`` saves them (``watch-<page>-<lang>-<width>.png``).
"""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from playwright.async_api import expect

from catena import ids, portals
from tests.admin_api._subscribers_support import create_subscriber, op_id_at
from tests.conftest import Api

from .conftest import NARROW, WIDE, Browsing, browser_sign_in, check_accessibility, check_fits

pytestmark = pytest.mark.browser

# The browsing fixture's time zone (UTC+3 all year).
ZONE = ZoneInfo("Europe/Moscow")


async def record_session(
    pool: asyncpg.Pool,
    portal_id: str,
    opened: int,
    *,
    subscriber: str,
    channel: dict[str, Any],
    active: bool = True,
    n: int = 0,
    device: str = "VLC/3.0.16",
) -> str:
    """A session row as the gateway's recorder writes it: its id made when it opened."""
    opened_at = datetime.fromtimestamp(opened, UTC)
    session_id = op_id_at(opened_at, n)
    closed_at = None if active else opened_at + timedelta(minutes=25)
    await pool.execute(
        """INSERT INTO play_sessions (id, portal_id, subscriber_id, channel_id, channel_name, flussonic_id,
                                      opened_at, updated_at, closed_at, active, bytes, ip, user_agent)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 734003200, '203.0.113.7', $11)""",
        session_id, ids.decode(portal_id), ids.decode(subscriber), ids.decode(channel["channelId"]),
        channel["name"], f"flu-{session_id}", opened_at, closed_at or opened_at, closed_at, active, device,
    )  # fmt: skip
    return ids.encode(session_id)


async def catalogue(api: Api) -> dict[str, Any]:
    """Channels, subscribers, a package and an EPG source never fetched."""
    made: dict[str, Any] = {}
    await api.post("/epg-sources", {"name": "main-epg", "url": "https://epg.example.com/guide.xml"})
    for name, title in (("sport1", "Sport One"), ("news24", "News 24"), ("kids", "Kids & Family")):
        status, made[name] = await api.post("/channels", {"name": name, "title": title})
        assert status == 200, made[name]
    status, made["basic"] = await api.post("/packages", {"name": "basic", "description": "The basic package"})
    made["anna"] = await create_subscriber(api, phone="9161110001", name="Анна Смирнова")
    made["oleg"] = await create_subscriber(api, phone="9161110002", name="Олег Иванов")
    await api.post(
        "/packages-subscribers",
        {"subscriberId": made["anna"]["subscriberId"], "packageId": made["basic"]["packageId"]},
    )
    await api.post(f"/subscribers/{made['oleg']['subscriberId']}/disable", {"reason": "unpaid"})
    return made


async def a_day_of_sessions(pool: asyncpg.Pool, portal: portals.CreatedPortal, made: dict[str, Any]) -> None:
    """Sessions over the last day, so that the chart has a shape, and a few playing now."""
    now = int(time.time())
    people = [made["anna"]["subscriberId"], made["oleg"]["subscriberId"]]
    channels = [made["sport1"], made["news24"], made["kids"]]
    n = 0
    for hour in range(23, 0, -1):
        for k in range((hour * 7) % 5 + (3 if 18 <= (23 - hour) % 24 <= 21 else 0)):
            n += 1
            await record_session(pool, portal.portalId, now - hour * 3600 + k * 60, subscriber=people[n % 2],
                                 channel=channels[n % 3], active=False, n=n)  # fmt: skip
    for k, channel in enumerate((made["sport1"], made["sport1"], made["news24"])):
        await record_session(pool, portal.portalId, now - 300 + k, subscriber=people[k % 2], channel=channel,
                             n=k, device="Mozilla/5.0 (SMART-TV; Tizen 6.5)")  # fmt: skip


async def test_a_recorded_session_shows_on_the_dashboard_by_itself_and_in_play_sessions(
    browsing: Browsing, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    made = await catalogue(api)
    page = await browsing.new_page()
    await browser_sign_in(page, browsing.base, portal.ownerEmail, portal.ownerPassword)
    await expect(page).to_have_url(browsing.url("/"))
    await expect(page.get_by_role("heading", name="Dashboard", exact=True)).to_be_visible()
    await expect(page.locator("#f-viewers")).to_have_text("0")
    await page.evaluate("window.stillTheSamePage = true")
    opened = int(time.time()) - 30
    session = await record_session(pool, portal.portalId, opened, subscriber=made["anna"]["subscriberId"],
                                   channel=made["sport1"])  # fmt: skip
    # htmx polls every 10 s: the figures change without the page reloading.
    await expect(page.locator("#f-viewers")).to_have_text("1", timeout=30_000)
    await expect(page.locator("#t-viewers")).to_have_text("viewer now")
    await expect(page.locator("#f-watching")).to_have_text("1")
    await expect(page.locator("#top-channels")).to_contain_text("Sport One")
    assert await page.evaluate("window.stillTheSamePage") is True
    await page.get_by_role("link", name="Play sessions").click()
    row = page.locator(f"tr[id='session-{session}']")
    await expect(row).to_contain_text("Sport One".split()[0].lower() + "1")
    await expect(row.locator(".badge")).to_have_text("open")
    # The opening time in the browser's zone, the UTC instant kept in the title.
    stamp = row.locator("time").first
    await expect(stamp).not_to_contain_text("UTC")
    local = datetime.fromtimestamp(opened, ZONE)
    await expect(stamp).to_contain_text(local.strftime("%-I:%M"))
    await expect(stamp).to_have_attribute(
        "title", datetime.fromtimestamp(opened, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )


async def test_a_time_filter_is_typed_in_local_time_and_sent_as_utc(
    browsing: Browsing, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    made = await catalogue(api)
    now = int(time.time())
    old = await record_session(pool, portal.portalId, now - 7200, subscriber=made["anna"]["subscriberId"],
                               channel=made["news24"], active=False)  # fmt: skip
    new = await record_session(pool, portal.portalId, now - 60, subscriber=made["oleg"]["subscriberId"],
                               channel=made["sport1"], n=1)  # fmt: skip
    page = await browsing.new_page()
    await browser_sign_in(page, browsing.base, portal.ownerEmail, portal.ownerPassword)
    await page.goto(browsing.url("/play-sessions"))
    await expect(page.locator("#rows tr[id]")).to_have_count(2)
    since = datetime.fromtimestamp(now - 3600, ZONE)
    await page.get_by_label("Opened from").fill(since.strftime("%Y-%m-%dT%H:%M"))
    await page.get_by_role("button", name="Apply").click()
    sent = datetime.fromtimestamp(now - 3600, UTC).strftime("%Y-%m-%dT%H%%3A%M")
    await expect(page).to_have_url(
        browsing.url(f"/play-sessions?subscriber=&channel=&status=&from={sent}&to=")
    )
    await expect(page.locator("#rows tr[id]")).to_have_count(1)
    await expect(page.locator(f"tr[id='session-{new}']")).to_be_visible()
    await expect(page.locator(f"tr[id='session-{old}']")).to_have_count(0)
    # The field shows the browser's time again, not the UTC it sent.
    await expect(page.get_by_label("Opened from")).to_have_value(since.strftime("%Y-%m-%dT%H:%M"))


async def test_csv_exports_download_what_matches(
    browsing: Browsing, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    made = await catalogue(api)
    now = int(time.time())
    anna = made["anna"]["subscriberId"]
    mine = [
        await record_session(pool, portal.portalId, now - 600 + n, subscriber=anna, channel=made["kids"], n=n)
        for n in range(3)
    ]
    await record_session(
        pool, portal.portalId, now - 60, subscriber=made["oleg"]["subscriberId"], channel=made["kids"], n=9
    )
    page = await browsing.new_page()
    await browser_sign_in(page, browsing.base, portal.ownerEmail, portal.ownerPassword)
    await page.goto(browsing.url(f"/play-sessions?subscriber={anna}"))
    rows = await downloaded(page, "Export CSV")
    assert [r["sessionId"] for r in rows] == mine[::-1]
    assert {(r["subscriberId"], r["channelName"], r["active"]) for r in rows} == {(anna, "kids", "true")}
    await page.get_by_role("link", name="Operations").click()
    await page.get_by_label("Type").select_option("createSubscriber")
    await page.get_by_role("button", name="Apply").click()
    await expect(page.locator("#rows tr")).to_have_count(2)
    rows = await downloaded(page, "Export CSV")
    assert [(r["type"], r["subscriberId"]) for r in rows] == [
        ("createSubscriber", anna), ("createSubscriber", made["oleg"]["subscriberId"])
    ]  # fmt: skip
    assert '"managerEmail": "apiKey"' in rows[0]["payload"]


async def downloaded(page: Any, link: str) -> list[dict[str, str]]:
    async with page.expect_download() as info:
        await page.get_by_role("link", name=link).click()
    download = await info.value
    assert download.suggested_filename.endswith(".csv")
    return list(csv.DictReader(io.StringIO(Path(await download.path()).read_text())))


async def test_an_operation_opens_from_the_list(
    browsing: Browsing, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    made = await catalogue(api)
    page = await browsing.new_page()
    await browser_sign_in(page, browsing.base, portal.ownerEmail, portal.ownerPassword)
    await page.goto(browsing.url(f"/operations?subscriber={made['oleg']['subscriberId']}"))
    await expect(page.locator("#rows td:nth-child(2)")).to_have_text(
        ["createSubscriber", "disableSubscriber"]
    )
    await page.locator("#rows tr").nth(1).locator("td a").first.click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Operation")
    await expect(page.locator("#payload")).to_contain_text('"reason": "unpaid"')


@pytest.mark.parametrize("viewport", [WIDE, NARROW], ids=["1280px", "390px"])
async def test_every_watch_page_is_accessible_and_fits(
    request: pytest.FixtureRequest,
    browsing: Browsing,
    api: Api,
    portal: portals.CreatedPortal,
    pool: asyncpg.Pool,
    viewport: dict[str, int],
) -> None:
    made = await catalogue(api)
    await a_day_of_sessions(pool, portal, made)
    folder = request.config.getoption("--console-screenshots")
    page = await browsing.new_page()
    await page.set_viewport_size(viewport)
    await browser_sign_in(page, browsing.base, portal.ownerEmail, portal.ownerPassword)
    status, log = await api.get("/operations?type=createPackageSubscriber")
    assert status == 200, log
    pages = [
        ("dashboard", "/"),
        ("play-sessions", "/play-sessions"),
        ("play-sessions-filtered", f"/play-sessions?status=open&subscriber={made['anna']['subscriberId']}"),
        ("play-sessions-error", "/play-sessions?subscriber=nobody"),
        ("operations", "/operations"),
        ("operation", f"/operations/{log['operations'][0]['operationId']}"),
    ]
    for lang in ("en", "ru"):
        await page.goto(browsing.url("/"))
        await page.locator(f"button[name=lang][value={lang}]").click()
        for name, path in pages:
            await page.goto(browsing.url(path))
            await page.wait_for_load_state("networkidle")
            if folder:
                Path(folder).mkdir(parents=True, exist_ok=True)
                shot = Path(folder) / f"watch-{name}-{lang}-{viewport['width']}.png"
                # The whole page, but not 50 rows of a list: its top is what shows the screen.
                height = min(await page.evaluate("document.documentElement.scrollHeight"), 1600)
                clip = {"x": 0, "y": 0, "width": viewport["width"], "height": height}
                await page.screenshot(path=str(shot), full_page=True, clip=clip)
            await check_accessibility(page)
            await check_fits(page)

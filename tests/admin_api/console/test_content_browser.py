"""Channels, Packages and EPG sources in Debian's Chromium: what a person does there,
and every page of the three screens checked (axe-core, no sideways scroll) at 1280 and
390 px, English and Russian."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

from catena import portals
from epg_worker.scheduler import Worker
from tests.admin_api.content_support import data_uri
from tests.admin_api.test_packages import subscribe
from tests.conftest import Api
from tests.epg_worker import conftest as epg
from tests.epg_worker.conftest import GuideServer, document, run_queued, schedule

from .conftest import (
    NARROW,
    WIDE,
    Browsing,
    browser_sign_in,
    check_page,
    striped_logo,
)

pytestmark = pytest.mark.browser

# The EPG tests' fixtures: a guide server on 127.0.0.1, a worker, loopback allowed.
admin_settings = epg.admin_settings
epg_settings = epg.epg_settings
guides = epg.guides
session = epg.session
make_worker = epg.make_worker
worker = epg.worker


async def signed_in(browsing: Browsing, portal: portals.CreatedPortal) -> Any:
    page = await browsing.new_page()
    await browser_sign_in(page, browsing.base, portal.ownerEmail, portal.ownerPassword)
    # Signing in lands on the dashboard; these tests start from Channels.
    await page.get_by_role("link", name="Channels").click()
    await page.wait_for_load_state()
    return page


async def test_package_composition(browsing: Browsing, api: Api, portal: portals.CreatedPortal) -> None:
    await api.post("/channels", {"name": "sport1", "title": "Sport One", "number": 5})
    await api.post("/channels", {"name": "news24", "title": "News 24"})
    page = await signed_in(browsing, portal)
    await page.get_by_role("navigation", name="Sections").get_by_role("link", name="Packages").click()
    await page.get_by_role("link", name="Create package").click()
    await page.get_by_label("Name").fill("basic")
    await page.get_by_label("Description").fill("Everyday channels")
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status")).to_have_text("Package basic created")
    await page.get_by_label("Find a channel").fill("news")
    channel = page.get_by_label("Channel", exact=True)
    await expect(channel.locator("option")).to_have_count(1)
    await page.get_by_role("button", name="Add channel").click()
    await expect(page.get_by_role("status")).to_have_text("Channel added to the package")
    await expect(page.get_by_role("cell", name="News 24", exact=True)).to_be_visible()
    await channel.select_option(label="Sport One (sport1)")
    await page.get_by_role("button", name="Add channel").click()
    await expect(page.get_by_role("cell", name="Sport One", exact=True)).to_be_visible()
    await page.get_by_role("button", name="Remove News 24 from the package").click()
    await expect(page.get_by_role("status")).to_have_text("Channel removed from the package")
    await expect(page.get_by_role("cell", name="News 24", exact=True)).to_have_count(0)
    status, body = await api.get("/packages?name=basic")
    assert body["packages"][0]["channels"] == ["sport1"]
    await page.get_by_role("navigation", name="Sections").get_by_role("link", name="Packages").click()
    await expect(page.get_by_role("row", name="basic")).to_contain_text("Everyday channels")


async def test_forced_package_delete(
    browsing: Browsing, api: Api, portal: portals.CreatedPortal, pool: Any
) -> None:
    status, package = await api.post("/packages", {"name": "basic"})
    await subscribe(pool, portal, package, "9000000001")
    page = await signed_in(browsing, portal)
    await page.goto(browsing.url("/packages"))
    await page.get_by_role("link", name="Delete basic").click()
    await expect(page.get_by_role("note")).to_contain_text("1 subscriber is subscribed to it.")
    await page.get_by_role("button", name="Delete", exact=True).click()
    await expect(page.get_by_role("alert")).to_contain_text("the package cannot be deleted")
    await page.get_by_role("button", name="Delete anyway, ending the subscriptions").click()
    await expect(page.get_by_role("status")).to_have_text("Package basic deleted")


async def test_search_as_you_type(browsing: Browsing, api: Api, portal: portals.CreatedPortal) -> None:
    for name, title in (("sport1", "Sport One"), ("news24", "News 24"), ("kids", "Kids")):
        await api.post("/channels", {"name": name, "title": title})
    page = await signed_in(browsing, portal)
    await page.get_by_label("Search by name or title").fill("spo")
    await expect(page.locator("tbody#rows tr")).to_have_count(1)
    await expect(page.get_by_role("cell", name="Sport One", exact=True)).to_be_visible()
    await expect(page).to_have_url(browsing.url("/channels?q=spo"))


async def test_logo_upload_shown_in_the_list_and_number(
    browsing: Browsing, portal: portals.CreatedPortal
) -> None:
    page = await signed_in(browsing, portal)
    await page.get_by_role("link", name="Create channel").click()
    await page.get_by_label("Name").fill("kids")
    await page.get_by_label("Title").fill("Kids")
    await page.get_by_label("Number").fill("12")
    logo = {"name": "logo.png", "mimeType": "image/png", "buffer": striped_logo()}
    await page.get_by_label("Logo", exact=True).set_input_files(logo)
    await expect(page.get_by_role("img", name="The chosen logo")).to_be_visible()
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status")).to_have_text("Channel kids created")
    thumb = page.get_by_role("img", name="Logo of Kids")
    await expect(thumb).to_be_visible()
    assert await thumb.evaluate("img => img.naturalWidth") == 96
    await expect(page.get_by_role("row", name="Kids")).to_contain_text("12")


async def test_update_now_progress_to_success(
    browsing: Browsing, portal: portals.CreatedPortal, guides: GuideServer, worker: Worker
) -> None:
    url = guides.put("/guide.xml", document(schedule(["one", "two"], 24)))
    page = await signed_in(browsing, portal)
    await page.get_by_role("navigation", name="Sections").get_by_role("link", name="EPG sources").click()
    await page.get_by_role("link", name="Create EPG source").click()
    await page.get_by_label("Name").fill("main-epg")
    await page.get_by_label("URL").fill(url)
    await page.get_by_label("Period (hours)").fill("24")
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status").first).to_have_text("EPG source main-epg created")
    await page.get_by_role("button", name="Update now").click()
    progress = page.locator("#progress")
    await expect(progress).to_contain_text("waiting for the EPG worker")
    await run_queued(worker)
    # The panel asks every second; once the fetch ends the page shows the result.
    await expect(progress).to_contain_text("48 programmes imported for 2 channels", timeout=15_000)
    await expect(progress.locator(".badge")).to_have_text("success")
    await expect(page.locator("dl.details")).to_contain_text("success")
    await page.get_by_role("link", name="Programmes").click()
    await page.get_by_label("EPG channel").select_option("two")
    await page.get_by_role("button", name="Show").click()
    await expect(page.get_by_role("cell", name="Передача 0", exact=False).first).to_be_visible()


# Every page of the three screens, for the checks and the screenshots.


async def _catalogue(api: Api, url: str, pool: Any, portal: portals.CreatedPortal) -> dict[str, str]:
    await api.post("/epg-sources", {"name": "main-epg", "url": url})
    status, sport = await api.post(
        "/channels",
        {
            "name": "sport1",
            "title": "Sport One",
            "number": 1,
            "logo": data_uri(striped_logo()),
            "epgSourceName": "main-epg",
            "epgChannelName": "one",
        },
    )
    await api.post(
        "/channels", {"name": "news24", "title": "News 24", "number": 2, "logo": data_uri(striped_logo(1))}
    )
    await api.post(
        "/channels",
        {"name": "kids", "title": "Kids & Family", "epgSourceName": "main-epg", "epgChannelName": "nine"},
    )
    status, basic = await api.post("/packages", {"name": "basic", "description": "The basic package"})
    await api.post("/packages", {"name": "premium", "description": "Films and sport in HD"})
    await api.post("/channels-packages", {"channelId": sport["channelId"], "packageId": basic["packageId"]})
    await subscribe(pool, portal, basic, "9000000001")
    status, sources = await api.get("/epg-sources")
    return {
        "sport": sport["channelId"],
        "basic": basic["packageId"],
        "source": sources["epgSources"][0]["epgSourceId"],
    }


@pytest.mark.parametrize("viewport", [WIDE, NARROW], ids=["1280px", "390px"])
async def test_every_content_page_is_accessible_and_fits(
    request: pytest.FixtureRequest,
    browsing: Browsing,
    api: Api,
    portal: portals.CreatedPortal,
    guides: GuideServer,
    worker: Worker,
    pool: Any,
    viewport: dict[str, int],
) -> None:
    guide = guides.put("/guide.xml", document(schedule(["one", "two"], 30)))
    ids = await _catalogue(api, guide, pool, portal)
    await api.post(f"/epg-sources/{ids['source']}/update")
    await run_queued(worker)
    folder = request.config.getoption("--console-screenshots")
    page = await browsing.new_page()
    await page.set_viewport_size(viewport)
    await browser_sign_in(page, browsing.base, portal.ownerEmail, portal.ownerPassword)
    paths = [
        ("channels", "/channels"),
        ("channels-search", "/channels?q=sport"),
        ("channel-new", "/channels/new"),
        ("channel-edit", f"/channels/{ids['sport']}"),
        ("channel-delete", f"/channels/{ids['sport']}/delete"),
        ("packages", "/packages"),
        ("package-new", "/packages/new"),
        ("package", f"/packages/{ids['basic']}"),
        ("package-edit", f"/packages/{ids['basic']}/edit"),
        ("package-delete", f"/packages/{ids['basic']}/delete"),
        ("epg-sources", "/epg-sources"),
        ("epg-source-new", "/epg-sources/new"),
        ("epg-source", f"/epg-sources/{ids['source']}"),
        ("epg-source-waiting", f"/epg-sources/{ids['source']}?job=queued"),
        ("epg-source-edit", f"/epg-sources/{ids['source']}/edit"),
        ("epg-programmes", f"/epg-sources/{ids['source']}/programs?epgChannelName=one"),
        ("epg-source-delete", f"/epg-sources/{ids['source']}/delete"),
    ]
    for lang in ("en", "ru"):
        if lang == "ru":
            await page.get_by_role("button", name="Русский").click()
        for name, path in paths:
            await page.goto(browsing.url(path))
            await check_page(page, folder, name)

"""The Subscribers screens in Debian's Chromium (Playwright): what a person does there."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from playwright.async_api import expect

from catena import ids, portals
from tests.conftest import Api

from .conftest import (
    NARROW,
    WIDE,
    Browsing,
    browser_sign_in,
    check_page,
    make_manager,
)
from .test_subscribers_pages import add_session, make_package, make_subscriber

pytestmark = pytest.mark.browser


async def owner_page(browsing: Browsing, portal: portals.CreatedPortal) -> Any:
    page = await browsing.new_page()
    await browser_sign_in(page, browsing.base, portal.ownerEmail, portal.ownerPassword)
    await page.goto(browsing.url("/subscribers"))
    return page


async def test_create_edit_and_delete_a_subscriber(
    browsing: Browsing, api: Api, portal: portals.CreatedPortal
) -> None:
    page = await owner_page(browsing, portal)
    await expect(page.get_by_text("No subscribers yet.")).to_be_visible()
    await page.get_by_role("link", name="Create subscriber").click()
    await page.get_by_label("Phone country code").fill("7")
    await page.get_by_label("Phone", exact=True).fill("9161234567")
    await page.get_by_label("Name").fill("Иван Петров")
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status")).to_have_text("Subscriber Иван Петров created")
    await expect(page.get_by_role("heading", name="Иван Петров")).to_be_visible()

    await page.get_by_role("link", name="Edit").click()
    await page.get_by_label("Name").fill("Иван Сидоров")
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status")).to_have_text("Subscriber Иван Сидоров saved")

    await page.get_by_role("link", name="Delete").click()
    await expect(page.get_by_role("note")).to_contain_text("history of play sessions is kept")
    await page.get_by_role("button", name="Delete").click()
    await expect(page.get_by_role("status")).to_have_text("Subscriber Иван Сидоров deleted")
    await expect(page.get_by_text("No subscribers yet.")).to_be_visible()
    status, body = await api.get("/subscribers")
    assert body["subscribers"] == []


async def test_a_taken_phone_is_named_beside_its_field(
    browsing: Browsing, api: Api, portal: portals.CreatedPortal
) -> None:
    await make_subscriber(api)
    page = await owner_page(browsing, portal)
    await page.goto(browsing.url("/subscribers/new"))
    await page.get_by_label("Phone country code").fill("7")
    await page.get_by_label("Phone", exact=True).fill("9161234567")
    await page.get_by_label("Name").fill("Again")
    await page.get_by_role("button", name="Save").click()
    phone = page.get_by_label("Phone", exact=True)
    await expect(phone).to_have_attribute("aria-invalid", "true")
    await expect(phone).to_have_accessible_description("A subscriber with this phone number already exists")


async def test_search_as_you_type(browsing: Browsing, api: Api, portal: portals.CreatedPortal) -> None:
    await make_subscriber(api)
    await make_subscriber(api, "Пётр Фёдоров", "9035550101")
    page = await owner_page(browsing, portal)
    rows = page.locator("tbody#rows tr")
    await expect(rows).to_have_count(2)
    await page.evaluate("window.notReloaded = true")
    await page.get_by_label("Search by phone or name").press_sequentially("903 555")
    await expect(rows).to_have_count(1)
    await expect(page.get_by_role("cell", name="Пётр Фёдоров")).to_be_visible()
    await expect(page).to_have_url(browsing.url("/subscribers?q=903%20555&disabled="))
    await page.get_by_label("Search by phone or name").fill("федор")
    await page.get_by_label("Search by phone or name").press("Enter")
    await expect(rows).to_have_count(1)
    await page.get_by_label("Search by phone or name").fill("")
    await page.get_by_label("Status").select_option(label="Disabled")
    await expect(page.get_by_text("No subscribers match.")).to_be_visible()
    assert await page.evaluate("window.notReloaded") is True


async def test_subscribe_unsubscribe_disable_enable_and_reset_the_token(
    browsing: Browsing, api: Api, portal: portals.CreatedPortal
) -> None:
    ivan = await make_subscriber(api)
    await make_package(api, "premium")
    await make_package(api, "basic", free=True)
    page = await owner_page(browsing, portal)
    await page.get_by_role("link", name="Иван Петров").click()
    packages = page.locator(".package-list")
    await expect(packages.locator("li.free")).to_contain_text("basic")
    await expect(packages.get_by_role("button")).to_have_count(0)  # a free package is not removable

    await page.get_by_label("Package", exact=True).select_option(label="premium")
    await page.get_by_role("button", name="Add package").click()
    await expect(page.get_by_role("status")).to_have_text("Package premium added")
    await page.get_by_role("button", name="Remove package premium").click()
    await expect(page.get_by_role("status")).to_have_text("Package premium removed")
    await expect(packages.get_by_role("button")).to_have_count(0)

    await page.get_by_label("Reason").fill("неоплата")
    await page.get_by_role("button", name="Disable").click()
    await expect(page.get_by_role("status")).to_have_text("Subscriber Иван Петров disabled")
    await expect(page.get_by_text("Disabled: неоплата")).to_be_visible()
    await page.get_by_role("button", name="Enable").click()
    await expect(page.get_by_role("status")).to_have_text("Subscriber Иван Петров enabled")

    old_link = await page.get_by_label("Playlist link").input_value()
    await page.get_by_role("link", name="Reset playback token").click()
    await expect(page.get_by_role("note")).to_contain_text("stops working at once")
    await page.get_by_role("button", name="Reset playback token").click()
    await expect(page.get_by_role("status")).to_have_text("A new playback token was issued to Иван Петров")
    new_link = await page.get_by_label("Playlist link").input_value()
    assert new_link != old_link
    status, after = await api.get(f"/subscribers/{ivan['subscriberId']}")
    assert new_link.endswith(after["playback_token"].replace("=", "%3D"))
    await page.get_by_role("button", name="Copy").click()
    await expect(page.get_by_role("button", name="Copied")).to_be_visible()
    types = [row for row in await page.locator("#operations tbody td:nth-child(2)").all_inner_texts()]
    assert types == [
        "Created",
        "Package added",
        "Package removed",
        "Disabled",
        "Enabled",
        "Playback token reset",
    ]


async def test_times_show_in_the_browsers_time_zone(
    browsing: Browsing, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    ivan = await make_subscriber(api)
    await pool.execute(
        "UPDATE subscribers SET last_activity_at = '2026-11-30T18:05:00Z' WHERE id = $1",
        ids.decode(ivan["subscriberId"]),
    )
    page = await owner_page(browsing, portal)  # the context's zone is Europe/Moscow (UTC+3)
    await expect(page.locator("tbody#rows time")).to_have_text("Nov 30, 2026, 9:05 PM")


async def test_a_manager_without_the_subscriber_flag_sees_no_write_controls(
    browsing: Browsing, api: Api, portal: portals.CreatedPortal
) -> None:
    await make_subscriber(api)
    await make_manager(api, "reader@example.com")
    page = await browsing.new_page()
    await browser_sign_in(page, browsing.base, "reader@example.com")
    await page.goto(browsing.url("/subscribers"))
    await expect(page.get_by_role("link", name="Create subscriber")).to_have_count(0)
    await page.get_by_role("link", name="Иван Петров").click()
    await expect(page.get_by_role("heading", name="Иван Петров")).to_be_visible()
    for name in ("Edit", "Delete", "Reset playback token"):
        await expect(page.get_by_role("link", name=name)).to_have_count(0)
    for name in ("Disable", "Add package"):
        await expect(page.get_by_role("button", name=name)).to_have_count(0)
    await expect(page.get_by_label("Playlist link")).to_be_visible()


# Every Subscribers page, English and Russian, at 1280 and 390 px.


async def _tour_data(api: Api, pool: asyncpg.Pool, portal: portals.CreatedPortal) -> dict[str, str]:
    premium = await make_package(api, "premium")
    await make_package(api, "basic", free=True)
    await make_package(api, "sport")
    ivan = await make_subscriber(api)
    await api.post("/packages-subscribers", {"subscriberId": ivan["subscriberId"], "packageId": premium})
    petr = await make_subscriber(api, "Пётр Фёдоров", "9035550101")
    await api.post(f"/subscribers/{petr['subscriberId']}/disable", {"reason": "неоплата"})
    await make_subscriber(api, "Алесь Иваненко", "291234567")
    await add_session(pool, portal, ivan["subscriberId"], active=True)
    await add_session(pool, portal, ivan["subscriberId"], active=False)
    await pool.execute(
        "UPDATE subscribers SET last_activity_at = now() WHERE id = $1",
        ids.decode(ivan["subscriberId"]),
    )
    return {"ivan": ivan["subscriberId"], "petr": petr["subscriberId"]}


@pytest.mark.parametrize("viewport", [WIDE, NARROW], ids=["1280px", "390px"])
async def test_every_subscribers_page_is_accessible_and_fits(
    request: pytest.FixtureRequest,
    browsing: Browsing,
    api: Api,
    portal: portals.CreatedPortal,
    pool: asyncpg.Pool,
    viewport: dict[str, int],
) -> None:
    folder = request.config.getoption("--console-screenshots")
    made = await _tour_data(api, pool, portal)
    page = await browsing.new_page()
    await page.set_viewport_size(viewport)
    await browser_sign_in(page, browsing.base, portal.ownerEmail, portal.ownerPassword)

    async def visit(name: str) -> None:
        await check_page(page, folder, name)

    card = f"/subscribers/{made['ivan']}"
    for lang in ("en", "ru"):
        if lang == "ru":
            await page.locator("button[name=lang][value=ru]").click()
        for name, path in [
            ("subscribers", "/subscribers"),
            ("subscribers-search", "/subscribers?q=%D0%B8%D0%B2"),
            ("subscriber-new", "/subscribers/new"),
            ("subscriber", card),
            ("subscriber-disabled", f"/subscribers/{made['petr']}"),
            ("subscriber-edit", card + "/edit"),
            ("subscriber-reset-token", card + "/reset-token"),
            ("subscriber-delete", card + "/delete"),
            ("subscriber-past-sessions", card + "/sessions"),
            ("subscriber-operations", card + "/operations"),
        ]:
            await page.goto(browsing.url(path))
            await visit(name)
        await page.goto(browsing.url("/subscribers/new"))
        await page.locator("#f-phoneCountryCode").fill("7")
        await page.locator("#f-phone").fill("9161234567")
        await page.locator("#f-name").fill("Again")
        await page.locator("form.stacked button[type=submit]").click()
        await visit("subscriber-new-error")

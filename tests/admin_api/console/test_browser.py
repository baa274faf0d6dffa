"""What a person does in the console, in Debian's Chromium (Playwright)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import expect

from catena import portals
from tests.admin_api.content_support import data_uri, png
from tests.conftest import Api

from .conftest import NARROW, WIDE, Browsing, browser_sign_in, check_accessibility, check_fits, make_manager

pytestmark = pytest.mark.browser


def logo_file(data: bytes) -> dict[str, Any]:
    return {"name": "logo.png", "mimeType": "image/png", "buffer": data}


async def test_sign_in_and_sign_out(browsing: Browsing, portal: portals.CreatedPortal) -> None:
    page = await browsing.new_page()
    await page.goto(browsing.url("/channels"))
    await expect(page).to_have_url(browsing.url("/sign-in?next=%2Fchannels"))
    await page.get_by_label("Email").fill(portal.ownerEmail)
    await page.get_by_label("Password").fill(portal.ownerPassword)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(browsing.url("/channels"))
    await expect(page.get_by_role("heading", name="Channels")).to_be_visible()
    await expect(
        page.get_by_role("navigation", name="Sections").get_by_role("link", name="Channels")
    ).to_have_attribute("aria-current", "page")
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(browsing.url("/sign-in"))
    await expect(page.get_by_role("status")).to_have_text("You have signed out.")
    await page.goto(browsing.url("/channels"))
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


async def test_wrong_password(browsing: Browsing, portal: portals.CreatedPortal) -> None:
    page = await browsing.new_page()
    await browser_sign_in(page, browsing.base, portal.ownerEmail, "not-the-password")
    await expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
    await expect(page.get_by_label("Email")).to_have_value(portal.ownerEmail)
    await expect(page.get_by_label("Password")).to_have_value("")


async def test_a_manager_of_two_portals_picks_and_switches(
    browsing: Browsing, client: Any, make_portal: Any
) -> None:
    first, second = await make_portal("alpha"), await make_portal("beta")
    for portal, title in ((first, "Alpha TV"), (second, "Beta TV")):
        api = Api(client, portal.apiKey)
        await make_manager(api, "both@example.com", isContentAdmin=True)
        await api.post("/channels", {"name": "ch1", "title": title})
    page = await browsing.new_page()
    await browser_sign_in(page, browsing.base, "both@example.com")
    await expect(page.get_by_role("heading", name="Choose a portal")).to_be_visible()
    await page.get_by_role("button", name="beta").click()
    await page.get_by_role("link", name="Channels", exact=True).click()  # sign-in lands on the dashboard
    await expect(page.get_by_role("cell", name="Beta TV", exact=True)).to_be_visible()
    await page.get_by_label("Portal").select_option(label="alpha")
    await page.get_by_role("button", name="Switch").click()
    await expect(page.get_by_role("status")).to_have_text("Portal alpha")
    await expect(page.get_by_role("cell", name="Alpha TV", exact=True)).to_be_visible()
    await expect(page.get_by_role("cell", name="Beta TV", exact=True)).to_have_count(0)


async def test_create_edit_and_delete_a_channel_with_a_logo(
    browsing: Browsing, api: Api, portal: portals.CreatedPortal
) -> None:
    await api.post("/epg-sources", {"name": "main-epg", "url": "https://epg.example.com/guide.xml"})
    page = await browsing.new_page()
    await browser_sign_in(page, browsing.base, portal.ownerEmail, portal.ownerPassword)
    await page.get_by_role("link", name="Channels", exact=True).click()  # sign-in lands on the dashboard
    await page.get_by_role("link", name="Create channel").click()
    await page.get_by_label("Name").fill("sport1")
    await page.get_by_label("Title").fill("Sport One")
    await page.get_by_label("Logo", exact=True).set_input_files(logo_file(png(8, 6)))
    await expect(page.get_by_role("img", name="The chosen logo")).to_be_visible()
    await page.get_by_label("EPG source").select_option("main-epg")
    await expect(page.get_by_label("EPG channel")).to_have_attribute(
        "aria-describedby", "epgChannelName-hint"
    )
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status")).to_have_text("Channel sport1 created")
    logo = page.get_by_role("img", name="Logo of Sport One")
    await expect(logo).to_be_visible()
    assert await logo.evaluate("img => img.naturalWidth") == 8
    await expect(page.get_by_role("row", name="Sport One")).to_contain_text("not linked")

    await page.get_by_role("link", name="Edit Sport One").click()
    await page.get_by_label("Title").fill("Sport HD")
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status")).to_have_text("Channel sport1 saved")
    await expect(page.get_by_role("cell", name="Sport HD", exact=True)).to_be_visible()

    await page.get_by_role("link", name="Delete Sport HD").click()
    await expect(page.get_by_role("note")).to_contain_text("removed from every package")
    await page.get_by_role("button", name="Delete").click()
    await expect(page.get_by_role("status")).to_have_text("Channel sport1 deleted")
    await expect(page.get_by_text("No channels yet.")).to_be_visible()


async def test_a_field_error_shows_beside_its_field(
    browsing: Browsing, api: Api, portal: portals.CreatedPortal
) -> None:
    await api.post("/channels", {"name": "sport1", "title": "Sport"})
    page = await browsing.new_page()
    await browser_sign_in(page, browsing.base, portal.ownerEmail, portal.ownerPassword)
    await page.goto(browsing.url("/channels/new"))
    await page.get_by_label("Name").fill("sport1")
    await page.get_by_label("Title").fill("Again")
    await page.get_by_role("button", name="Save").click()
    name = page.get_by_label("Name")
    await expect(name).to_have_attribute("aria-invalid", "true")
    await expect(name).to_have_accessible_description("Name must be unique")


async def test_a_manager_without_flags_sees_no_write_controls(
    browsing: Browsing, api: Api, portal: portals.CreatedPortal
) -> None:
    await api.post("/channels", {"name": "sport1", "title": "Sport", "logo": data_uri(png())})
    await make_manager(api, "reader@example.com")
    page = await browsing.new_page()
    await browser_sign_in(page, browsing.base, "reader@example.com")
    await page.get_by_role("link", name="Channels", exact=True).click()  # sign-in lands on the dashboard
    await expect(page.get_by_role("cell", name="Sport", exact=True)).to_be_visible()
    await expect(page.get_by_role("link", name="Create channel")).to_have_count(0)
    await expect(page.get_by_role("link", name="Edit")).to_have_count(0)
    await expect(page.get_by_role("link", name="Delete")).to_have_count(0)
    await page.get_by_role("link", name="Sport", exact=True).click()
    await expect(page.get_by_role("heading", name="Sport")).to_be_visible()
    await expect(page.get_by_role("button", name="Save")).to_have_count(0)
    await expect(page.get_by_role("textbox")).to_have_count(0)


async def test_a_cross_site_post_is_refused(
    browsing: Browsing, api: Api, portal: portals.CreatedPortal, aiohttp_server: Any
) -> None:
    target = browsing.url("/channels/new")

    async def evil(request: web.Request) -> web.Response:
        html = (
            f'<form method="post" action="{target}"><input name="name" value="evil">'
            '<input name="title" value="Evil"><button>Win a prize</button></form>'
        )
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", evil)
    server = await aiohttp_server(app, host="localhost")
    page = await browsing.new_page()
    await browser_sign_in(page, browsing.base, portal.ownerEmail, portal.ownerPassword)
    await page.goto(f"http://localhost:{server.port}/")
    await page.get_by_role("button", name="Win a prize").click()
    await expect(page.get_by_role("alert")).to_contain_text("did not come from this console")
    status, body = await api.get("/channels")
    assert body["channels"] == []


async def test_the_russian_interface(browsing: Browsing, portal: portals.CreatedPortal) -> None:
    page = await browsing.new_page()
    await browser_sign_in(page, browsing.base, portal.ownerEmail, portal.ownerPassword)
    await page.get_by_role("button", name="Русский").click()
    nav = page.get_by_role("navigation", name="Разделы")
    await nav.get_by_role("link", name="Каналы").click()
    await expect(page.get_by_role("link", name="Создать канал")).to_be_visible()
    await expect(page.locator("html")).to_have_attribute("lang", "ru")
    await page.get_by_role("button", name="Выйти").click()
    await expect(page.get_by_role("button", name="Войти")).to_be_visible()
    await expect(page.get_by_label("Пароль")).to_be_visible()


async def test_russian_follows_the_browsers_language(browser: Any, client: Any) -> None:
    context = await browser.new_context(locale="ru-RU")
    page = await context.new_page()
    await page.goto(str(client.make_url("/sign-in")))
    await expect(page.get_by_role("heading", name="Войти")).to_be_visible()
    await context.close()


@pytest.mark.parametrize("viewport", [WIDE, NARROW], ids=["1280px", "390px"])
async def test_every_page_is_accessible_and_fits(
    browsing: Browsing, viewport: dict[str, int], tour: Any
) -> None:
    page = await browsing.new_page()
    await page.set_viewport_size(viewport)
    await tour(page, check_accessibility, check_fits)


async def test_next_page_appends_rows_without_reloading(
    browsing: Browsing, api: Api, portal: portals.CreatedPortal
) -> None:
    for n in range(53):
        await api.post("/channels", {"name": f"ch{n:02}", "title": f"Channel {n:02}"})
    page = await browsing.new_page()
    await browser_sign_in(page, browsing.base, portal.ownerEmail, portal.ownerPassword)
    await page.get_by_role("link", name="Channels", exact=True).click()  # sign-in lands on the dashboard
    rows = page.locator("tbody#rows tr")
    await expect(rows).to_have_count(51)  # 50 channels and the "Next page" row
    await page.evaluate("window.notReloaded = true")
    await page.get_by_role("link", name="Next page").click()
    await expect(rows).to_have_count(53)
    await expect(page.get_by_role("cell", name="Channel 52", exact=True)).to_be_visible()
    assert await page.evaluate("window.notReloaded") is True
    assert page.url == browsing.url("/channels")

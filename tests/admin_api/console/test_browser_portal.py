"""Managers and Portal settings in Debian's Chromium (Playwright): what a person does,
accessibility and layout of every page at 1280 and 390 px, English and Russian."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from playwright.async_api import expect

from catena import portals
from catena.settings import AdminSettings
from tests.admin_api.content_support import png
from tests.conftest import Api

from .conftest import (
    NARROW,
    WIDE,
    Browsing,
    browser_sign_in,
    check_page,
    make_manager,
    striped_logo,
)

pytestmark = pytest.mark.browser


@pytest.fixture
def admin_settings(admin_settings: AdminSettings) -> AdminSettings:
    """Webhooks on loopback are allowed here, as in the webhook tests."""
    return msgspec.structs.replace(admin_settings, outbound_allow="127.0.0.0/8,::1/128")


async def signed_in_owner(browsing: Browsing, portal: portals.CreatedPortal) -> Any:
    page = await browsing.new_page()
    await browser_sign_in(page, browsing.base, portal.ownerEmail, portal.ownerPassword)
    return page


async def test_create_edit_and_delete_a_manager(
    browsing: Browsing, api: Api, portal: portals.CreatedPortal
) -> None:
    page = await signed_in_owner(browsing, portal)
    await page.get_by_role("navigation", name="Sections").get_by_role("link", name="Managers").click()
    owner_row = page.get_by_role("row", name=portal.ownerEmail)
    await expect(owner_row).to_contain_text("owner")
    await expect(owner_row.get_by_role("cell").nth(3).locator("time")).to_have_count(1)  # signed in just now
    await page.get_by_role("link", name="Create manager").click()
    await page.get_by_label("Email").fill("content@example.com")
    await page.get_by_label("Name").fill("Контент-менеджер")
    await page.get_by_label("Password").fill("SecurePassword123!")
    await page.get_by_label("Content administrator (isContentAdmin)").check()
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status")).to_have_text("Manager content@example.com created")
    row = page.get_by_role("row", name="content@example.com")
    await expect(row).to_contain_text("isContentAdmin")
    await expect(row).to_contain_text("never")

    await page.get_by_role("link", name="Edit content@example.com").click()
    await page.get_by_label("Subscriber administrator (isSubscriberAdmin)").check()
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status")).to_have_text("Manager content@example.com saved")
    await expect(row).to_contain_text("isSubscriberAdmin")

    await page.get_by_role("link", name="Delete content@example.com").click()
    await expect(page.get_by_role("note")).to_contain_text("loses access to the console and the API at once")
    await page.get_by_role("button", name="Delete").click()
    await expect(page.get_by_role("status")).to_have_text("Manager content@example.com deleted")
    await expect(page.get_by_role("row", name="content@example.com")).to_have_count(0)


async def test_the_last_admin_is_refused_beside_the_box(
    browsing: Browsing, api: Api, portal: portals.CreatedPortal
) -> None:
    last = await make_manager(api, "admin@example.com", isAdmin=True)
    page = await signed_in_owner(browsing, portal)
    await page.goto(browsing.url(f"/managers/{last['managerId']}"))
    await page.get_by_label("Administrator (isAdmin)").uncheck()
    await page.get_by_role("button", name="Save").click()
    box = page.get_by_label("Administrator (isAdmin)")
    await expect(box).to_have_attribute("aria-invalid", "true")
    await expect(box).to_have_accessible_description("the portal's last isAdmin manager cannot be removed")
    status, after = await api.get(f"/managers/{last['managerId']}")
    assert after["isAdmin"] is True


async def test_own_rights_are_offered_disabled(
    browsing: Browsing, api: Api, portal: portals.CreatedPortal
) -> None:
    me = await make_manager(api, "admin@example.com", isAdmin=True)
    await make_manager(api, "admin2@example.com", isAdmin=True)
    page = await browsing.new_page()
    await browser_sign_in(page, browsing.base, "admin@example.com")
    await page.goto(browsing.url(f"/managers/{me['managerId']}"))
    await expect(page.get_by_label("Administrator (isAdmin)")).to_be_disabled()
    await expect(page.get_by_role("group", name="Rights")).to_have_accessible_description(
        "a manager cannot change their own permissions"
    )
    await page.get_by_label("Name").fill("Me myself")
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status")).to_have_text("Manager admin@example.com saved")
    status, after = await api.get(f"/managers/{me['managerId']}")
    assert (after["name"], after["isAdmin"]) == ("Me myself", True)


async def test_portal_branding_and_settings(
    browsing: Browsing, api: Api, portal: portals.CreatedPortal
) -> None:
    page = await signed_in_owner(browsing, portal)
    await page.get_by_role("navigation", name="Sections").get_by_role("link", name="Portal").click()
    await expect(page.get_by_role("heading", name="Portal settings")).to_be_visible()
    branding = page.locator("#branding")
    await branding.get_by_label("Title").fill("Premium TV")
    await branding.get_by_label("Logo", exact=True).set_input_files(
        {"name": "logo.png", "mimeType": "image/png", "buffer": png(10, 10)}
    )
    await expect(branding.get_by_role("img", name="The chosen logo")).to_be_visible()
    await branding.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status")).to_have_text("Branding saved")
    logo = page.locator("#branding").get_by_role("img", name="The chosen logo")
    assert await logo.evaluate("img => img.naturalWidth") == 10

    settings = page.locator("#settings")
    await expect(settings.get_by_label("Gateway URL")).to_be_hidden()
    await settings.get_by_label("Session limit").fill("4")
    await settings.get_by_label("When the limit is reached").select_option(label="End the oldest session")
    await settings.get_by_label("Archive depth (days)").fill("3")
    await settings.get_by_label("Create subscribers automatically").check()
    await settings.get_by_label("Gateway", exact=True).select_option("http")
    await settings.get_by_label("Gateway URL").fill("https://sms.example.com/send")
    await settings.get_by_label("Headers").fill("Authorization: Bearer s3cr3t")
    await settings.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status")).to_have_text("Settings saved")
    status, body = await api.get("/portal")
    assert body["branding"]["title"] == "Premium TV"
    assert (body["settings"]["maxSessions"], body["settings"]["sessionLimitPolicy"]) == (4, "evict_oldest")
    assert (body["settings"]["archiveDays"], body["settings"]["autoCreateSubscribers"]) == (3, True)
    assert body["settings"]["smsGateway"]["url"] == "https://sms.example.com/send"
    assert body["settings"]["smsGateway"]["headers"] == {"Authorization": "Bearer s3cr3t"}

    # The browser checks the range itself; without that check the API's refusal shows.
    await settings.get_by_label("Auth duration (seconds)").fill("5")
    await settings.locator("form").evaluate("form => form.noValidate = true")
    await settings.get_by_role("button", name="Save").click()
    field = page.locator("#settings").get_by_label("Auth duration (seconds)")
    await expect(field).to_have_attribute("aria-invalid", "true")
    await expect(field).to_have_accessible_description("Expected `int` >= 10 - at `$.settings.authDuration`")


async def test_copy_and_regenerate_the_api_key(
    browsing: Browsing, api: Api, portal: portals.CreatedPortal
) -> None:
    await browsing.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = await signed_in_owner(browsing, portal)
    await page.goto(browsing.url("/portal"))
    key = page.get_by_role("textbox", name="API key")
    await expect(key).to_have_value(portal.apiKey)
    await page.locator("#api-key").get_by_role("button", name="Copy").click()
    await expect(page.locator("#api-key").get_by_role("button", name="Copied")).to_be_visible()
    assert await page.evaluate("navigator.clipboard.readText()") == portal.apiKey
    await page.get_by_role("link", name="Regenerate").click()
    await expect(page.get_by_role("note")).to_contain_text("The old API key stops working at once")
    await page.get_by_role("button", name="Regenerate").click()
    await expect(page.get_by_role("status")).to_contain_text("A new API key was issued.")
    new_key = await page.get_by_role("textbox", name="API key").input_value()
    assert new_key != portal.apiKey
    status, _ = await api.get("/channels")
    assert status == 401
    status, _ = await api.as_(new_key).get("/channels")
    assert status == 200


async def test_free_packages_and_webhooks(
    browsing: Browsing, api: Api, portal: portals.CreatedPortal
) -> None:
    await api.post("/packages", {"name": "basic"})
    page = await signed_in_owner(browsing, portal)
    await page.goto(browsing.url("/portal"))
    free = page.locator("#free-packages")
    await free.get_by_label("Package").select_option(label="basic")
    await expect(free.get_by_label("Package")).to_have_accessible_description(
        "Every subscriber of the portal gets its channels at once."
    )
    await free.get_by_role("button", name="Add package").click()
    await expect(page.get_by_role("status")).to_have_text("Package basic is free now")
    await page.get_by_role("link", name="Remove basic from the free packages").click()
    await expect(page.get_by_role("note")).to_contain_text("lose access to its channels at once")
    await page.get_by_role("button", name="Remove").click()
    await expect(page.get_by_role("status")).to_have_text("Package basic is no longer free")
    await expect(page.locator("#free-packages")).to_contain_text("No free packages.")

    hooks = page.locator("#webhooks")
    await hooks.get_by_label("URL").fill("http://127.0.0.1:9/catena")
    await hooks.get_by_role("button", name="Create webhook").click()
    await expect(page.get_by_role("heading", name="Webhook created")).to_be_visible()
    secret = await page.get_by_role("textbox", name="Secret").input_value()
    assert len(secret) >= 32
    await page.get_by_role("link", name="Done").click()
    row = page.locator("#webhooks").get_by_role("row", name="http://127.0.0.1:9/catena")
    await expect(row).to_be_visible()
    assert secret not in await page.content()
    await row.get_by_role("button", name="Retry http://127.0.0.1:9/catena now").click()
    await expect(page.get_by_role("status")).to_have_text(
        "Delivery to http://127.0.0.1:9/catena is tried now"
    )
    await page.get_by_role("link", name="Delete http://127.0.0.1:9/catena").click()
    await page.get_by_role("button", name="Delete").click()
    await expect(page.get_by_role("status")).to_have_text("Webhook http://127.0.0.1:9/catena deleted")
    await expect(page.locator("#webhooks")).to_contain_text("No webhooks.")


async def test_a_manager_without_flags_sees_no_write_controls(
    browsing: Browsing, api: Api, portal: portals.CreatedPortal
) -> None:
    await make_manager(api, "reader@example.com")
    page = await browsing.new_page()
    await browser_sign_in(page, browsing.base, "reader@example.com")
    await page.goto(browsing.url("/managers"))
    await expect(page.get_by_role("row", name="reader@example.com")).to_be_visible()
    await expect(page.get_by_role("link", name="Create manager")).to_have_count(0)
    await expect(page.get_by_role("link", name="Edit")).to_have_count(0)
    await page.goto(browsing.url("/portal"))
    await expect(page.get_by_role("heading", name="Portal settings")).to_be_visible()
    await expect(page.locator("main").get_by_role("button")).to_have_count(0)
    await expect(page.locator("main").get_by_role("textbox")).to_have_count(0)
    await expect(
        page.get_by_text("Only the portal owner and isAdmin managers see the API key.")
    ).to_be_visible()


# Every page of these sections, both languages, both widths.


async def _tour_data(api: Api) -> dict[str, str]:
    from tests.admin_api.content_support import data_uri

    staff = await make_manager(api, "support@example.com", isSubscriberAdmin=True)
    await make_manager(api, "cto@example.com", isAdmin=True, isContentAdmin=True)
    await make_manager(api, "analyst@example.com")
    status, basic = await api.post("/packages", {"name": "basic"})
    await api.post("/packages", {"name": "premium"})
    await api.post(f"/portal/free-packages/{basic['packageId']}")
    await api.put(
        "/portal",
        {
            "branding": {
                "title": "Demo TV",
                "description": "The demo portal",
                "logo": data_uri(striped_logo()),
            }
        },
    )
    status, hook = await api.post("/webhooks", {"url": "http://127.0.0.1:9/billing/catena"})
    return {"staff": staff["managerId"], "basic": basic["packageId"], "hook": hook["webhookId"]}


@pytest.mark.parametrize("viewport", [WIDE, NARROW], ids=["1280px", "390px"])
async def test_every_page_is_accessible_and_fits(
    request: pytest.FixtureRequest,
    browsing: Browsing,
    client: Any,
    make_portal: Any,
    viewport: dict[str, int],
) -> None:
    folder = request.config.getoption("--console-screenshots")
    portal = await make_portal("demo", owner_email="owner@demo.localhost")
    api = Api(client, portal.apiKey)
    ids = await _tour_data(api)
    await api.as_(None).post("/login", {"email": portal.ownerEmail, "password": portal.ownerPassword})
    page = await browsing.new_page()
    await page.set_viewport_size(viewport)

    async def visit(name: str) -> None:
        await check_page(page, folder, name)

    for lang in ("en", "ru"):
        await page.goto(browsing.url("/sign-in"))
        await page.locator(f"button[name=lang][value={lang}]").click()
        await page.locator("#f-email").fill(portal.ownerEmail)
        await page.locator("#f-password").fill(portal.ownerPassword)
        await page.locator("form.stacked button[type=submit]").click()
        nav = page.get_by_role("navigation", name="Sections" if lang == "en" else "Разделы")
        for label in ("Managers", "Portal") if lang == "en" else ("Менеджеры", "Настройки портала"):
            await expect(nav.get_by_role("link", name=label, exact=True)).to_be_visible()
        for name, path in [
            ("managers", "/managers"),
            ("manager-new", "/managers/new"),
            ("manager-edit", f"/managers/{ids['staff']}"),
            ("manager-owner", f"/managers/{portal.ownerId}"),
            ("manager-delete", f"/managers/{ids['staff']}/delete"),
            ("portal", "/portal"),
            ("portal-api-key", "/portal/api-key"),
            ("portal-free-remove", f"/portal/free-packages/{ids['basic']}/remove"),
            ("portal-webhook-delete", f"/portal/webhooks/{ids['hook']}/delete"),
        ]:
            await page.goto(browsing.url(path))
            await visit(name)
        # Pages that answer a form: an error beside its field, the secret shown once.
        await page.goto(browsing.url("/managers/new"))
        await page.locator("#f-email").fill("support@example.com")
        await page.locator("#f-name").fill("Support")
        await page.locator("#f-password").fill("Support-Pass-123!")
        await page.locator("form.stacked button[type=submit]").click()
        await visit("manager-new-error")
        await page.goto(browsing.url("/portal"))
        await page.locator('[id="f-settings.maxSessions"]').fill("0")
        await page.locator("#settings button[type=submit]").evaluate("b => b.form.noValidate = true")
        await page.locator("#settings button[type=submit]").click()
        await visit("portal-settings-error")
        await page.goto(browsing.url("/portal"))
        await page.locator("#f-url").fill(f"http://127.0.0.1:9/{lang}")
        await page.locator("form[action='/portal/webhooks'] button").click()
        await visit("portal-webhook-created")
        await page.locator("form[action='/sign-out'] button").click()

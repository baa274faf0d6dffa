"""Portal settings through the test client: branding, settings, the API key, free
packages and webhooks, each through the action its JSON endpoint calls."""

from __future__ import annotations

import io
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import FormData, web

from admin_api import webhook_delivery
from catena import portals
from catena.settings import AdminSettings
from tests.admin_api.content_support import png
from tests.conftest import Api

from .conftest import Console, make_manager
from .test_managers_pages import error_beside


@pytest.fixture
def admin_settings(admin_settings: AdminSettings) -> AdminSettings:
    """Webhooks and SMS gateways on loopback are allowed here, as in the webhook tests."""
    return msgspec.structs.replace(admin_settings, outbound_allow="127.0.0.0/8,::1/128")


async def owner(console: Console, portal: portals.CreatedPortal) -> Console:
    await console.sign_in(portal.ownerEmail, portal.ownerPassword)
    await console.get("/portal")
    return console


SETTINGS = {
    "settings.maxSessions": "3",
    "settings.sessionLimitPolicy": "evict_oldest",
    "settings.authDuration": "120",
    "settings.archiveDays": "14",
    "settings.playbackUrlTemplate": "https://cdn.example.com",
    "settings.autoCreateSubscribers": "1",
    "settings.smsGateway.type": "log",
}


async def test_the_page_shows_the_portal(console: Console, api: Api, portal: portals.CreatedPortal) -> None:
    await owner(console, portal)
    page = await console.get("/portal")
    assert page.one("h1").text_content() == "Portal settings"
    assert page.texts("h2") == ["Portal", "Branding", "Settings", "API key", "Free packages", "Webhooks"]
    assert portal.name in page.one("dl.details").text_content()
    labels = {" ".join(label.text_content().split()) for label in page.css("label")}
    assert {
        "Title",
        "Description",
        "Logo",
        "Session limit",
        "When the limit is reached",
        "Auth duration (seconds)",
        "Archive depth (days)",
        "Playback URL template",
        "Create subscribers automatically",
        "Package",
        "URL",
    } <= labels
    assert page.one('[id="f-settings.maxSessions"]').get("value") == "2"


async def test_branding_with_a_logo(console: Console, api: Api, portal: portals.CreatedPortal) -> None:
    await owner(console, portal)
    form = FormData()
    form.add_field("branding.title", "Premium TV")
    form.add_field("branding.description", "Лучшее IPTV для всей семьи")
    form.add_field("branding.logo", io.BytesIO(png(6, 6)), filename="logo.png", content_type="image/png")
    page = await console.post("/portal/branding", form)
    assert page.notice() == "Branding saved", page.text[:2000]
    assert page.one("#portal-logo-preview").get("src") == "/portal/logo"
    status, body = await api.get("/portal")
    assert body["branding"]["title"] == "Premium TV"
    assert body["branding"]["description"] == "Лучшее IPTV для всей семьи"
    assert body["branding"]["logo"].startswith("data:image/png;base64,")
    async with console.client.get("/portal/logo") as resp:
        assert resp.status == 200 and resp.content_type == "image/png"
        assert await resp.read() == png(6, 6)
    page = await console.post(
        "/portal/branding", {"branding.title": "Premium TV", "branding.description": "", "removeLogo": "1"}
    )
    status, body = await api.get("/portal")
    assert body["branding"]["logo"] is None
    page = await console.post("/portal/branding", {"branding.title": "x" * 201, "branding.description": ""})
    assert page.status == 400
    assert "length <= 200" in error_beside(page, "branding.title")


async def test_settings_are_saved(console: Console, api: Api, portal: portals.CreatedPortal) -> None:
    await owner(console, portal)
    page = await console.post("/portal/settings", SETTINGS)
    assert page.notice() == "Settings saved", page.text[:3000]
    status, body = await api.get("/portal")
    assert body["settings"] == {
        "autoCreateSubscribers": True,
        "maxSessions": 3,
        "sessionLimitPolicy": "evict_oldest",
        "authDuration": 120,
        "archiveDays": 14,
        "playbackUrlTemplate": "https://cdn.example.com",
        "smsGateway": None,
    }
    assert page.one('[id="f-settings.archiveDays"]').get("value") == "14"
    gateway = {
        **SETTINGS,
        "settings.smsGateway.type": "http",
        "settings.smsGateway.url": "https://sms.example.com/send?to={phone}",
        "settings.smsGateway.method": "POST",
        "settings.smsGateway.headers": "Authorization: Bearer s3cr3t",
        "settings.smsGateway.body": '{"text": "{code}"}',
        "settings.smsGateway.contentType": "application/json",
        "settings.smsGateway.timeout": "5",
        "settings.smsGateway.retries": "2",
        "settings.smsGateway.retryDelay": "0.5",
    }
    page = await console.post("/portal/settings", gateway)
    assert page.notice() == "Settings saved", page.text[:3000]
    status, body = await api.get("/portal")
    assert body["settings"]["smsGateway"]["headers"] == {"Authorization": "Bearer s3cr3t"}
    assert page.one('[id="f-settings.smsGateway.headers"]').text_content() == "Authorization: Bearer s3cr3t"


async def test_setting_errors_land_beside_their_field(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    await owner(console, portal)
    page = await console.post("/portal/settings", {**SETTINGS, "settings.maxSessions": "0"})
    assert page.status == 400
    assert error_beside(page, "settings.maxSessions") == "Expected `int` >= 1 - at `$.settings.maxSessions`"
    assert page.one('[id="f-settings.maxSessions"]').get("value") == "0"
    page = await console.post("/portal/settings", {**SETTINGS, "settings.playbackUrlTemplate": "ftp://x"})
    assert page.status == 400
    assert "http:// or https:// URL" in error_beside(page, "settings.playbackUrlTemplate")
    page = await console.post(
        "/portal/settings",
        {**SETTINGS, "settings.smsGateway.type": "http", "settings.smsGateway.url": "http://10.0.0.1/sms"},
    )
    assert page.status == 400, page.form_error()
    assert "not allowed" in error_beside(page, "settings.smsGateway.url")
    status, body = await api.get("/portal")
    assert body["settings"]["maxSessions"] == 2 and body["settings"]["smsGateway"] is None


async def test_the_api_key_is_shown_to_owner_and_admins_only(
    console: Console, api: Api, portal: portals.CreatedPortal, client: Any
) -> None:
    await make_manager(api, "admin@example.com", isAdmin=True)
    await make_manager(api, "content@example.com", isContentAdmin=True, isSubscriberAdmin=True)
    await owner(console, portal)
    page = await console.get("/portal")
    assert page.one("#api-key-value").get("value") == portal.apiKey
    assert page.css("button[data-copy=api-key-value]")
    client.session.cookie_jar.clear()
    await console.sign_in("admin@example.com")
    page = await console.get("/portal")
    assert page.one("#api-key-value").get("value") == portal.apiKey
    client.session.cookie_jar.clear()
    await console.sign_in("content@example.com")
    page = await console.get("/portal")
    assert page.css("#api-key-value") == [] and portal.apiKey not in page.text
    assert page.css("a[href='/portal/api-key']") == []
    forged = await console.post("/portal/api-key")
    assert forged.status == 403
    assert forged.form_error() == "this change needs the isAdmin permission"
    status, _ = await api.get("/portal")
    assert status == 200


async def test_regenerate_stops_the_old_key_at_once(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    await owner(console, portal)
    confirm = await console.get("/portal/api-key")
    assert "stops working at once" in confirm.one(".warning").text_content()
    page = await console.post("/portal/api-key")
    assert page.notice().startswith("A new API key was issued.")
    new_key = page.one("#api-key-value").get("value")
    assert new_key and new_key != portal.apiKey
    status, body = await api.get("/portal")
    assert status == 401
    status, body = await api.as_(new_key).get("/portal")
    assert status == 200


async def test_free_packages_add_and_remove(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    status, basic = await api.post("/packages", {"name": "basic"})
    await api.post("/packages", {"name": "premium"})
    await owner(console, portal)
    page = await console.get("/portal")
    assert [o.text_content() for o in page.css("#f-packageId option")][1:] == ["basic", "premium"]
    assert "gets its channels at once" in page.one("#packageId-hint").text_content()
    page = await console.post("/portal/free-packages", {"packageId": basic["packageId"]})
    assert page.notice() == "Package basic is free now"
    assert [r.cssselect("td")[0].text_content() for r in page.css("#free-packages tbody tr")] == ["basic"]
    assert [o.text_content() for o in page.css("#f-packageId option")][1:] == ["premium"]
    status, body = await api.get("/portal")
    assert body["freePackages"] == [basic["packageId"]]
    again = await console.post("/portal/free-packages", {"packageId": basic["packageId"]})
    assert again.status == 409 and again.form_error() == "the package is already a free package"
    page = await console.post("/portal/free-packages", {"packageId": ""})
    assert page.status == 404 and error_beside(page, "packageId") == "Choose a package."
    confirm = await console.get(f"/portal/free-packages/{basic['packageId']}/remove")
    assert (
        "Subscribers without a subscription to this package lose access"
        in confirm.one(".warning").text_content()
    )
    page = await console.post(f"/portal/free-packages/{basic['packageId']}/remove")
    assert page.notice() == "Package basic is no longer free"
    status, body = await api.get("/portal")
    assert body["freePackages"] == []


async def test_webhooks_create_shows_the_secret_once(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    await owner(console, portal)
    page = await console.post("/portal/webhooks", {"url": "http://127.0.0.1:9/hook"})
    assert page.status == 200 and page.one("h1").text_content() == "Webhook created", page.text[:2000]
    secret = page.one("#webhook-secret").get("value")
    assert len(secret) >= 32
    assert "shown only this once" in page.one(".warning").text_content()
    listing = await console.get("/portal")
    assert secret not in listing.text
    assert listing.texts("#webhooks tbody td.url") == ["http://127.0.0.1:9/hook"]
    status, body = await api.get("/webhooks")
    webhook = body["webhooks"][0]
    assert "secret" not in webhook
    taken = await console.post("/portal/webhooks", {"url": "http://127.0.0.1:9/hook"})
    assert (
        taken.status == 409 and error_beside(taken, "url") == "this URL is already a webhook of this portal"
    )
    bad = await console.post("/portal/webhooks", {"url": "not a url"})
    assert bad.status == 400 and "absolute http(s) URL" in error_beside(bad, "url")
    page = await console.post(f"/portal/webhooks/{webhook['webhookId']}/retry")
    assert page.notice() == "Delivery to http://127.0.0.1:9/hook is tried now"
    confirm = await console.get(f"/portal/webhooks/{webhook['webhookId']}/delete")
    assert "Deliveries to this address stop at once" in confirm.one(".warning").text_content()
    page = await console.post(f"/portal/webhooks/{webhook['webhookId']}/delete")
    assert page.notice() == "Webhook http://127.0.0.1:9/hook deleted"
    status, body = await api.get("/webhooks")
    assert body["webhooks"] == []


async def test_the_webhook_list_shows_the_last_error(
    console: Console, api: Api, portal: portals.CreatedPortal, pool: Any
) -> None:
    status, webhook = await api.post("/webhooks", {"url": "http://127.0.0.1:9/hook"})
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE webhooks SET last_error = 'HTTP 503 Service Unavailable', failures = 3,"
            " last_attempt_at = now() WHERE portal_id = (SELECT id FROM portals WHERE name = $1)",
            portal.name,
        )
    await owner(console, portal)
    page = await console.get("/portal")
    row = " ".join(page.one("#webhooks tbody tr").text_content().split())
    assert "HTTP 503 Service Unavailable" in row and "3 failures, next attempt" in row


async def test_a_manager_without_flags_sees_no_write_controls(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    status, basic = await api.post("/packages", {"name": "basic"})
    await api.post(f"/portal/free-packages/{basic['packageId']}")
    await make_manager(api, "reader@example.com")
    await console.sign_in("reader@example.com")
    page = await console.get("/portal")
    assert page.css("main form") == [] and page.css("main button") == []
    assert page.css("main a.button") == [] and page.css(".row-actions a") == []
    assert "Only the portal owner and isAdmin managers see the webhooks." in page.text
    assert [r.cssselect("td")[0].text_content() for r in page.css("#free-packages tbody tr")] == ["basic"]
    for path, data, message in [
        ("/portal/settings", SETTINGS, "this change needs the isAdmin permission"),
        ("/portal/branding", {"branding.title": "Mine"}, "this change needs the isAdmin permission"),
        (
            "/portal/free-packages",
            {"packageId": basic["packageId"]},
            "this change needs the isContentAdmin permission",
        ),
        (
            f"/portal/free-packages/{basic['packageId']}/remove",
            {},
            "this change needs the isContentAdmin permission",
        ),
        (
            "/portal/webhooks",
            {"url": "https://hooks.example.com/x"},
            "this change needs the isAdmin permission",
        ),
    ]:
        forged = await console.post(path, data)
        assert forged.status == 403, path
        assert forged.form_error() == message, path
    status, body = await api.get("/portal")
    assert body["settings"]["maxSessions"] == 2 and body["freePackages"] == [basic["packageId"]]
    status, body = await api.get("/webhooks")
    assert body["webhooks"] == []


class Receiver:
    """A billing system's webhook endpoint on loopback: refuses until it is mended."""

    def __init__(self) -> None:
        self.status = 503
        self.received: list[tuple[bytes, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.status < 300:
            self.received.append((body, request.headers["X-Catena-Signature"]))
        return web.Response(status=self.status)


async def test_a_failing_webhook_shows_its_error_and_retry_delivers(
    console: Console,
    api: Api,
    portal: portals.CreatedPortal,
    pool: Any,
    admin_settings: AdminSettings,
    aiohttp_server: Any,
) -> None:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/catena", receiver.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    url = str(server.make_url("/catena"))
    await owner(console, portal)
    created = await console.post("/portal/webhooks", {"url": url})
    secret = created.one("#webhook-secret").get("value")
    async with aiohttp.ClientSession() as session:
        deliverer = webhook_delivery.Deliverer(pool, admin_settings, session)
        await deliverer.run_once()
        page = await console.get("/portal")
        row = " ".join(page.one("#webhooks tbody tr").text_content().split())
        assert "HTTP 503 Service Unavailable" in row and "1 failure, next attempt" in row
        # The receiver is mended; Retry sends at once instead of after the back-off.
        receiver.status = 204
        page = await console.post(f"/portal/webhooks/{created_id(page)}/retry")
        assert page.notice() == f"Delivery to {url} is tried now"
        await deliverer.run_once()
    page = await console.get("/portal")
    row = page.one("#webhooks tbody tr")
    assert row.cssselect("td")[1].cssselect("time") and "none" in row.cssselect("td")[2].text_content()
    body, signature = receiver.received[0]
    assert signature == webhook_delivery.sign(secret, body)
    assert msgspec.json.decode(body)["type"] == "createWebhook"


def created_id(page: Any) -> str:
    form = page.one("#webhooks form[action$='/retry']")
    return str(form.get("action")).split("/")[3]


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("settings.smsGateway.type", "carrier-pigeon", "settings.smsGateway.type"),
        ("settings.maxSessions", "lots", "settings.maxSessions"),
        ("settings.maxSessions", "99999999999999999999", "settings.maxSessions"),
        ("settings.authDuration", "", "settings.authDuration"),
        ("settings.sessionLimitPolicy", "whatever", "settings.sessionLimitPolicy"),
        ("settings.playbackUrlTemplate", "x" * 600, "settings.playbackUrlTemplate"),
    ],
)
async def test_bad_settings_are_a_400_beside_their_field(
    console: Console, api: Api, portal: portals.CreatedPortal, field: str, value: str, named: str
) -> None:
    await owner(console, portal)
    page = await console.post("/portal/settings", {**SETTINGS, field: value})
    assert page.status == 400, page.text[:2000]
    assert error_beside(page, named)
    status, body = await api.get("/portal")
    assert body["settings"]["maxSessions"] == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("settings.smsGateway.method", "DELETE"),
        ("settings.smsGateway.headers", "no colon here"),
        ("settings.smsGateway.headers", "Bad Header: x"),
        ("settings.smsGateway.timeout", "soon"),
        ("settings.smsGateway.retries", "99"),
        ("settings.smsGateway.url", ""),
    ],
)
async def test_bad_gateway_fields_are_a_400_beside_their_field(
    console: Console, api: Api, portal: portals.CreatedPortal, field: str, value: str
) -> None:
    await owner(console, portal)
    gateway = {
        **SETTINGS,
        "settings.smsGateway.type": "http",
        "settings.smsGateway.url": "https://sms.example.com/",
    }
    page = await console.post("/portal/settings", {**gateway, field: value})
    assert page.status == 400, page.text[:2000]
    assert error_beside(page, field)
    status, body = await api.get("/portal")
    assert body["settings"]["smsGateway"] is None

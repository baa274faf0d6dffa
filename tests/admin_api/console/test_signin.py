"""Sign-in, portals, sign-out and the console's request checks, through the test client."""

from __future__ import annotations

import urllib.parse
from typing import Any

import asyncpg
import msgspec
import pytest

from admin_api.console import session
from catena import portals
from catena.settings import AdminSettings, load
from tests.conftest import Api, AppClient

from .conftest import PASSWORD, Console, make_manager


async def test_a_visitor_is_sent_to_sign_in(console: Console) -> None:
    page = await console.get("/channels?cursor=x", allow_redirects=False)
    assert page.status == 303
    assert page.headers["Location"] == "/sign-in?next=" + urllib.parse.quote("/channels?cursor=x", safe="")
    form = await console.get("/sign-in")
    assert form.status == 200
    assert [label.text_content() for label in form.css("form label")] == ["Email", "Password"]
    assert form.texts("button[type=submit]")[-1] == "Sign in"


async def test_sign_in_keeps_the_session_in_a_strict_httponly_cookie(
    console: Console, portal: portals.CreatedPortal
) -> None:
    async with console.client.post(
        "/sign-in",
        data={"email": portal.ownerEmail.upper(), "password": portal.ownerPassword},
        headers={"Origin": console.origin},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == "/"
        header = resp.headers["Set-Cookie"]
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Path=/" in header
    page = await console.get("/channels")
    assert page.status == 200
    assert page.one(".who").text_content() == portal.ownerEmail
    assert page.one(".portal-name").text_content() == portal.name


async def test_wrong_password_is_refused_beside_the_form(
    console: Console, portal: portals.CreatedPortal
) -> None:
    page = await console.post(
        "/sign-in", {"email": portal.ownerEmail, "password": "wrong-password"}, csrf=False
    )
    assert page.status == 401
    assert page.form_error() == "Wrong email or password."
    assert page.one("#f-email").get("value") == portal.ownerEmail
    assert page.one("#f-password").get("value") == ""
    assert console.cookie("catena_session") is None


async def test_an_empty_email_is_named(console: Console) -> None:
    page = await console.post("/sign-in", {"email": "", "password": "x"}, csrf=False)
    assert page.status == 400
    assert "length" in page.field_error("email")


@pytest.fixture
def admin_settings(database_url: str, redis_url: str, redis_prefix: str, redis: Any) -> AdminSettings:
    """Three failed logins per window, so the throttle shows quickly."""
    return load(
        AdminSettings,
        environ={},
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        bcrypt_rounds=4,
        webhooks_enabled=False,
        login_fail_limit=3,
    )


async def test_failed_sign_ins_share_the_api_logins_throttle(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    for _ in range(2):
        page = await console.post("/sign-in", {"email": portal.ownerEmail, "password": "nope"}, csrf=False)
        assert page.status == 401
    status, _body = await api.as_(None).post("/login", {"email": portal.ownerEmail, "password": "nope"})
    assert status == 401
    # Three failures in all, two of them through the console: both doors are shut now.
    page = await console.post(
        "/sign-in", {"email": portal.ownerEmail, "password": portal.ownerPassword}, csrf=False
    )
    assert page.status == 429
    assert page.form_error() == "Too many failed sign-ins; try again later."
    status, _body = await api.as_(None).post(
        "/login", {"email": portal.ownerEmail, "password": portal.ownerPassword}
    )
    assert status == 429


async def test_a_manager_of_several_portals_picks_one_and_switches(
    console: Console, make_portal: Any
) -> None:
    first = await make_portal("alpha")
    second = await make_portal("beta")
    email = "both@example.com"
    for portal in (first, second):
        await make_manager(Api(console.client, portal.apiKey), email, isContentAdmin=True)
    async with console.client.post(
        "/sign-in",
        data={"email": email, "password": PASSWORD},
        headers={"Origin": console.origin},
        allow_redirects=False,
    ) as resp:
        assert resp.headers["Location"] == "/portals"
    picker = await console.get("/portals")
    assert picker.texts(".choices button") == ["alpha", "beta"]
    page = await console.post("/portals", {"portal": second.portalId, "next": "/channels"})
    assert page.status == 200 and page.url.endswith("/channels")
    assert page.notice() == "Portal beta"
    switch = page.one("#portal-switch")
    assert [o.text_content() for o in switch.cssselect("option[selected]")] == ["beta"]
    # The header's switch goes back; the page now acts on alpha.
    page = await console.post("/portals", {"portal": first.portalId, "next": "/channels"})
    assert [o.text_content() for o in page.css("#portal-switch option[selected]")] == ["alpha"]


async def test_switching_to_a_portal_without_a_session_is_refused(
    console: Console, portal: portals.CreatedPortal, make_portal: Any
) -> None:
    other = await make_portal("other")
    await console.sign_in(portal.ownerEmail, portal.ownerPassword)
    await console.get("/channels")
    page = await console.post("/portals", {"portal": other.portalId})
    assert page.status == 400
    assert "no session on that portal" in page.one(".form-error").text_content()


async def test_sign_out_forgets_the_session(console: Console, portal: portals.CreatedPortal) -> None:
    await console.sign_in(portal.ownerEmail, portal.ownerPassword)
    await console.get("/channels")
    page = await console.post("/sign-out")
    assert page.url.endswith("/sign-in")
    assert page.notice() == "You have signed out."
    assert console.cookie("catena_session") is None
    again = await console.get("/channels", allow_redirects=False)
    assert again.status == 303


async def test_sign_out_ends_the_api_sessions_too(client: AppClient, make_portal: Any) -> None:
    """A cookie saved before signing out opens nothing afterwards, on any of its portals."""
    first, second = await make_portal("alpha"), await make_portal("beta")
    for portal in (first, second):
        await make_manager(Api(client, portal.apiKey), "both@example.com", isContentAdmin=True)
    console = Console(client)
    await console.sign_in("both@example.com")
    await console.get("/channels")
    saved = console.cookie("catena_session").value
    state = session.decode(saved)
    assert state is not None and len(state.portals) == 2
    await console.post("/sign-out")
    assert console.cookie("catena_session") is None
    client.session.cookie_jar.update_cookies({"catena_session": saved})
    again = await console.get("/channels", allow_redirects=False)
    assert again.status == 303 and again.headers["Location"].startswith("/sign-in")
    for entry in state.portals:
        status, body = await Api(client, entry.token).get("/channels")
        assert (status, body["error"]) == (401, "invalid_token")


async def test_an_idle_session_ends_as_the_apis_do(
    console: Console, portal: portals.CreatedPortal, pool: asyncpg.Pool, admin_settings: AdminSettings
) -> None:
    await console.sign_in(portal.ownerEmail, portal.ownerPassword)
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE manager_sessions SET last_seen_at = now() - make_interval(secs => $1 + 1)",
            admin_settings.manager_session_idle,
        )
    page = await console.get("/channels")
    url = urllib.parse.urlsplit(page.url)
    assert (url.path, urllib.parse.parse_qs(url.query)) == ("/sign-in", {"next": ["/channels"]})
    assert page.notice() == "Your session has ended; sign in again."


async def test_a_post_without_the_csrf_token_is_refused(
    console: Console, portal: portals.CreatedPortal
) -> None:
    await console.sign_in(portal.ownerEmail, portal.ownerPassword)
    page = await console.post("/channels/new", {"name": "sport1", "title": "Sport"}, csrf=False)
    assert page.status == 403
    assert "out of date or did not come from this console" in page.form_error()
    listing = await console.get("/channels")
    assert listing.texts("tbody code") == []


async def test_a_csrf_token_of_another_session_is_refused(
    client: AppClient, portal: portals.CreatedPortal
) -> None:
    first, second = Console(client), Console(client)
    await first.sign_in(portal.ownerEmail, portal.ownerPassword)
    await first.get("/channels")
    stolen = first.csrf
    client.session.cookie_jar.clear()
    await second.sign_in(portal.ownerEmail, portal.ownerPassword)
    second.csrf = stolen
    page = await second.post("/channels/new", {"name": "sport1", "title": "Sport"})
    assert page.status == 403


@pytest.mark.parametrize("origin", ["https://evil.example", "null", None])
async def test_a_post_from_another_origin_is_refused(
    console: Console, portal: portals.CreatedPortal, origin: str | None
) -> None:
    await console.sign_in(portal.ownerEmail, portal.ownerPassword)
    await console.get("/channels")
    headers = {"Origin": origin} if origin is not None else {}
    async with console.client.post(
        "/channels/new",
        data={"name": "sport1", "title": "Sport", "csrf": console.csrf},
        headers=headers,
        allow_redirects=False,
    ) as resp:
        assert resp.status == 403
        assert "did not come from this console" in await resp.text()
    listing = await console.get("/channels")
    assert listing.texts("tbody code") == []


async def test_next_never_leaves_the_site(console: Console, portal: portals.CreatedPortal) -> None:
    for target in ("//evil.example/x", "https://evil.example", "/\\evil.example"):
        async with console.client.post(
            "/sign-in",
            data={"email": portal.ownerEmail, "password": portal.ownerPassword, "next": target},
            headers={"Origin": console.origin},
            allow_redirects=False,
        ) as resp:
            assert resp.headers["Location"] == "/"


async def test_console_pages_carry_a_strict_content_security_policy(console: Console) -> None:
    page = await console.get("/sign-in")
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "unsafe-inline" not in policy
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Cache-Control"] == "no-store"
    missing = await console.get("/no-such-page")
    assert missing.status == 404 and missing.one("h1").text_content()
    assert "default-src 'self'" in missing.headers["Content-Security-Policy"]


async def test_the_apis_answers_are_unchanged(console: Console) -> None:
    async with console.client.get("/tv-management/api/v1/no-such-thing") as resp:
        assert resp.status == 404 and resp.content_type == "application/json"
        assert "Content-Security-Policy" not in resp.headers
        assert msgspec.json.decode(await resp.read())["error"] == "not_found"
    async with console.client.get("/client/api/v1/channels") as resp:
        assert resp.status == 401 and resp.content_type == "application/json"


async def test_language_follows_the_switcher_then_the_browser(console: Console) -> None:
    page = await console.get("/sign-in", headers={"Accept-Language": "de-DE, ru;q=0.8, en;q=0.5"})
    assert page.one("html").get("lang") == "ru"
    assert page.texts("button.primary") == ["Войти"]
    page = await console.post("/language", {"lang": "en", "next": "/sign-in"}, csrf=False)
    assert page.one("html").get("lang") == "en"
    page = await console.get("/sign-in", headers={"Accept-Language": "ru"})
    assert page.one("html").get("lang") == "en"
    assert console.cookie("catena_lang").value == "en"

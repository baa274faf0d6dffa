"""Console tests: an HTML client over the aiohttp test client, and a real Chromium.

``Console`` reads pages with lxml.html and posts forms as a browser would (the
page's CSRF token, the console's ``Origin``).  The browser fixtures drive Debian's
Chromium (``/usr/bin/chromium``) through Playwright; they skip when it is missing,
except under ``CI=true``, where a missing browser fails the run.  When a browser
test fails, every page it had open is saved as a PNG under ``var/test/screenshots``.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from pathlib import Path
from typing import Any

import lxml.html
import pytest
from aiohttp import FormData

from catena import portals
from tests.admin_api.content_support import data_uri
from tests.conftest import ROOT, Api, AppClient

CHROMIUM = Path(os.environ.get("CATENA_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "var" / "test" / "screenshots"
AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
PASSWORD = "Staff-Pass-123!"
WIDE = {"width": 1280, "height": 900}
NARROW = {"width": 390, "height": 844}


class Page:
    """A console page as lxml sees it."""

    def __init__(self, status: int, url: str, text: str, headers: Any) -> None:
        self.status = status
        self.url = url
        self.text = text
        self.headers = headers
        self.doc = lxml.html.fromstring(text) if text.strip() else lxml.html.fromstring("<html></html>")

    def css(self, selector: str) -> list[Any]:
        found: list[Any] = self.doc.cssselect(selector)
        return found

    def texts(self, selector: str) -> list[str]:
        return [" ".join(e.text_content().split()) for e in self.css(selector)]

    def one(self, selector: str) -> Any:
        found = self.css(selector)
        assert len(found) == 1, (selector, len(found))
        return found[0]

    @property
    def csrf(self) -> str:
        fields = self.css("input[name=csrf]")
        assert fields, "no CSRF field on the page"
        return str(fields[0].get("value"))

    def field_error(self, name: str) -> str:
        """The error shown beside the form field ``name``."""
        return " ".join(self.one(f"#{name}-error").text_content().split())

    def form_error(self) -> str:
        return " ".join(self.one(".form-error").text_content().split())

    def notice(self) -> str:
        return " ".join(self.one(".notice").text_content().split())


class Console:
    """The console through the aiohttp test client, signed in or not."""

    def __init__(self, client: AppClient) -> None:
        self.client = client
        self.origin = str(client.make_url("/")).rstrip("/")
        self.csrf = ""

    async def get(self, path: str, **kwargs: Any) -> Page:
        async with self.client.get(path, **kwargs) as resp:
            page = Page(resp.status, str(resp.url), await resp.text(), resp.headers)
        if page.css("input[name=csrf]"):
            self.csrf = page.csrf
        return page

    async def post(
        self, path: str, data: dict[str, Any] | FormData | None = None, *, csrf: bool = True, **kwargs: Any
    ) -> Page:
        headers = {"Origin": self.origin, **kwargs.pop("headers", {})}
        form = data if isinstance(data, FormData) else FormData(data or {})
        if csrf and self.csrf:
            form.add_field("csrf", self.csrf)
        async with self.client.post(path, data=form, headers=headers, **kwargs) as resp:
            page = Page(resp.status, str(resp.url), await resp.text(), resp.headers)
        if page.css("input[name=csrf]"):
            self.csrf = page.csrf
        return page

    async def sign_in(self, email: str, password: str = PASSWORD) -> Page:
        page = await self.post("/sign-in", {"email": email, "password": password}, csrf=False)
        assert page.status == 200, page.text
        return page

    def cookie(self, name: str) -> Any:
        for cookie in self.client.session.cookie_jar:
            if cookie.key == name:
                return cookie
        return None


@pytest.fixture
def console(client: AppClient) -> Console:
    return Console(client)


async def make_manager(api: Api, email: str, **flags: bool) -> dict[str, Any]:
    status, body = await api.post(
        "/managers", {"email": email, "name": email.split("@")[0], "password": PASSWORD, **flags}
    )
    assert status == 200, body
    return dict(body)


async def owner_console(console: Console, portal: portals.CreatedPortal) -> Console:
    await console.sign_in(portal.ownerEmail, portal.ownerPassword)
    return console


# The browser.


def _browser_missing() -> None:
    message = f"no Chromium at {CHROMIUM} (make test installs Debian's chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + "; under CI the browser tests must run")
    pytest.skip(message)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    if not CHROMIUM.exists():
        _browser_missing()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


class Browsing:
    """A browser context on the test server, with the page problems it saw."""

    def __init__(self, context: Any, base: str) -> None:
        self.context = context
        self.base = base
        self.csp_violations: list[str] = []
        self.errors: list[str] = []

    async def new_page(self) -> Any:
        page = await self.context.new_page()
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        return page

    def _on_console(self, message: Any) -> None:
        text = message.text
        if "Content Security Policy" in text or "Content-Security-Policy" in text:
            self.csp_violations.append(text)
        elif message.type == "error" and "Failed to load resource" not in text:
            self.errors.append(text)

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture
async def browsing(
    request: pytest.FixtureRequest, browser: Any, client: AppClient
) -> AsyncIterator[Browsing]:
    """A fresh browser context (1280×900, English) on the test server; screenshots on failure."""
    context = await browser.new_context(viewport=WIDE, locale="en-US", timezone_id="Europe/Moscow")
    await context.add_init_script(path=str(AXE))
    browsing = Browsing(context, str(client.make_url("/")).rstrip("/"))
    yield browsing
    reports = request.node.stash.get(_REPORTS, {})
    if any(r.failed for r in reports.values()):
        await _screenshots(context, request.node.nodeid)
    await context.close()
    assert browsing.csp_violations == [], browsing.csp_violations
    assert browsing.errors == [], browsing.errors


async def _screenshots(context: Any, nodeid: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid)[-150:]
    for number, page in enumerate(context.pages):
        try:
            await page.screenshot(path=str(SCREENSHOTS / f"{stem}-{number}.png"), full_page=True)
        except Exception as exc:  # a crashed page still lets the others be saved
            print(f"screenshot of page {number} failed: {exc}")


async def check_accessibility(page: Any) -> None:
    """axe-core on the page as it is now: no critical or serious violation."""
    result = await page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    bad = [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:5])
        for v in result["violations"]
        if v["impact"] in ("critical", "serious")
    ]
    assert bad == [], f"{page.url}: {bad}"


async def check_fits(page: Any) -> None:
    """Nothing on the page makes it scroll sideways (tables scroll inside their frame)."""
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{page.url} is {overflow}px wider than the window"


async def browser_sign_in(page: Any, base: str, email: str, password: str = PASSWORD) -> None:
    await page.goto(base + "/sign-in")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_load_state()


# The tour: every console page, in both languages, for checks and screenshots.


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--console-screenshots",
        default=None,
        help="save a PNG of every page the console tour visits into this folder",
    )


Check = Callable[[Any], Awaitable[None]]


async def settle_and_save(page: Any, folder: str | None, name: str) -> None:
    """Wait until the page is quiet; with ``--console-screenshots`` save it as
    ``<name>-<lang>-<width>.png`` in ``folder``."""
    await page.wait_for_load_state("networkidle")
    if folder:
        width = page.viewport_size["width"]
        lang = await page.evaluate("document.documentElement.lang")
        Path(folder).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(folder) / f"{name}-{lang}-{width}.png"), full_page=True)


async def check_page(page: Any, folder: str | None, name: str) -> None:
    """A tour's stop: saved when asked, then no accessibility violation and no sideways scroll."""
    await settle_and_save(page, folder, name)
    await check_accessibility(page)
    await check_fits(page)


@pytest.fixture
def tour(request: pytest.FixtureRequest, client: AppClient, make_portal: Any, browsing: Browsing) -> Any:
    """``await tour(page, *checks)``: every console page, English then Russian, ``checks`` run on each."""
    folder = request.config.getoption("--console-screenshots")

    async def visit(page: Any, checks: tuple[Check, ...], name: str) -> None:
        await settle_and_save(page, folder, name)
        for check in checks:
            await check(page)

    async def run(page: Any, *checks: Check) -> None:
        portal = await make_portal("demo", owner_email="owner@demo.localhost")
        ids = await _tour_data(Api(client, portal.apiKey))
        for lang in ("en", "ru"):
            await page.goto(browsing.url("/sign-in"))
            await page.locator(f"button[name=lang][value={lang}]").click()
            await visit(page, checks, "sign-in")
            await page.locator("#f-email").fill(portal.ownerEmail)
            await page.locator("#f-password").fill("wrong")
            await page.locator("form.stacked button[type=submit]").click()
            await visit(page, checks, "sign-in-error")
            await page.locator("#f-password").fill(portal.ownerPassword)
            await page.locator("form.stacked button[type=submit]").click()
            for name, path in [
                ("channels", "/channels"),
                ("channel-new", "/channels/new"),
                ("channel-edit", f"/channels/{ids['sport']}"),
                ("channel-delete", f"/channels/{ids['sport']}/delete"),
                ("portals", "/portals"),
                ("not-found", "/no-such-page"),
            ]:
                await page.goto(browsing.url(path))
                await visit(page, checks, name)
            await page.goto(browsing.url("/channels/new"))
            await page.locator("#f-name").fill("sport1")
            await page.locator("#f-title").fill("Sport again")
            await page.locator("form.stacked button[type=submit]").click()
            await visit(page, checks, "channel-new-error")
            await page.locator("form[action='/sign-out'] button").click()

    return run


def striped_logo(variant: int = 0, width: int = 96, height: int = 64) -> bytes:
    """A small PNG with coloured bands, so that screenshots show something like a logo."""
    colours = [
        (b"\x1f\x5f\xbf", b"\xff\xff\xff", b"\xd9\x3a\x2b"),
        (b"\x17\x66\x3a", b"\xf4\xc4\x30", b"\x18\x20\x2e"),
    ]
    bands = colours[variant % len(colours)]
    rows = b"".join(b"\x00" + bands[y * 3 // height] * width for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


async def _tour_data(api: Api) -> dict[str, str]:
    """A small catalogue so that lists have rows, logos and links."""
    await api.post("/epg-sources", {"name": "main-epg", "url": "https://epg.example.com/guide.xml"})
    status, sport = await api.post(
        "/channels",
        {
            "name": "sport1",
            "title": "Sport One",
            "logo": data_uri(striped_logo()),
            "epgSourceName": "main-epg",
        },
    )
    assert status == 200, sport
    await api.post("/channels", {"name": "news24", "title": "News 24", "logo": data_uri(striped_logo(1))})
    await api.post("/channels", {"name": "kids", "title": "Kids & Family"})
    status, basic = await api.post("/packages", {"name": "basic", "description": "The basic package"})
    await api.post("/channels-packages", {"channelId": sport["channelId"], "packageId": basic["packageId"]})
    return {"sport": sport["channelId"]}

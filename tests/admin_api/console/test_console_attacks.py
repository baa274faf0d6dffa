"""Every console route attacked as a hostile or clumsy client would: never a 500.

The routes come from the console's own table (``MODULES`` → ``pages.routes``), so a
route added later is attacked by the generic cases below without anyone writing a
test for it.  Each request goes out with exactly the cookie, ``Origin`` and CSRF
token the case chooses (no cookie jar, no redirects followed), and each answer is
judged the same way (:func:`judge`):

* never a 5xx, and nothing logged at error level or with a traceback;
* nothing of the other portal in the answer (its names, phone, API key);
* when the request is refused (a 4xx, or the way to sign-in), the database is as it
  was: every table's rows hashed before and after.

Two portals take part: A, whose owner is signed in and attacks, and B, whose
objects A tries to read and change by id.
"""

from __future__ import annotations

import base64
import io
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import msgspec
import pytest
from aiohttp import FormData

from admin_api.console import MODULES, session
from catena import ids, portals
from tests.admin_api.content_support import png
from tests.conftest import Api, AppClient

from .conftest import Console, make_manager

# (method, path, handler name, options) of every console route.
ROUTES = [
    (method, path, handler.__name__, options)
    for module in MODULES
    for method, path, handler, options in module.pages.routes
]
GETS = [r for r in ROUTES if r[0] == "GET"]
POSTS = [r for r in ROUTES if r[0] == "POST"]
WITH_IDS = [r for r in ROUTES if "{" in r[1]]
PRIVATE_POSTS = [r for r in POSTS if not r[3].get("public")]


def route_id(route: tuple[str, str, str, dict[str, Any]]) -> str:
    return f"{route[0]} {route[1]}"


# Which kind of object a path parameter names: by its name, else by the path's start.
# A parameter nobody listed here is attacked with every kind's ids.
PARAM_KINDS = {"packageId": "package"}
PATH_KINDS = [
    ("/portal/free-packages/", "package"),
    ("/portal/webhooks/", "webhook"),
    ("/channels/", "channel"),
    ("/packages/", "package"),
    ("/subscribers/", "subscriber"),
    ("/managers/", "manager"),
    ("/epg-sources/", "epg_source"),
]
KINDS = ("channel", "package", "subscriber", "manager", "webhook", "epg_source")

MALFORMED_IDS = [
    "xyz",
    "A" * 5000,
    "AAAAAAAAAAA.",
    "%00",
    "%FF%FE",
    "..%2F..%2Fportal",
    "-1",
    "99999999999999999999999",
    "%F0%9F%98%80",
    "pK19SW3AAAF.",
]
QUERIES = [
    "limit=-1",
    "limit=0",
    "limit=99999999999999999999",
    "limit=abc",
    "limit=1&limit=2",
    "limit=1e3",
    "cursor=garbage",
    "cursor=%FF%FE",
    "cursor=WyJ4Il0",
    "cursor=" + "A" * 20000,
    "cursor=eyJpZCI6MX0.forged",
    "q=%00",
    "q=%FF",
    "q=" + "x" * 20000,
    "q=a&q=b",
    "disabled=maybe",
    "disabled=true&disabled=false",
    "state=%00",
    "next=%00",
    "next=//evil.example.com",
    "next=%FF%FE",
    "%00=%00",
    "name=" + "%C0%80" * 100,
    "a=" + "b" * 7000,
]


# What a form may carry: every field any console template names, and the portal's settings.
def _template_fields() -> set[str]:
    from admin_api.console import TEMPLATES

    found: set[str] = set()
    for template in TEMPLATES.rglob("*.html"):
        text = template.read_text()
        found.update(re.findall(r'name="([A-Za-z_.]+)"', text))
        found.update(re.findall(r'input\(\s*errors[^,]*,\s*"([A-Za-z_.]+)"', text))
    return found


def _portal_fields() -> set[str]:
    from admin_api.console import portal

    return {name for names in portal.FIELDS.values() for name in names}


FIELDS = sorted((_template_fields() | _portal_fields()) - {"csrf"})
NOT_AN_IMAGE = b"MZ\x90\x00 this is not an image at all"
# Bigger than the 1 MiB a logo may be, smaller than the request limit.
BIG_IMAGE = png(8, 8) + b"\x00" * (2 * 1024 * 1024)


@dataclass
class Tenant:
    """One portal with one object of each kind (ids as the API writes them)."""

    portal: portals.CreatedPortal
    ids: dict[str, str] = field(default_factory=dict)
    # Words that appear only in this portal's data: none may leak into the other's pages.
    markers: list[str] = field(default_factory=list)


async def populate(api: Api, tag: str, portal: portals.CreatedPortal) -> Tenant:
    tenant = Tenant(portal)

    async def made(path: str, body: dict[str, Any], key: str, kind: str) -> dict[str, Any]:
        status, answer = await api.post(path, body)
        assert status == 200, (path, answer)
        tenant.ids[kind] = answer[key]
        return dict(answer)

    source = await made(
        "/epg-sources",
        {"name": f"{tag}-guide", "url": f"https://{tag}.example.com/guide.xml"},
        "epgSourceId",
        "epg_source",
    )
    channel = await made(
        "/channels",
        {"name": f"{tag}-chan", "title": f"{tag} Channel", "epgSourceName": source["name"]},
        "channelId",
        "channel",
    )
    package = await made("/packages", {"name": f"{tag}-pack"}, "packageId", "package")
    await api.post(
        "/channels-packages", {"channelId": channel["channelId"], "packageId": package["packageId"]}
    )
    subscriber = await made(
        "/subscribers",
        {"name": f"{tag} Subscriber", "phoneCountryCode": "7", "phone": "9001234567"},
        "subscriberId",
        "subscriber",
    )
    await api.post(
        "/subscriptions", {"subscriberId": subscriber["subscriberId"], "packageId": package["packageId"]}
    )
    manager = await make_manager(api, f"{tag}-staff@example.com", isContentAdmin=True)
    tenant.ids["manager"] = manager["managerId"]
    await made("/webhooks", {"url": f"https://{tag}-hooks.example.com/in"}, "webhookId", "webhook")
    tenant.markers = [f"{tag}-chan", f"{tag} Channel", f"{tag}-pack", f"{tag} Subscriber"]
    tenant.markers += [f"{tag}-staff", f"{tag}-hooks", f"{tag}-guide", portal.apiKey]
    return tenant


class Attacker:
    """Sends requests with exactly the headers a case chooses (no cookie jar, no redirects)."""

    def __init__(self, client: AppClient, cookie: str, csrf: str) -> None:
        self.client = client
        self.origin = str(client.make_url("/")).rstrip("/")
        self.cookie = cookie
        self.csrf = csrf

    async def send(
        self,
        method: str,
        path: str,
        data: Any = None,
        *,
        cookie: str | None = "own",
        origin: str | None = "own",
        headers: dict[str, str] | None = None,
    ) -> Answer:
        sent = dict(headers or {})
        if cookie is not None:
            jar = f"{session.COOKIE}={self.cookie if cookie == 'own' else cookie}"
            sent["Cookie"] = "; ".join(filter(None, [jar, sent.get("Cookie", "")]))
        if origin is not None:
            sent["Origin"] = self.origin if origin == "own" else origin
        url = self.client.make_url(path)
        async with (
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
            http.request(method, url, data=data, headers=sent, allow_redirects=False) as resp,
        ):
            body = await resp.read()
            return Answer(resp.status, resp.headers.get("Location", ""), body.decode("utf-8", "replace"))

    def form(self, values: dict[str, Any] | None = None, csrf: str | None = "own") -> FormData:
        form = FormData(values or {})
        if csrf is not None:
            form.add_field("csrf", self.csrf if csrf == "own" else csrf)
        return form


@dataclass
class Answer:
    status: int
    location: str
    text: str


@dataclass
class Scene:
    """Portal A's owner signed in, ready to attack; portal B to be attacked."""

    attacker: Attacker
    console: Console
    a: Tenant
    b: Tenant
    pool: asyncpg.Pool
    caplog: pytest.LogCaptureFixture

    async def fingerprint(self) -> dict[str, str]:
        return await fingerprint(self.pool)

    async def sign_in_again(self) -> None:
        """After a case that signed out (or switched), a fresh session to go on with."""
        self.attacker.cookie, self.attacker.csrf = await signed_in(self.console, self.a.portal)

    def path(self, route: tuple[str, str, str, dict[str, Any]], **values: str) -> str:
        """The route's path with A's own ids, or ``values`` for the parameters named."""

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in values:
                return values[name]
            kind = kind_of(route[1], name) or "channel"
            return self.a.ids[kind]

        return re.sub(r"{(\w+)}", fill, route[1])


def kind_of(path: str, param: str) -> str | None:
    if param in PARAM_KINDS:
        return PARAM_KINDS[param]
    for prefix, kind in PATH_KINDS:
        if path.startswith(prefix):
            return kind
    return None


_TABLES = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND c.relname <> 'schema_migrations' ORDER BY 1
"""


async def fingerprint(pool: asyncpg.Pool) -> dict[str, str]:
    """A hash of every table's rows (a manager session's last-seen time aside: reading touches it)."""
    async with pool.acquire() as conn:
        tables = [row[0] for row in await conn.fetch(_TABLES)]
        parts = [
            f"SELECT '{t}', md5(coalesce(string_agg(r::text, ',' ORDER BY r::text), '')) "
            f"FROM (SELECT to_jsonb(x) - 'last_seen_at' AS r FROM \"{t}\" x) s"
            for t in tables
        ]
        rows = await conn.fetch(" UNION ALL ".join(parts))
    return {row[0]: row[1] for row in rows}


async def signed_in(console: Console, portal: portals.CreatedPortal) -> tuple[str, str]:
    """Sign ``portal``'s owner in; the session cookie and a CSRF token for it."""
    console.client.session.cookie_jar.clear()
    await console.sign_in(portal.ownerEmail, portal.ownerPassword)
    page = await console.get("/portals")
    cookie = console.cookie(session.COOKIE)
    assert cookie is not None and page.css("input[name=csrf]"), page.text
    return cookie.value, page.csrf


@pytest.fixture
async def scene(
    client: AppClient,
    make_portal: Any,
    pool: asyncpg.Pool,
    caplog: pytest.LogCaptureFixture,
) -> Scene:
    portal_a = await make_portal("alpha", owner_email="owner@alpha.example.com")
    portal_b = await make_portal("bravo", owner_email="owner@bravo.example.com")
    a = await populate(Api(client, portal_a.apiKey), "alphaco", portal_a)
    b = await populate(Api(client, portal_b.apiKey), "bravoco", portal_b)
    console = Console(client)
    cookie, csrf = await signed_in(console, portal_a)
    caplog.set_level(logging.INFO)
    return Scene(Attacker(client, cookie, csrf), console, a, b, pool, caplog)


def judge(
    scene: Scene,
    label: str,
    answer: Answer,
    before: dict[str, str],
    after: dict[str, str],
    *,
    must_refuse: bool,
) -> None:
    """The rules every answer keeps; a refused request (a 4xx, or one that had to be) changed nothing."""
    assert answer.status < 500, f"{label} → {answer.status}: {answer.text[:2000]}"
    # PostgreSQL refusing a value is the wrapper's last net: the form's checks come first.
    loud = [
        r
        for r in scene.caplog.records
        if r.levelno >= logging.ERROR or r.exc_info or "refused by PostgreSQL" in r.getMessage()
    ]
    assert not loud, f"{label} logged {[r.getMessage() for r in loud]}"
    for marker in scene.b.markers:
        assert marker not in answer.text and marker not in answer.location, f"{label} shows {marker!r}"
    if must_refuse or 400 <= answer.status < 500:
        changed = {t for t, h in before.items() if after.get(t) != h}
        assert not changed, f"{label} was refused ({answer.status}) but changed {changed}"


def refused(answer: Answer) -> bool:
    return 400 <= answer.status < 500 or answer.location.startswith("/sign-in")


async def attempt(
    scene: Scene,
    label: str,
    method: str,
    path: str,
    data: Any = None,
    *,
    must_refuse: bool = False,
    **options: Any,
) -> Answer:
    """Send one attack and judge the answer (``must_refuse``: it has to be refused)."""
    before = await scene.fingerprint()
    scene.caplog.clear()
    answer = await scene.attacker.send(method, path, data, **options)
    judge(scene, label, answer, before, await scene.fingerprint(), must_refuse=must_refuse)
    if must_refuse:
        assert refused(answer), f"{label} was accepted: {answer.status} {answer.location}"
    if method == "POST" and not refused(answer):
        # It went through (a sign-out, a switch, a delete…): go on with a live session.
        await scene.sign_in_again()
    return answer


def ids_to_try(scene: Scene, route: tuple[str, str, str, dict[str, Any]], param: str) -> Iterator[str]:
    """Malformed ids, then portal B's ids of the parameter's kind (of every kind when unknown)."""
    yield from MALFORMED_IDS
    kind = kind_of(route[1], param)
    for each in [kind] if kind else KINDS:
        yield scene.b.ids[each]


def params(path: str) -> list[str]:
    return re.findall(r"{(\w+)}", path)


@pytest.mark.parametrize("route", WITH_IDS, ids=route_id)
async def test_malformed_and_foreign_ids_are_refused(scene: Scene, route: Any) -> None:
    method, path = route[0], route[1]
    for param in params(path):
        for value in ids_to_try(scene, route, param):
            target = scene.path(route, **{param: value})
            data = scene.attacker.form() if method == "POST" else None
            label = f"{method} {target[:120]}"
            answer = await attempt(scene, label, method, target, data, must_refuse=True)
            assert answer.status in (400, 403, 404), f"{label} → {answer.status}"


@pytest.mark.parametrize("route", GETS, ids=route_id)
async def test_bad_query_strings(scene: Scene, route: Any) -> None:
    path = scene.path(route)
    for query in QUERIES:
        for headers in ({}, {"HX-Request": "true"}):
            url = f"{path}?{query}"
            await attempt(scene, f"GET {url[:120]} {headers}", "GET", url, headers=headers)


def bodies(attacker: Attacker) -> Iterator[tuple[str, Any, dict[str, str]]]:
    """(label, body, headers) of the malformed forms sent to every POST route."""
    token = attacker.csrf
    yield "empty form", attacker.form(), {}
    yield "empty fields", attacker.form(dict.fromkeys(FIELDS, "")), {}
    for value in (
        "-1",
        "99999999999999999999",
        "1e308",
        "NaN",
        "x\x00y",
        "\ufffd\u202e",
        " " * 3,
        "x" * 20_000,
    ):
        yield f"every field {value[:20]!r}", attacker.form(dict.fromkeys(FIELDS, value)), {}
    duplicated = attacker.form()
    for name in FIELDS:
        for value in ("1", "", "other"):
            duplicated.add_field(name, value)
    yield "duplicate fields", duplicated, {}
    as_files = attacker.form()
    for name in FIELDS:
        as_files.add_field(name, io.BytesIO(NOT_AN_IMAGE), filename="x.png", content_type="image/png")
    yield "every field a file that is not an image", as_files, {}
    yield "a huge image", _with_logo(attacker, BIG_IMAGE, "image/png"), {}
    yield "an image that says it is HTML", _with_logo(attacker, png(), "text/html"), {}
    yield "a logo that is not an image", _with_logo(attacker, NOT_AN_IMAGE, "image/jpeg"), {}
    yield "an empty logo with a name", _with_logo(attacker, b"", "image/png"), {}
    form = urlencoded(FIELDS, token, b"%FF%FE%00")
    yield "invalid UTF-8 percent-escapes", form, {"Content-Type": "application/x-www-form-urlencoded"}
    raw = b"&".join(f.encode() + b"=\xff\xfe" for f in FIELDS) + b"&csrf=" + token.encode()
    yield "raw bytes that are not UTF-8", raw, {"Content-Type": "application/x-www-form-urlencoded"}
    yield (
        "a JSON body",
        msgspec.json.encode(dict.fromkeys(FIELDS, 1) | {"csrf": token}),
        {
            "Content-Type": "application/json",
            "X-CSRF-Token": token,
        },
    )
    yield "plain text", b"name=x", {"Content-Type": "text/plain", "X-CSRF-Token": token}
    yield (
        "multipart with no boundary",
        b"--x\r\n",
        {"Content-Type": "multipart/form-data", "X-CSRF-Token": token},
    )
    broken = b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nunterminated'
    yield (
        "multipart cut short",
        broken,
        {"Content-Type": "multipart/form-data; boundary=b", "X-CSRF-Token": token},
    )
    yield (
        "file parts over every limit, chunked",
        in_chunks(multipart_files(token, 10 * 1024 * 1024)),
        {"Content-Type": "multipart/form-data; boundary=B"},
    )
    yield (
        "a body over every limit",
        io.BytesIO(urlencoded(["name"], token, b"x" * (9 * 1024 * 1024))),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )


def multipart_files(token: str, size: int) -> bytes:
    """A multipart form by hand: the CSRF token, then file parts adding up to ``size`` bytes."""
    parts = [b'--B\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n' + token.encode() + b"\r\n"]
    for number in range(size // (1024 * 1024) + 1):
        head = f'--B\r\nContent-Disposition: form-data; name="logo"; filename="{number}.png"\r\n'
        parts.append(head.encode() + b"Content-Type: image/png\r\n\r\n" + BIG_IMAGE[: 1024 * 1024] + b"\r\n")
    return b"".join(parts) + b"--B--\r\n"


async def in_chunks(data: bytes) -> Any:
    """``data`` sent with no Content-Length (chunked), as a client that streams does."""
    for start in range(0, len(data), 256 * 1024):
        yield data[start : start + 256 * 1024]


def urlencoded(names: list[str], token: str, value: bytes) -> bytes:
    return b"&".join(n.encode() + b"=" + value for n in names) + b"&csrf=" + token.encode()


def _with_logo(attacker: Attacker, data: bytes, content_type: str) -> FormData:
    form = attacker.form()
    for name in ("logo", "branding.logo"):
        form.add_field(name, io.BytesIO(data), filename="logo.png", content_type=content_type)
    return form


async def rows_naming(pool: asyncpg.Pool, numbers: list[int], portal_name: str) -> list[str]:
    """Rows of ``portal_name``'s portal (or of no portal) that hold any of ``numbers``."""
    pattern = "|".join(rf"\m{n}\M" for n in numbers)
    async with pool.acquire() as conn:
        portal_id = await conn.fetchval("SELECT id FROM portals WHERE name = $1", portal_name)
        found = []
        for (table,) in await conn.fetch(_TABLES):
            rows = await conn.fetch(
                f'SELECT to_jsonb(x)::text FROM "{table}" x WHERE to_jsonb(x)::text ~ $1 '
                "AND coalesce(to_jsonb(x)->>'portal_id', $2) = $2",
                pattern,
                str(portal_id),
            )
            found += [f"{table}: {row[0][:200]}" for row in rows]
    return found


@pytest.mark.parametrize("route", POSTS, ids=route_id)
async def test_portal_b_ids_in_forms_touch_nothing_of_b(scene: Scene, route: Any) -> None:
    """A's manager sends B's ids in every field: B is unchanged and nothing of A points at B."""
    b_ids = list(scene.b.ids.values())
    numbers = [n for n in (ids.decode(i) for i in b_ids) if n is not None]
    for value in b_ids:
        form = scene.attacker.form(dict.fromkeys(FIELDS, value))
        await attempt(scene, f"POST {route[1]} B's id {value}", "POST", scene.path(route), form)
        linked = await rows_naming(scene.pool, numbers, "alpha")
        assert not linked, f"POST {route[1]} with B's id {value} made A's rows point at B: {linked}"
    for kind, value in scene.b.ids.items():
        assert await b_still_has(scene, kind, value), f"B's {kind} is gone after {route[1]}"


async def b_still_has(scene: Scene, kind: str, text_id: str) -> bool:
    api = Api(scene.console.client, scene.b.portal.apiKey)
    paths = {
        "channel": "/channels/",
        "package": "/packages/",
        "subscriber": "/subscribers/",
        "manager": "/managers/",
        "webhook": "/webhooks/",
        "epg_source": "/epg-sources/",
    }
    status, _ = await api.get(paths[kind] + text_id)
    return status == 200


@pytest.mark.parametrize("route", POSTS, ids=route_id)
async def test_malformed_bodies(scene: Scene, route: Any) -> None:
    for label, body, headers in bodies(scene.attacker):
        await attempt(scene, f"POST {route[1]} {label}", "POST", scene.path(route), body, headers=headers)


def forged_cookies(scene: Scene) -> Iterator[tuple[str, str | None]]:
    yield "no cookie", None
    yield "an empty cookie", ""
    yield "garbage", "%%%not-base64%%%"
    yield "base64 of garbage", base64.urlsafe_b64encode(b"\xff" * 40).decode()
    yield "an overlong cookie", "A" * 3000
    fake = session.SignedIn([session.PortalSession(scene.b.portal.name, "x", "f" * 43)])
    yield "a well-formed cookie with a made-up token", session.encode(fake)
    out_of_range = session.SignedIn([session.PortalSession("x", "x", "f" * 43)], current=5)
    yield "a cookie pointing past its portals", session.encode(out_of_range)


@pytest.mark.parametrize("route", PRIVATE_POSTS, ids=route_id)
async def test_posts_without_trust_are_refused(scene: Scene, route: Any) -> None:
    path = scene.path(route)
    attacker = scene.attacker
    cases: list[tuple[str, Any, dict[str, Any]]] = [
        ("no CSRF token", attacker.form(csrf=None), {}),
        ("a wrong CSRF token", attacker.form(csrf="x" * 43), {}),
        ("an empty CSRF token", attacker.form(csrf=""), {}),
        ("a foreign Origin", attacker.form(), {"origin": "https://evil.example.com"}),
        ("no Origin", attacker.form(), {"origin": None}),
        ("Origin null", attacker.form(), {"origin": "null"}),
    ]
    for label, form, options in cases:
        answer = await attempt(scene, f"POST {path} {label}", "POST", path, form, must_refuse=True, **options)
        assert answer.status == 403, f"POST {path} {label} → {answer.status}"
    for label, cookie in forged_cookies(scene):
        await attempt(
            scene, f"POST {path} {label}", "POST", path, attacker.form(), cookie=cookie, must_refuse=True
        )
    # B's owner's CSRF token on A's session: a token is bound to its session.
    other = Console(scene.console.client)
    _, b_csrf = await signed_in(other, scene.b.portal)
    await scene.sign_in_again()
    answer = await attempt(
        scene, f"POST {path} B's CSRF token", "POST", path, attacker.form(csrf=b_csrf), must_refuse=True
    )
    assert answer.status == 403


@pytest.mark.parametrize("route", [r for r in GETS if not r[3].get("public")], ids=route_id)
async def test_pages_without_a_session_send_to_sign_in(scene: Scene, route: Any) -> None:
    path = scene.path(route)
    for label, cookie in forged_cookies(scene):
        answer = await attempt(scene, f"GET {path} {label}", "GET", path, cookie=cookie, must_refuse=True)
        assert answer.location.startswith("/sign-in"), f"GET {path} {label} → {answer.status}"


async def test_an_expired_session_is_refused(scene: Scene) -> None:
    """A session the database no longer has (idle expiry, a password change) is signed out."""
    await scene.pool.execute("DELETE FROM manager_sessions")
    for route in PRIVATE_POSTS:
        path = scene.path(route)
        await attempt(scene, f"POST {path} expired", "POST", path, scene.attacker.form(), must_refuse=True)
        await scene.pool.execute("DELETE FROM manager_sessions")


# Headers and cookies every request may carry, however odd.
ODD_HEADERS = [
    {"Accept-Language": "q=nan;ru;q=inf,,,*;q=-1, x" * 50},
    {"Accept-Language": "\u0416\u0416"},
    {"Cookie": "catena_lang=%00; catena_notice=%FF%FE%00" + "%41" * 3000},
    {"Cookie": "catena_notice=<script>alert(1)</script>"},
    {"Cookie": f"{session.COOKIE}=x"},
    {"HX-Request": "true", "HX-History-Restore-Request": "true"},
    {"X-Forwarded-Host": "evil.example.com", "X-Forwarded-Proto": "gopher"},
]


@pytest.mark.parametrize("route", GETS, ids=route_id)
async def test_odd_headers_and_cookies(scene: Scene, route: Any) -> None:
    path = scene.path(route)
    for headers in ODD_HEADERS:
        answer = await attempt(scene, f"GET {path} {str(headers)[:80]}", "GET", path, headers=headers)
        assert "<script>alert" not in answer.text


def test_every_route_is_attacked() -> None:
    """The walk sees the whole table: each section's pages are in it."""
    paths = {path for _, path, _, _ in ROUTES}
    assert {"/channels/{id}", "/subscribers/{id}", "/managers/{id}", "/portal/webhooks/{id}/delete"} <= paths
    assert len(POSTS) > 10 and len(WITH_IDS) > 10

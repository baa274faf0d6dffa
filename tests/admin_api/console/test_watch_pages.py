"""Dashboard, Play sessions and Operations through the test client: figures, filters, pages, CSV."""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg

from catena import ids, portals
from tests.admin_api._subscribers_support import create_subscriber, insert_operations
from tests.admin_api.test_play_sessions import insert_session
from tests.conftest import Api

from .conftest import Console, make_manager, owner_console

NOW = int(time.time())


async def _channel(api: Api, name: str, title: str) -> dict[str, Any]:
    status, body = await api.post("/channels", {"name": name, "title": title})
    assert status == 200, body
    return dict(body)


async def _csv(console: Console, path: str) -> list[dict[str, str]]:
    async with console.client.get(path) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/csv"
        assert resp.headers["Content-Disposition"].startswith("attachment;")
        return list(csv.DictReader(io.StringIO(await resp.text())))


def _utc_input(unix: int) -> str:
    """A time as a datetime-local filter sends it once console.js converted it to UTC."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M")


# Dashboard


async def test_dashboard_shows_the_portal_now(
    console: Console, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    sport = await _channel(api, "sport1", "Sport One")
    await _channel(api, "news", "News")
    await api.post("/epg-sources", {"name": "main-epg", "url": "https://epg.example.com/guide.xml"})
    first, second = (
        await create_subscriber(api, phone="9160000001"),
        await create_subscriber(api, phone="9160000002"),
    )
    await create_subscriber(api, phone="9160000003")
    await api.post(f"/subscribers/{second['subscriberId']}/disable")
    sport_id = ids.decode(sport["channelId"])
    # Opened just now (not at import time, which may be an hour earlier): the chart's last bar.
    now = int(time.time())
    for n, sub in enumerate((first, first, second)):
        subscriber = ids.decode(sub["subscriberId"])
        await insert_session(
            pool, portal.portalId, now, subscriber=subscriber, channel=sport_id, active=True, n=n
        )
    await insert_session(pool, portal.portalId, now, channel=sport_id, n=7)
    await owner_console(console, portal)
    page = await console.get("/")
    assert page.status == 200
    assert page.one("nav a[aria-current=page]").text_content() == "Dashboard"
    assert page.texts("#f-viewers, #t-viewers") == ["3", "viewers now"]
    assert page.texts("#f-watching") == ["2"]
    assert page.texts("#f-subscribers, #t-subscribers") == ["3", "subscribers"]
    assert page.texts("#f-subscriber-counts") == ["1 disabled · 0 with a package"]
    assert page.texts("#top-channels tbody td") == ["Sport One", "3"]
    assert page.texts("#epg-problems strong, #epg-problems .badge") == ["main-epg", "never fetched"]
    assert page.texts("#unguided-count") == ["2 channels have no programmes for the next 24 hours."]
    assert page.texts("#unguided a") == ["News", "Sport One"]
    # The chart: 24 hours, the current one (last) the busiest, at full height.
    bars = page.css("svg.chart rect.bar")
    assert len(bars) == 24 and bars[-1].get("height") == "120"
    assert {bar.get("height") for bar in bars[:-1]} <= {"0", "120"}
    assert page.texts("#hours tbody td")[-1] == "4"
    # It refreshes itself: htmx polls / every 10 s and gets the figures alone.
    poll = page.one("#figures")
    assert (poll.get("hx-get"), poll.get("hx-trigger"), poll.get("hx-swap")) == (
        "/",
        "every 10s",
        "innerHTML",
    )
    fragment = await console.get("/", headers={"HX-Request": "true"})
    assert fragment.status == 200 and not fragment.css("nav") and fragment.texts("#f-viewers") == ["3"]


async def test_dashboard_numbers_agree_in_russian(
    console: Console, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    for n in range(2):
        await insert_session(pool, portal.portalId, NOW - 60, channel=ids.new_id(), active=True, n=n)
    await create_subscriber(api)
    await owner_console(console, portal)
    await console.post("/language", {"lang": "ru", "next": "/"}, csrf=False)
    page = await console.get("/")
    assert page.one("html").get("lang") == "ru"
    assert page.texts("#t-viewers") == ["зрителя сейчас"]
    assert page.texts("#t-subscribers") == ["абонент"]
    for n in range(2, 5):
        await insert_session(pool, portal.portalId, NOW - 60, channel=ids.new_id(), active=True, n=n)
    page = await console.get("/")
    assert page.texts("#f-viewers, #t-viewers") == ["5", "зрителей сейчас"]


async def test_an_empty_portal_says_so(console: Console, portal: portals.CreatedPortal) -> None:
    await owner_console(console, portal)
    page = await console.get("/")
    assert page.texts("#f-viewers, #t-viewers") == ["0", "viewers now"]
    assert page.texts("#top-channels-empty") == ["Nobody is watching now."]
    assert page.texts("#epg-problems-none") == ["Every EPG source is up to date."]
    assert page.texts("#unguided-none") == ["Every channel has programmes for the next 24 hours."]
    assert {bar.get("height") for bar in page.css("svg.chart rect.bar")} == {"0"}


# Play sessions


async def _sessions(pool: asyncpg.Pool, portal: portals.CreatedPortal) -> dict[str, Any]:
    """Two subscribers, two channels, open and closed sessions an hour apart."""
    a, b, news, sport = ids.new_id(), ids.new_id(), ids.new_id(), ids.new_id()
    made = {
        "a_news_old": await insert_session(pool, portal.portalId, NOW - 7200, subscriber=a, channel=news),
        "b_sport_open": await insert_session(
            pool, portal.portalId, NOW - 3600, subscriber=b, channel=sport, active=True
        ),
        "a_sport_open": await insert_session(
            pool, portal.portalId, NOW - 60, subscriber=a, channel=sport, active=True
        ),
    }
    return {
        **made,
        "a": ids.encode(a),
        "b": ids.encode(b),
        "news": ids.encode(news),
        "sport": ids.encode(sport),
    }


def _listed(page: Any) -> list[str]:
    return [row.get("id").removeprefix("session-") for row in page.css("#rows tr[id]")]


async def test_play_sessions_filters(
    console: Console, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    s = await _sessions(pool, portal)
    await owner_console(console, portal)
    page = await console.get("/play-sessions")
    assert _listed(page) == [s["a_sport_open"], s["b_sport_open"], s["a_news_old"]]
    assert page.texts("#rows tr[id] .badge") == ["open", "open"]
    assert {label.text_content() for label in page.css("form.filters label")} == {
        "Subscriber", "Channel", "Status", "Opened from", "Opened before"
    }  # fmt: skip
    assert _listed(await console.get(f"/play-sessions?subscriber={s['a']}")) == [
        s["a_sport_open"],
        s["a_news_old"],
    ]
    assert _listed(await console.get(f"/play-sessions?channel={s['sport']}&status=closed")) == []
    assert _listed(await console.get("/play-sessions?status=closed")) == [s["a_news_old"]]
    assert _listed(await console.get("/play-sessions?status=open")) == [s["a_sport_open"], s["b_sport_open"]]
    window = f"from={_utc_input(NOW - 5400)}&to={_utc_input(NOW - 600)}"
    page = await console.get(f"/play-sessions?{window}")
    assert _listed(page) == [s["b_sport_open"]]
    # The form shows the filters as sent (UTC; console.js shows them in the browser's zone).
    assert page.one("#q-from").get("value") == _utc_input(NOW - 5400)
    assert page.one("#q-from").get("data-utc") is not None
    # A row's subscriber and channel link to the list filtered by them.
    link = page.one(f"tr[id='session-{s['b_sport_open']}'] td:nth-child(3) a").get("href")
    assert _listed(await console.get(link)) == [s["b_sport_open"]]


async def test_play_sessions_bad_filter_is_shown_beside_it(
    console: Console, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    await owner_console(console, portal)
    page = await console.get("/play-sessions?subscriber=nope")
    assert page.status == 400
    assert "subscriberId must be an id" in page.field_error("subscriber")
    page = await console.get("/play-sessions?from=yesterday")
    assert page.status == 400 and "not a valid UTC date or time" in page.field_error("from")
    assert page.one("#rows").get("hx-trigger") is None


async def test_play_sessions_pages_and_live_refresh(
    console: Console, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    made = [await insert_session(pool, portal.portalId, NOW - 6000 + n, n=n) for n in range(55)]
    await owner_console(console, portal)
    page = await console.get("/play-sessions?status=closed")
    assert _listed(page) == made[::-1][:50]
    assert page.one("#rows").get("hx-trigger") == "every 10s"
    assert page.one("#rows").get("hx-get") == "/play-sessions?status=closed"
    more = page.one("#rows tr.more a").get("href")
    older = await console.get(more)
    assert _listed(older) == made[::-1][50:] and not older.css("#rows tr.more")
    # A later page stays still; it links back to the newest.
    assert older.one("#rows").get("hx-trigger") is None
    assert older.texts(".list-note a") == ["Back to the newest"]
    # What htmx fetches every 10 s: the rows alone, a new session on top.
    newest = await insert_session(pool, portal.portalId, NOW - 10, n=99)
    rows = await console.get("/play-sessions?status=closed", headers={"HX-Request": "true"})
    fragment = [row.get("id").removeprefix("session-") for row in rows.css("tr[id]")]
    assert not rows.css("nav") and fragment[:2] == [newest, made[-1]]


async def test_play_sessions_csv_exports_everything_matching(
    console: Console, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    s = await _sessions(pool, portal)
    for n in range(60):
        await insert_session(pool, portal.portalId, NOW - 9000 + n, subscriber=ids.decode(s["b"]), n=n)
    await owner_console(console, portal)
    page = await console.get(f"/play-sessions?subscriber={s['b']}")
    export = page.one("a[download]")
    assert export.text_content() == "Export CSV"
    assert export.get("href") == f"/play-sessions/export?subscriber={s['b']}"
    # Even from a later page the export is every match, not a page.
    later = await console.get(page.one("#rows tr.more a").get("href"))
    assert later.one("a[download]").get("href") == export.get("href")
    rows = await _csv(console, export.get("href"))
    assert len(rows) == 61 and {r["subscriberId"] for r in rows} == {s["b"]}
    first = rows[0]
    assert first["sessionId"] == s["b_sport_open"] and first["channelId"] == s["sport"]
    assert (first["active"], first["closedAt"], first["ip"]) == ("true", "", "192.168.1.100")
    rows = await _csv(console, "/play-sessions/export?status=open")
    assert [r["sessionId"] for r in rows] == [s["a_sport_open"], s["b_sport_open"]]


async def test_tenants_see_only_their_sessions(
    console: Console, portal: portals.CreatedPortal, make_portal: Any, pool: asyncpg.Pool
) -> None:
    other = await make_portal()
    theirs = await insert_session(pool, other.portalId, NOW - 60, active=True)
    await owner_console(console, portal)
    assert _listed(await console.get("/play-sessions")) == []
    assert await _csv(console, "/play-sessions/export") == []
    page = await console.get("/")
    assert page.texts("#f-viewers") == ["0"]
    assert theirs not in (await console.get("/play-sessions")).text


# Operations


async def test_operations_filters_and_detail(
    console: Console, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    subscriber = await create_subscriber(api)
    status, package = await api.post("/packages", {"name": "basic"})
    assert status == 200, package
    await api.post(
        "/packages-subscribers",
        {"subscriberId": subscriber["subscriberId"], "packageId": package["packageId"]},
    )
    staff = await make_manager(api, "billing@example.com", isSubscriberAdmin=True)
    await owner_console(console, portal)
    page = await console.get("/operations")
    assert page.texts("#rows td:nth-child(2)") == [
        "createSubscriber", "createPackage", "createPackageSubscriber", "createManager"
    ]  # fmt: skip
    assert page.texts("#rows td:nth-child(5)") == ["apiKey"] * 4
    assert {label.text_content() for label in page.css("form.filters label")} == {
        "Type", "Subscriber", "Package", "Manager", "From", "Before"
    }  # fmt: skip
    by_type = await console.get("/operations?type=createPackageSubscriber")
    assert by_type.texts("#rows td:nth-child(2)") == ["createPackageSubscriber"]
    by_subscriber = await console.get(f"/operations?subscriber={subscriber['subscriberId']}")
    assert by_subscriber.texts("#rows td:nth-child(2)") == ["createSubscriber", "createPackageSubscriber"]
    by_package = await console.get(f"/operations?package={package['packageId']}")
    assert by_package.texts("#rows td:nth-child(2)") == ["createPackage", "createPackageSubscriber"]
    assert (await console.get("/operations?manager=apiKey")).texts("#rows td:nth-child(2)")[
        -1
    ] == "createManager"
    assert (await console.get("/operations?manager=nobody@example.com")).texts("#rows td") == [
        "No operations match."
    ]
    # The manager filter is the API's too.
    status, body = await api.get(f"/operations?managerEmail={portal.ownerEmail}")
    assert status == 200 and body["operations"] == []
    assert staff["email"] == "billing@example.com"
    # One operation's detail.
    detail = await console.get(by_type.one("#rows td:first-child a").get("href"))
    assert detail.status == 200
    assert detail.texts("#operation dd")[0] == "createPackageSubscriber"
    assert '"managerEmail": "apiKey"' in detail.one("#payload").text_content()
    assert (await console.get("/operations/AAAAAAAAAAA.")).status == 404


async def test_operations_time_range_paging_and_csv(
    console: Console, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    at = [datetime.fromtimestamp(NOW - 7200 + n, UTC) for n in range(60)]
    await insert_operations(pool, portal.portalId, at)
    await insert_operations(
        pool, portal.portalId, [datetime.fromtimestamp(NOW - 60, UTC)], type="deletePackage"
    )
    await owner_console(console, portal)
    page = await console.get("/operations?type=createSubscriber")
    assert len(page.css("#rows tr:not(.more)")) == 50
    later = await console.get(page.one("#rows tr.more a").get("href"))
    assert len(later.css("#rows tr")) == 10 and later.texts(".list-note a") == ["Back to the first page"]
    window = await console.get(f"/operations?from={_utc_input(NOW - 600)}")
    assert window.texts("#rows td:nth-child(2)") == ["deletePackage"]
    bad = await console.get("/operations?from=soon")
    assert bad.status == 400 and "created_at_gte" in bad.field_error("from")
    export = later.one("a[download]").get("href")
    assert export == "/operations/export?type=createSubscriber"
    rows = await _csv(console, export)
    assert len(rows) == 60 and {r["type"] for r in rows} == {"createSubscriber"}
    rows = await _csv(console, f"/operations/export?to={_utc_input(NOW - 600)}")
    assert len(rows) == 60


async def test_a_manager_without_flags_reads_every_page(
    console: Console, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    await _sessions(pool, portal)
    await create_subscriber(api)
    reader = await make_manager(api, "reader@example.com")
    await console.sign_in(reader["email"])
    for path in ("/", "/play-sessions", "/operations", "/play-sessions/export", "/operations/export"):
        async with console.client.get(path) as resp:
            assert resp.status == 200, path
    for path in ("/", "/play-sessions", "/operations"):
        page = await console.get(path)
        # Read-only pages: the only forms are the filters (GET) and the header's own.
        assert [f.get("action") for f in page.css("main form[method=post]")] == [], path
    page = await console.get("/operations")
    assert page.css("#rows a")
    detail = await console.get(page.css("#rows td a")[0].get("href"))
    assert detail.status == 200

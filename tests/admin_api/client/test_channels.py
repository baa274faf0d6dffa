"""GET /channels, /channels/{name}/programs and /channels/{name}/logo."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import jwt
import pytest

from catena import ids
from catena.portals import CreatedPortal
from catena.tokens import TokenCodec

from .conftest import App, Made

BASE = "http://127.0.0.1:8090"


def at_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


@pytest.fixture
async def viewer(app: App, made: Made, codec: TokenCodec, portal_id: int) -> tuple[App, int, str]:
    """A signed-in subscriber: its app, id and token."""
    subscriber_id = await made.subscriber()
    token = codec.sign(subscriber_id, portal_id, 1)
    return app.with_token(token), subscriber_id, token


async def test_channels_of_subscriptions_and_free_packages_once_each(
    viewer: tuple[App, int, str], made: Made
) -> None:
    app, subscriber_id, token = viewer
    news = await made.channel("news", "Новости 24")
    sport = await made.channel("sport", "Sport HD")
    movies = await made.channel("movies", "movies")
    hidden = await made.channel("hidden", "Adults only")
    basic = await made.package("basic", news, sport, free=True)
    premium = await made.package("premium", sport, movies)
    await made.package("extra", hidden)
    await made.subscribe(subscriber_id, premium)
    assert basic

    status, body = await app.get("/channels")
    assert status == 200, body
    # Each channel once, ordered by title regardless of case, then name.
    assert [c["name"] for c in body["channels"]] == ["movies", "sport", "news"]
    by_name = {c["name"]: c for c in body["channels"]}
    assert by_name["news"]["title"] == "Новости 24"
    assert by_name["sport"]["group"] == "basic"  # the first package by name
    assert by_name["movies"]["group"] == "premium"
    assert by_name["news"]["channelId"] == ids.encode(news)
    assert by_name["sport"]["playbackUrl"] == f"{BASE}/sport/index.m3u8?token={token}"
    assert by_name["sport"]["logo"] is None
    assert by_name["sport"]["current"] is None and by_name["sport"]["next"] is None
    assert by_name["sport"]["archiveDays"] == 7


async def test_title_order_is_case_insensitive(viewer: tuple[App, int, str], made: Made) -> None:
    app, _, _ = viewer
    ids_ = [
        await made.channel(name, title)
        for name, title in [("c1", "beta"), ("c2", "Alpha"), ("c3", "alpha"), ("c4", "Gamma")]
    ]
    await made.package("basic", *ids_, free=True)
    _, body = await app.get("/channels")
    assert [c["name"] for c in body["channels"]] == ["c2", "c3", "c1", "c4"]


async def test_now_and_next_from_the_guide(viewer: tuple[App, int, str], made: Made) -> None:
    app, _, token = viewer
    now = at_minute(datetime.now(UTC))
    source = await made.epg_source("main")
    channel = await made.channel("news", "News", epg=("main", "news.ru"))
    await made.package("basic", channel, free=True)
    await made.program(source, "news.ru", now - timedelta(hours=2), now - timedelta(hours=1), "Earlier")
    current = await made.program(
        source,
        "news.ru",
        now - timedelta(hours=1),
        now + timedelta(minutes=30),
        "Morning news",
        description="Headlines",
        genre="News",
        language="ru",
    )
    await made.program(source, "news.ru", now + timedelta(minutes=30), now + timedelta(hours=1), "Weather")
    await made.program(source, "news.ru", now + timedelta(hours=1), now + timedelta(hours=2), "Later")
    await made.program(source, "other", now - timedelta(minutes=5), now + timedelta(hours=1), "Not ours")

    _, body = await app.get("/channels")
    [entry] = body["channels"]
    assert entry["current"] == {
        "programId": ids.encode(current),
        "title": "Morning news",
        "start": (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "end": (now + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "description": "Headlines",
        "genre": "News",
        "rating": None,
        "language": "ru",
        "archiveUrl": None,
    }
    assert entry["next"]["title"] == "Weather"
    assert token


async def test_programme_without_end_runs_until_the_next(viewer: tuple[App, int, str], made: Made) -> None:
    app, _, _ = viewer
    now = at_minute(datetime.now(UTC))
    source = await made.epg_source("main")
    await made.package("basic", await made.channel("news", epg=("main", "n")), free=True)
    await made.program(source, "n", now - timedelta(minutes=10), None, "Open-ended")
    await made.program(source, "n", now + timedelta(minutes=20), None, "Then")
    _, body = await app.get("/channels")
    [entry] = body["channels"]
    assert entry["current"]["title"] == "Open-ended" and entry["current"]["end"] is None
    assert entry["next"]["title"] == "Then"


async def test_gap_in_the_guide_has_no_current(viewer: tuple[App, int, str], made: Made) -> None:
    app, _, _ = viewer
    now = at_minute(datetime.now(UTC))
    source = await made.epg_source("main")
    await made.package("basic", await made.channel("news", epg=("main", "n")), free=True)
    await made.program(source, "n", now - timedelta(hours=2), now - timedelta(hours=1), "Over")
    await made.program(source, "n", now + timedelta(hours=1), now + timedelta(hours=2), "Later")
    _, body = await app.get("/channels")
    assert body["channels"][0]["current"] is None
    assert body["channels"][0]["next"]["title"] == "Later"


async def test_guide_of_another_portals_source_with_the_same_name_is_not_used(
    viewer: tuple[App, int, str], made: Made, make_portal: Any, pool: asyncpg.Pool
) -> None:
    app, _, _ = viewer
    now = at_minute(datetime.now(UTC))
    other = await make_portal()
    foreign = Made(pool, ids.decode(other.portalId) or 0)
    foreign_source = await foreign.epg_source("main")
    await foreign.program(
        foreign_source, "n", now - timedelta(minutes=5), now + timedelta(hours=1), "Foreign"
    )
    await made.package("basic", await made.channel("news", epg=("main", "n")), free=True)
    _, body = await app.get("/channels")
    assert body["channels"][0]["current"] is None


async def test_logo_url_serves_the_image_without_a_token(
    viewer: tuple[App, int, str], made: Made, portal: CreatedPortal
) -> None:
    app, _, _ = viewer
    channel = await made.channel("news")
    await made.package("basic", channel, free=True)
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 32
    await made.logo(channel, png, etag="abc123")
    _, body = await app.get("/channels")
    logo = body["channels"][0]["logo"]
    host = app.host
    assert logo == f"http://{host}/client/api/v1/channels/news/logo?portalId={portal.portalId}&v=abc123"
    path = logo.removeprefix(f"http://{host}/client/api/v1")
    status, headers, data = await app.with_token(None).at("127.0.0.1").raw(path)
    assert status == 200 and data == png and headers["Content-Type"] == "image/png"
    assert "max-age" in headers["Cache-Control"]
    status, _, data = await app.with_token(None).raw(path, headers={"If-None-Match": headers["ETag"]})
    assert status == 304 and data == b""


async def test_missing_logo_and_other_portals_logo_are_404(
    app: App, made: Made, make_portal: Any, pool: asyncpg.Pool
) -> None:
    await made.channel("plain")
    status, _, _ = await app.raw("/channels/plain/logo")
    assert status == 404
    other = await make_portal()
    foreign = Made(pool, ids.decode(other.portalId) or 0)
    await foreign.logo(await foreign.channel("theirs"), b"\x89PNG\r\n\x1a\nxx")
    status, _, _ = await app.raw("/channels/theirs/logo")
    assert status == 404
    status, _, _ = await app.at(other.domain).raw("/channels/theirs/logo")
    assert status == 200


async def test_programs_of_a_day_with_archive_urls_within_the_depth(
    viewer: tuple[App, int, str], made: Made
) -> None:
    app, _, token = viewer
    await made.settings(archiveDays=2)
    source = await made.epg_source("main")
    await made.package("basic", await made.channel("news", epg=("main", "n")), free=True)
    today = datetime.now(UTC).date()
    three_days_ago = today - timedelta(days=3)
    yesterday = today - timedelta(days=1)
    for day in (three_days_ago, yesterday):
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        await made.program(source, "n", midnight + timedelta(hours=10), midnight + timedelta(hours=11), "Ten")
        await made.program(
            source, "n", midnight + timedelta(hours=11), midnight + timedelta(hours=12), "Eleven"
        )

    status, body = await app.get(f"/channels/news/programs?date={yesterday.isoformat()}")
    assert status == 200, body
    assert body["channel"] == "news" and body["date"] == yesterday.isoformat() and body["tz"] == "UTC"
    assert [p["title"] for p in body["programs"]] == ["Ten", "Eleven"]
    start = int(datetime(yesterday.year, yesterday.month, yesterday.day, 10, tzinfo=UTC).timestamp())
    assert body["programs"][0]["archiveUrl"] == f"{BASE}/news/index-{start}-3600.m3u8?token={token}"

    status, body = await app.get(f"/channels/news/programs?date={three_days_ago.isoformat()}")
    assert [p["title"] for p in body["programs"]] == ["Ten", "Eleven"]
    assert [p["archiveUrl"] for p in body["programs"]] == [None, None]


async def test_future_and_airing_programmes_have_no_archive_url(
    viewer: tuple[App, int, str], made: Made
) -> None:
    app, _, _ = viewer
    now = at_minute(datetime.now(UTC))
    source = await made.epg_source("main")
    await made.package("basic", await made.channel("news", epg=("main", "n")), free=True)
    await made.program(source, "n", now - timedelta(minutes=30), now + timedelta(minutes=30), "Airing")
    await made.program(source, "n", now + timedelta(minutes=30), now + timedelta(minutes=90), "Soon")
    status, body = await app.get(f"/channels/news/programs?date={now.date().isoformat()}")
    assert status == 200
    assert {p["title"]: p["archiveUrl"] for p in body["programs"]} == {"Airing": None, "Soon": None}


async def test_no_archive_when_the_portal_keeps_none(viewer: tuple[App, int, str], made: Made) -> None:
    app, _, _ = viewer
    await made.settings(archiveDays=0)
    now = at_minute(datetime.now(UTC))
    source = await made.epg_source("main")
    await made.package("basic", await made.channel("news", epg=("main", "n")), free=True)
    await made.program(source, "n", now - timedelta(hours=2), now - timedelta(hours=1), "Past")
    _, body = await app.get("/channels")
    assert body["channels"][0]["archiveDays"] == 0
    status, body = await app.get(f"/channels/news/programs?date={(now - timedelta(hours=2)).date()}")
    assert status == 200 and [p["archiveUrl"] for p in body["programs"]] == [None]


async def test_programs_day_follows_the_time_zone(viewer: tuple[App, int, str], made: Made) -> None:
    app, _, _ = viewer
    source = await made.epg_source("main")
    await made.package("basic", await made.channel("news", epg=("main", "n")), free=True)
    # 22:00 UTC on 1 March is 01:00 on 2 March in Moscow (UTC+3).
    await made.program(
        source, "n", datetime(2030, 3, 1, 22, tzinfo=UTC), datetime(2030, 3, 1, 23, tzinfo=UTC), "Late show"
    )
    _, utc = await app.get("/channels/news/programs?date=2030-03-01")
    _, moscow = await app.get("/channels/news/programs?date=2030-03-02&tz=Europe/Moscow")
    assert [p["title"] for p in utc["programs"]] == ["Late show"]
    assert [p["title"] for p in moscow["programs"]] == ["Late show"]
    _, moscow_first = await app.get("/channels/news/programs?date=2030-03-01&tz=Europe/Moscow")
    assert moscow_first["programs"] == []


@pytest.mark.parametrize("date", ["yesterday", "2024-02-30", "2024-1-5", "20240105", "2024-01-05T00:00"])
async def test_a_date_that_is_not_a_date_is_400(viewer: tuple[App, int, str], made: Made, date: str) -> None:
    app, _, _ = viewer
    await made.package("basic", await made.channel("news"), free=True)
    status, body = await app.get("/channels/news/programs", params={"date": date})
    assert status == 400 and body["field"] == "date"
    assert "YYYY-MM-DD" in body["message"]


async def test_unknown_time_zone_is_400(viewer: tuple[App, int, str], made: Made) -> None:
    app, _, _ = viewer
    await made.package("basic", await made.channel("news"), free=True)
    for tz in ("Mars/Olympus", "../../etc/passwd"):
        status, body = await app.get("/channels/news/programs", params={"tz": tz})
        assert status == 400 and body["field"] == "tz"


async def test_programs_of_a_channel_not_in_the_packages_is_404(
    viewer: tuple[App, int, str], made: Made
) -> None:
    app, _, _ = viewer
    await made.package("paid", await made.channel("paid1"))
    for name in ("paid1", "nonexistent", "x" * 300):
        status, body = await app.get(f"/channels/{name}/programs")
        assert status == 404 and body["error"] == "not_found", name


async def test_a_disabled_subscriber_gets_401(viewer: tuple[App, int, str], pool: asyncpg.Pool) -> None:
    app, subscriber_id, _ = viewer
    await pool.execute("UPDATE subscribers SET disabled = true WHERE id = $1", subscriber_id)
    status, body = await app.get("/channels")
    assert status == 401 and body["error"] == "subscriber_disabled"


async def test_a_reset_token_gets_401(
    viewer: tuple[App, int, str], pool: asyncpg.Pool, codec: TokenCodec, portal_id: int
) -> None:
    app, subscriber_id, _ = viewer
    await pool.execute(
        "UPDATE subscribers SET token_version = token_version + 1 WHERE id = $1", subscriber_id
    )
    status, body = await app.get("/channels")
    assert status == 401 and body["error"] == "token_revoked"
    status, _ = await app.with_token(codec.sign(subscriber_id, portal_id, 2)).get("/channels")
    assert status == 200


async def test_a_deleted_subscriber_gets_401(viewer: tuple[App, int, str], pool: asyncpg.Pool) -> None:
    app, subscriber_id, _ = viewer
    await pool.execute("DELETE FROM subscribers WHERE id = $1", subscriber_id)
    status, body = await app.get("/channels")
    assert status == 401 and body["error"] == "unknown_subscriber"


async def test_forged_expired_and_missing_tokens_get_401(
    viewer: tuple[App, int, str], admin_settings: Any, portal_id: int
) -> None:
    app, subscriber_id, token = viewer
    claims = {"sub": ids.encode(subscriber_id), "prt": ids.encode(portal_id), "ver": 1}
    forged = jwt.encode(claims, "not-our-secret-at-all-0123456789", algorithm="HS256", headers={"kid": "dev"})
    kid, _, secret = admin_settings.token_secrets.partition(",")[0].partition(":")
    expired = jwt.encode({**claims, "exp": 1}, secret, algorithm="HS256", headers={"kid": kid})
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for bad in (forged, expired, tampered, "garbage", "a.b.c"):
        status, body = await app.with_token(bad).get("/channels")
        assert status == 401 and body["error"] == "invalid_token", bad
    status, body = await app.with_token(None).get("/channels")
    assert status == 401 and body["error"] == "missing_token"
    status, body = await app.with_token(None).get("/channels", headers={"Authorization": "Basic eDp5"})
    assert status == 401 and body["error"] == "missing_token"


async def test_another_portals_subscriber_sees_only_its_portal(
    app: App, made: Made, make_portal: Any, pool: asyncpg.Pool, codec: TokenCodec
) -> None:
    await made.package("basic", await made.channel("ours"), free=True)
    other = await make_portal()
    other_id = ids.decode(other.portalId) or 0
    foreign = Made(pool, other_id)
    await foreign.package("basic", await foreign.channel("theirs"), free=True)
    stranger = await foreign.subscriber()
    # Whatever Host the app uses, the token decides the portal.
    status, body = await app.with_token(codec.sign(stranger, other_id, 1)).get("/channels")
    assert status == 200 and [c["name"] for c in body["channels"]] == ["theirs"]
    status, _ = await app.with_token(codec.sign(stranger, other_id, 1)).get("/channels/ours/programs")
    assert status == 404


async def test_token_claiming_another_portal_is_401(
    viewer: tuple[App, int, str], make_portal: Any, codec: TokenCodec
) -> None:
    app, subscriber_id, _ = viewer
    other = await make_portal()
    status, body = await app.with_token(codec.sign(subscriber_id, ids.decode(other.portalId) or 0, 1)).get(
        "/channels"
    )
    assert status == 401 and body["error"] == "unknown_subscriber"


async def test_playback_url_follows_the_portal_template(viewer: tuple[App, int, str], made: Made) -> None:
    app, _, token = viewer
    await made.settings(playbackUrlTemplate="https://cdn.example.tv/live/")
    await made.package("basic", await made.channel("news"), free=True)
    _, body = await app.get("/channels")
    assert body["channels"][0]["playbackUrl"] == f"https://cdn.example.tv/live/news/index.m3u8?token={token}"


async def test_token_in_the_query_string_works_too(viewer: tuple[App, int, str], made: Made) -> None:
    app, _, token = viewer
    await made.package("basic", await made.channel("news"), free=True)
    status, body = await app.with_token(None).get("/channels", params={"token": token})
    assert status == 200 and len(body["channels"]) == 1

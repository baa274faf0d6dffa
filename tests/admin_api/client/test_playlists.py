"""GET /playlist.m3u8 and /epg.xml: what third-party players load."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import asyncpg
import pytest
from lxml import etree

from catena import ids
from catena.portals import CreatedPortal
from catena.tokens import TokenCodec

from .conftest import App, Made


@pytest.fixture
async def viewer(app: App, made: Made, codec: TokenCodec, portal_id: int) -> tuple[App, str]:
    subscriber_id = await made.subscriber()
    token = codec.sign(subscriber_id, portal_id, 1)
    return app.with_token(token), token


@pytest.fixture
async def lineup(made: Made) -> int:
    """Two channels with a guide, one without; one has a logo.  Returns the EPG source id."""
    source = await made.epg_source("main")
    news = await made.channel("news", 'The "News", live', epg=("main", "news.ru"))
    sport = await made.channel("sport", "Спорт", epg=("main", "sport.ru"))
    plain = await made.channel("plain", "Plain")
    await made.logo(news, b"\x89PNG\r\n\x1a\nlogo", etag="n1")
    await made.package("basic", news, plain, free=True)
    await made.package("more", sport, news, free=True)
    return source


async def test_playlist_is_extended_m3u_with_player_attributes(
    viewer: tuple[App, str], lineup: int, portal: CreatedPortal
) -> None:
    app, token = viewer
    status, headers, body = await app.raw("/playlist.m3u8")
    assert status == 200
    assert headers["Content-Type"] == "audio/x-mpegurl; charset=utf-8"
    host = f"http://{app.host}/client/api/v1"
    lines = body.decode().splitlines()
    assert (
        lines[0] == f'#EXTM3U url-tvg="{host}/epg.xml?token={token}" x-tvg-url="{host}/epg.xml?token={token}"'
    )
    assert lines[1:] == [
        '#EXTINF:-1 tvg-id="plain" tvg-name="Plain" group-title="basic" '
        'catchup="flussonic" catchup-days="7",Plain',
        f"http://127.0.0.1:8090/plain/index.m3u8?token={token}",
        f'#EXTINF:-1 tvg-id="news" tvg-name="The \'News\', live" '
        f'tvg-logo="{host}/channels/news/logo?portalId={portal.portalId}&v=n1" group-title="basic" '
        f'catchup="flussonic" catchup-days="7",The "News", live',
        f"http://127.0.0.1:8090/news/index.m3u8?token={token}",
        '#EXTINF:-1 tvg-id="sport" tvg-name="Спорт" group-title="more" '
        'catchup="flussonic" catchup-days="7",Спорт',
        f"http://127.0.0.1:8090/sport/index.m3u8?token={token}",
    ]


async def test_playlist_without_archive_has_no_catchup(viewer: tuple[App, str], made: Made) -> None:
    app, _ = viewer
    await made.settings(archiveDays=0)
    await made.package("basic", await made.channel("news"), free=True)
    _, _, body = await app.raw("/playlist.m3u8")
    assert "catchup" not in body.decode()


async def test_playlist_takes_the_token_in_the_query_string(viewer: tuple[App, str], lineup: int) -> None:
    app, token = viewer
    status, _, body = await app.with_token(None).raw("/playlist.m3u8", params={"token": token})
    assert status == 200 and body.startswith(b"#EXTM3U")
    status, _, body = await app.with_token(None).raw("/playlist.m3u8", params={"token": token + "x"})
    assert status == 401 and b"invalid_token" in body


async def test_playlist_revalidates_with_its_etag(viewer: tuple[App, str], lineup: int, made: Made) -> None:
    app, _ = viewer
    _, headers, _ = await app.raw("/playlist.m3u8")
    assert headers["Cache-Control"].startswith("private")
    status, _, body = await app.raw("/playlist.m3u8", headers={"If-None-Match": headers["ETag"]})
    assert status == 304 and body == b""
    await made.package("late", await made.channel("late"), free=True)
    status, _, body = await app.raw("/playlist.m3u8", headers={"If-None-Match": headers["ETag"]})
    assert status == 200 and b'tvg-id="late"' in body


async def guide_programmes(made: Made, source: int, now: datetime) -> None:
    hour = now.replace(minute=0, second=0, microsecond=0)
    await made.program(
        source, "news.ru", hour - timedelta(days=8), hour - timedelta(days=8, minutes=-30), "Too old"
    )
    await made.program(
        source,
        "news.ru",
        hour - timedelta(days=2),
        hour - timedelta(days=2, minutes=-30),
        "Two days ago",
        description="<b>bold</b> & more",
        genre="News",
        rating="16+",
        language="ru",
    )
    await made.program(source, "news.ru", hour, None, "Open end")
    await made.program(source, "news.ru", hour + timedelta(hours=1), hour + timedelta(hours=2), "Next hour")
    await made.program(
        source, "sport.ru", hour + timedelta(days=2), hour + timedelta(days=2, hours=1), "Match \x07 day"
    )
    await made.program(
        source, "sport.ru", hour + timedelta(days=5), hour + timedelta(days=5, hours=1), "Too far"
    )


async def test_guide_is_xmltv_of_the_same_channels(
    viewer: tuple[App, str], lineup: int, made: Made, portal: CreatedPortal
) -> None:
    app, _ = viewer
    now = datetime.now(UTC)
    await guide_programmes(made, lineup, now)
    status, headers, body = await app.raw("/epg.xml")
    assert status == 200, body
    assert headers["Content-Type"] == "application/xml; charset=utf-8"
    tv = etree.fromstring(body)
    assert tv.tag == "tv"
    channels = {c.get("id"): c for c in tv.findall("channel")}
    assert list(channels) == ["plain", "news", "sport"]  # the playlist's tvg-id values, in its order
    assert channels["sport"].findtext("display-name") == "Спорт"
    assert f"/channels/news/logo?portalId={portal.portalId}&v=n1" in channels["news"].find("icon").get("src")
    assert channels["plain"].find("icon") is None
    programmes = [(p.get("channel"), p.findtext("title")) for p in tv.findall("programme")]
    # By default: the archive depth back (7 days), three days ahead.
    assert programmes == [
        ("news", "Two days ago"),
        ("news", "Open end"),
        ("news", "Next hour"),
        ("sport", "Match  day"),
    ]
    old = tv.findall("programme")[0]
    hour = now.replace(minute=0, second=0, microsecond=0)
    assert old.get("start") == (hour - timedelta(days=2)).strftime("%Y%m%d%H%M%S +0000")
    assert old.findtext("desc") == "<b>bold</b> & more" and old.find("desc").get("lang") == "ru"
    assert old.findtext("category") == "News" and old.findtext("rating/value") == "16+"
    # A programme without an end ends when the next one starts.
    assert tv.findall("programme")[1].get("stop") == (hour + timedelta(hours=1)).strftime(
        "%Y%m%d%H%M%S +0000"
    )


async def test_guide_window_follows_the_query(viewer: tuple[App, str], lineup: int, made: Made) -> None:
    app, _ = viewer
    await guide_programmes(made, lineup, datetime.now(UTC))
    _, _, body = await app.raw("/epg.xml", params={"days": "6", "pastDays": "0"})
    titles = [p.findtext("title") for p in etree.fromstring(body).findall("programme")]
    assert titles == ["Open end", "Next hour", "Match  day", "Too far"]
    _, _, body = await app.raw("/epg.xml", params={"days": "1", "pastDays": "9"})
    titles = [p.findtext("title") for p in etree.fromstring(body).findall("programme")]
    assert titles == ["Too old", "Two days ago", "Open end", "Next hour"]


@pytest.mark.parametrize(
    "params", [{"days": "0"}, {"days": "15"}, {"days": "soon"}, {"pastDays": "-1"}, {"pastDays": "99"}]
)
async def test_guide_window_out_of_range_is_400(viewer: tuple[App, str], params: dict[str, str]) -> None:
    app, _ = viewer
    status, _, body = await app.raw("/epg.xml", params=params)
    assert status == 400 and next(iter(params)).encode() in body


async def test_guide_caching_headers_and_304(viewer: tuple[App, str], lineup: int, made: Made) -> None:
    app, _ = viewer
    now = datetime.now(UTC)
    await guide_programmes(made, lineup, now)
    _, headers, _ = await app.raw("/epg.xml")
    assert headers["ETag"].startswith('W/"')
    assert headers["Cache-Control"] == "private, max-age=3600"
    modified = parsedate_to_datetime(headers["Last-Modified"])
    assert now - timedelta(hours=1, minutes=1) < modified <= now + timedelta(seconds=1)
    status, _, body = await app.raw("/epg.xml", headers={"If-None-Match": headers["ETag"]})
    assert status == 304 and body == b""
    status, _, _ = await app.raw("/epg.xml", headers={"If-Modified-Since": headers["Last-Modified"]})
    assert status == 304
    # A new import changes the guide, and so its ETag.
    await made.program(lineup, "news.ru", now + timedelta(hours=3), now + timedelta(hours=4), "Breaking")
    status, headers2, body = await app.raw("/epg.xml", headers={"If-None-Match": headers["ETag"]})
    assert status == 200 and b"Breaking" in body and headers2["ETag"] != headers["ETag"]


async def test_guide_is_compressed_for_clients_that_ask(
    viewer: tuple[App, str], lineup: int, made: Made
) -> None:
    app, _ = viewer
    await guide_programmes(made, lineup, datetime.now(UTC))
    async with app.client.get(
        "/client/api/v1/epg.xml",
        headers={"Host": app.host or "", "Authorization": f"Bearer {app.bearer}", "Accept-Encoding": "gzip"},
        auto_decompress=False,
    ) as resp:
        assert resp.status == 200 and resp.headers["Content-Encoding"] == "gzip"
        raw = await resp.read()
    assert etree.fromstring(gzip.decompress(raw)).tag == "tv"


async def test_guide_streams_many_channels_in_batches(
    viewer: tuple[App, str], made: Made, pool: asyncpg.Pool
) -> None:
    app, _ = viewer
    source = await made.epg_source("big")
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    channel_ids = []
    for n in range(120):
        channel_ids.append(await made.channel(f"ch{n:03d}", f"Channel {n:03d}", epg=("big", f"e{n}")))
    await made.package("all", *channel_ids, free=True)
    rows = [
        (
            n * 1000 + k,
            made.portal_id,
            source,
            f"e{n}",
            hour + timedelta(hours=k),
            hour + timedelta(hours=k + 1),
            f"Show {n}-{k}",
        )
        for n in range(120)
        for k in range(24)
    ]
    await pool.copy_records_to_table(
        "epg_programs",
        records=rows,
        columns=["id", "portal_id", "epg_source_id", "epg_channel_name", "start_at", "end_at", "title"],
    )
    status, _, body = await app.raw("/epg.xml")
    assert status == 200
    tv = etree.fromstring(body)
    assert len(tv.findall("channel")) == 120
    programmes = tv.findall("programme")
    assert len(programmes) == 120 * 24
    assert programmes[-1].get("channel") == "ch119" and programmes[-1].findtext("title") == "Show 119-23"


async def test_guide_needs_a_valid_token(
    app: App, lineup: int, made: Made, pool: asyncpg.Pool, codec: TokenCodec, portal_id: int
) -> None:
    status, _, _ = await app.raw("/epg.xml")
    assert status == 401
    subscriber_id = await made.subscriber(disabled=True)
    status, _, body = await app.raw("/epg.xml", params={"token": codec.sign(subscriber_id, portal_id, 1)})
    assert status == 401 and b"subscriber_disabled" in body


async def test_empty_lineup_gives_valid_documents(viewer: tuple[App, str]) -> None:
    app, _ = viewer
    _, _, body = await app.raw("/playlist.m3u8")
    assert body.decode().count("\n") == 1
    _, _, body = await app.raw("/epg.xml")
    assert etree.fromstring(body).tag == "tv" and len(etree.fromstring(body)) == 0


async def test_another_portals_programmes_stay_out_of_the_guide(
    viewer: tuple[App, str], lineup: int, make_portal: Any, pool: asyncpg.Pool
) -> None:
    app, _ = viewer
    other = await make_portal()
    foreign = Made(pool, ids.decode(other.portalId) or 0)
    src = await foreign.epg_source("main")
    await foreign.program(src, "news.ru", datetime.now(UTC), None, "Foreign show")
    _, _, body = await app.raw("/epg.xml")
    assert b"Foreign show" not in body


async def test_a_host_that_is_not_a_host_name_is_400(viewer: tuple[App, str], lineup: int) -> None:
    app, _ = viewer
    status, _, body = await app.at('evil"><x').raw("/playlist.m3u8")
    assert status == 400 and b'"field":"Host"' in body


async def test_trusted_proxy_sets_scheme_and_host_of_urls(
    make_app: Any, made: Made, codec: TokenCodec, portal_id: int
) -> None:
    app = await make_app(client_trusted_proxies="127.0.0.1,::1")
    token = codec.sign(await made.subscriber(), portal_id, 1)
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "tv.example.com"}
    _, _, body = await app.with_token(token).raw("/playlist.m3u8", headers=headers)
    assert body.decode().startswith('#EXTM3U url-tvg="https://tv.example.com/client/api/v1/epg.xml?token=')

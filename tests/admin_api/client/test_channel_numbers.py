"""Channel numbers in the client API (issue 11), and a channel linked to a source created later."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lxml import etree

from catena import ids
from catena.tokens import TokenCodec
from tests.conftest import Api

from .conftest import App, Made


async def viewer(app: App, made: Made, codec: TokenCodec, portal_id: int) -> App:
    subscriber_id = await made.subscriber()
    return app.with_token(codec.sign(subscriber_id, portal_id, 1))


async def numbered_lineup(api: Api, made: Made) -> None:
    """Five free channels: two numbered (created last), three not."""
    for name, title, number in [
        ("zeta", "alpha", None),
        ("beta", "Beta", None),
        ("news", "Новости", 7),
        ("alpha", "Zulu", None),
        ("sport", "Спорт", 3),
    ]:
        status, body = await api.post("/channels", {"name": name, "title": title, "number": number})
        assert status == 200, body
    channel_ids = [r["id"] for r in await made.pool.fetch("SELECT id FROM channels ORDER BY id")]
    await made.package("basic", *channel_ids, free=True)


async def test_client_list_is_ordered_by_number_then_title(
    api: Api, app: App, made: Made, codec: TokenCodec, portal_id: int
) -> None:
    await numbered_lineup(api, made)
    watcher = await viewer(app, made, codec, portal_id)
    status, body = await watcher.get("/channels")
    assert status == 200, body
    assert [(c["name"], c["number"]) for c in body["channels"]] == [
        ("sport", 3),
        ("news", 7),
        ("zeta", None),  # then as before numbers existed: by title, ignoring case
        ("beta", None),
        ("alpha", None),
    ]


async def test_playlist_carries_tvg_chno_in_number_order(
    api: Api, app: App, made: Made, codec: TokenCodec, portal_id: int
) -> None:
    await numbered_lineup(api, made)
    watcher = await viewer(app, made, codec, portal_id)
    status, _, body = await watcher.raw("/playlist.m3u8")
    assert status == 200
    entries = [line for line in body.decode().splitlines() if line.startswith("#EXTINF")]
    assert [e.split('tvg-id="')[1].split('"')[0] for e in entries] == [
        "sport",
        "news",
        "zeta",
        "beta",
        "alpha",
    ]
    assert 'tvg-name="Спорт" tvg-chno="3"' in entries[0]
    assert "tvg-chno" not in entries[2]
    status, _, guide = await watcher.raw("/epg.xml")
    assert [c.get("id") for c in etree.fromstring(guide).findall("channel")][:2] == ["sport", "news"]


async def test_renumbering_changes_the_playlist_etag(
    api: Api, app: App, made: Made, codec: TokenCodec, portal_id: int
) -> None:
    await numbered_lineup(api, made)
    watcher = await viewer(app, made, codec, portal_id)
    _, headers, _ = await watcher.raw("/playlist.m3u8")
    _, guide_headers, _ = await watcher.raw("/epg.xml")
    _, page = await api.get("/channels", params={"name": "beta"})
    await api.put(f"/channels/{page['channels'][0]['channelId']}", {"number": 1})
    _, after, body = await watcher.raw("/playlist.m3u8")
    assert after["ETag"] != headers["ETag"]
    assert body.decode().splitlines()[1].startswith('#EXTINF:-1 tvg-id="beta"')
    _, guide_after, _ = await watcher.raw("/epg.xml")
    assert guide_after["ETag"] != guide_headers["ETag"]


async def test_channel_linked_before_its_source_exists_shows_programmes_once_it_does(
    api: Api, app: App, made: Made, codec: TokenCodec, portal_id: int
) -> None:
    """Manual §3.1 creates the channel with "main-epg", §3.3 creates the source afterwards."""
    status, channel = await api.post(
        "/channels",
        {"name": "sport1", "title": "Спорт HD", "epgSourceName": "main-epg", "epgChannelName": "sport.ru"},
    )
    assert status == 200, channel
    await made.package("basic", made_id(channel["channelId"]), free=True)
    watcher = await viewer(app, made, codec, portal_id)
    _, body = await watcher.get("/channels")
    assert body["channels"][0]["current"] is None, "no source of that name yet"

    status, source = await api.post(
        "/epg-sources", {"name": "main-epg", "url": "https://epg.example.com/x.xml"}
    )
    assert status == 200
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    await made.program(
        made_id(source["epgSourceId"]),
        "sport.ru",
        now - timedelta(minutes=5),
        now + timedelta(hours=1),
        "Матч",
    )
    _, body = await watcher.get("/channels")
    assert body["channels"][0]["current"]["title"] == "Матч", "linked by itself"

    await api.put(f"/epg-sources/{source['epgSourceId']}", {"name": "renamed"})
    _, again = await api.get(f"/channels/{channel['channelId']}")
    assert again["epgSourceName"] == "renamed", "a rename still follows into channels"
    assert (await watcher.get("/channels"))[1]["channels"][0]["current"]["title"] == "Матч"
    await api.delete(f"/epg-sources/{source['epgSourceId']}")
    _, gone = await api.get(f"/channels/{channel['channelId']}")
    assert (gone["epgSourceName"], gone["epgChannelName"]) == (None, None), "a delete still unlinks"


def made_id(text: str) -> int:
    value = ids.decode(text)
    assert value is not None
    return value

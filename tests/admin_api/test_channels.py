from __future__ import annotations

import asyncio
import base64
import io
from typing import Any, cast

import asyncpg
import msgspec
import pytest

from catena import ids
from tests.admin_api.content_support import (
    GIF,
    JPEG,
    data_uri,
    entitlement_version,
    fault,
    listening,
    login_staff,
    op_types,
    operations_of,
    png,
    portal_id,
)
from tests.conftest import CURSORS, Api

LOGO = png(3, 3)


async def create_channel(api: Api, name: str = "sport1", **fields: Any) -> dict[str, Any]:
    status, body = await api.post("/channels", {"name": name, "title": fields.pop("title", name), **fields})
    assert status == 200, body
    return cast(dict[str, Any], body)


def decoded(public_id: str) -> int:
    """The database id behind a public id, which must be valid."""
    value = ids.decode(public_id)
    assert value is not None, public_id
    return value


async def channel_count(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        count: int = await conn.fetchval("SELECT count(*) FROM channels")
        return count


async def test_manual_walkthrough(api: Api, pool: asyncpg.Pool, portal: Any) -> None:
    """§3.1–3.2: a channel with a logo, a package, linking, unlinking, deleting."""
    status, channel = await api.post(
        "/channels", {"name": "sport1", "title": "Спорт HD", "logo": data_uri(LOGO)}
    )
    assert status == 200, channel
    assert channel["title"] == "Спорт HD" and channel["packages"] == []
    assert channel["portalId"] == portal.portalId
    assert "logo" not in channel
    assert channel["logoUrl"] == f"/tv-management/api/v1/channels/{channel['channelId']}/logo"

    status, image = await api.get(f"/channels/{channel['channelId']}/logo")
    assert status == 200 and image == LOGO

    status, package = await api.post("/packages", {"name": "premium", "description": "Премиум пакет"})
    assert status == 200 and package["channels"] == []
    link = {"channelId": channel["channelId"], "packageId": package["packageId"], "portalId": portal.portalId}
    status, body = await api.post("/channels-packages", link)
    assert status == 200 and body == link

    assert (await api.get(f"/channels/{channel['channelId']}"))[1]["packages"] == ["premium"]
    assert (await api.get(f"/packages/{package['packageId']}"))[1]["channels"] == ["sport1"]
    assert (await api.get("/channels"))[1]["channels"][0]["packages"] == ["premium"]

    status, _ = await api.delete("/channels-packages", link)
    assert status == 201
    assert (await api.get(f"/channels/{channel['channelId']}"))[1]["packages"] == []
    assert (await api.get(f"/packages/{package['packageId']}"))[1]["channels"] == []

    status, _ = await api.delete(f"/channels/{channel['channelId']}")
    assert status == 201
    assert (await api.get(f"/channels/{channel['channelId']}"))[0] == 404
    assert (await api.get(f"/channels/{channel['channelId']}/logo"))[0] == 404
    assert await op_types(pool, portal) == [
        "createChannel",
        "createPackage",
        "addChannelToPackage",
        "removeChannelFromPackage",
        "deleteChannel",
    ]


async def test_unicode_and_emoji_titles_round_trip(api: Api) -> None:
    title = "Первый канал 📺 — «HD»"
    channel = await create_channel(api, "first_channel", title=title)
    assert (await api.get(f"/channels/{channel['channelId']}"))[1]["title"] == title


async def test_logo_headers_etag_and_304(api: Api) -> None:
    channel = await create_channel(api, logo=data_uri(JPEG, "image/jpeg"))
    path = f"/channels/{channel['channelId']}/logo"
    async with api.client.get(
        "/tv-management/api/v1" + path, headers={"X-Auth-Token": api.token or ""}
    ) as resp:
        assert resp.status == 200
        assert resp.content_type == "image/jpeg"
        assert await resp.read() == JPEG
        etag = resp.headers["ETag"]
        assert etag.endswith('"') and "no-cache" in resp.headers["Cache-Control"]
    status, body = await api.get(path, headers={"If-None-Match": etag})
    assert status == 304 and body == b""
    status, body = await api.get(path, headers={"If-None-Match": '"something-else"'})
    assert status == 200 and body == JPEG

    await api.put(f"/channels/{channel['channelId']}", {"logo": data_uri(LOGO)})
    status, body = await api.get(path, headers={"If-None-Match": etag})
    assert status == 200 and body == LOGO


async def test_logo_type_comes_from_the_image_not_the_label(api: Api) -> None:
    channel = await create_channel(api, logo=data_uri(JPEG, "image/png"))
    async with api.client.get(
        f"/tv-management/api/v1/channels/{channel['channelId']}/logo",
        headers={"X-Auth-Token": api.token or ""},
    ) as resp:
        assert resp.content_type == "image/jpeg"


async def test_logo_can_be_replaced_and_removed(api: Api) -> None:
    channel = await create_channel(api, logo=data_uri(LOGO))
    path = f"/channels/{channel['channelId']}"
    status, body = await api.put(path, {"title": "New title"})
    assert status == 200 and body["logoUrl"] is not None, "a PUT without logo keeps it"
    status, body = await api.put(path, {"logo": None})
    assert status == 200 and body["logoUrl"] is None
    status, body = await api.get(path + "/logo")
    assert status == 404 and body["field"] == "id"


async def test_list_never_carries_logo_bytes(api: Api) -> None:
    await create_channel(api, logo=data_uri(png(10, 10)))
    status, body = await api.get("/channels")
    assert status == 200
    assert "base64" not in msgspec.json.encode(body).decode()


@pytest.mark.parametrize(
    "name", ["a", "x" * 21, "спорт", "sport 1", "sport.1", "sport/1", "", "sport1\n", 42, None]
)
async def test_name_rules(api: Api, pool: asyncpg.Pool, portal: Any, name: Any) -> None:
    status, body = await api.post("/channels", {"name": name, "title": "T"})
    assert status == 400, body
    assert body["field"] == "name" and body["message"]
    assert await channel_count(pool) == 0
    assert await operations_of(pool, portal) == []


@pytest.mark.parametrize("title", ["", "x" * 201, None])
async def test_title_rules(api: Api, pool: asyncpg.Pool, title: Any) -> None:
    status, body = await api.post("/channels", {"name": "sport1", "title": title})
    assert status == 400 and body["field"] == "title"
    assert await channel_count(pool) == 0


async def test_duplicate_name_is_409_and_changes_nothing(api: Api, pool: asyncpg.Pool, portal: Any) -> None:
    await create_channel(api, title="Первый")
    status, body = await api.post("/channels", {"name": "sport1", "title": "Второй"})
    assert status == 409
    assert body["message"] == "Name must be unique" and body["field"] == "name"
    assert await channel_count(pool) == 1
    assert await op_types(pool, portal) == ["createChannel"]
    assert (await api.get("/channels"))[1]["channels"][0]["title"] == "Первый"


async def test_two_portals_may_both_have_sport1(api: Api, make_portal: Any, client: Any) -> None:
    other = api.as_((await make_portal()).apiKey)
    first = await create_channel(api)
    second = await create_channel(other)
    assert first["channelId"] != second["channelId"]
    assert [c["name"] for c in (await other.get("/channels"))[1]["channels"]] == ["sport1"]


async def test_renaming_a_channel_is_refused(api: Api, pool: asyncpg.Pool, portal: Any) -> None:
    channel = await create_channel(api)
    path = f"/channels/{channel['channelId']}"
    status, body = await api.put(path, {"name": "sport2", "title": "Changed"})
    assert status == 400 and body["field"] == "name"
    assert (await api.get(path))[1]["title"] == "sport1", "nothing changed"
    status, body = await api.put(path, {"name": "sport1", "title": "Спорт Full HD"})
    assert status == 200 and body["title"] == "Спорт Full HD"
    assert await op_types(pool, portal) == ["createChannel", "updateChannel"]


async def test_a_get_body_can_be_put_back(api: Api) -> None:
    channel = await create_channel(api, logo=data_uri(LOGO))
    path = f"/channels/{channel['channelId']}"
    status, body = await api.put(path, {**channel, "title": "Renamed"})
    assert status == 200 and body["title"] == "Renamed" and body["logoUrl"]
    status, body = await api.put(path, {**channel, "packages": ["premium"]})
    assert status == 400 and body["field"] == "packages"
    status, body = await api.put(path, {**channel, "channelId": "AAAAAAAAAAE."})
    assert status == 400 and body["field"] == "channelId"


@pytest.mark.parametrize(
    ("logo", "hint"),
    [
        ("data:image/png;base64,!!!not-base64!!!", "base64"),
        ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgA", "base64"),
        (data_uri(GIF, "image/gif"), "PNG or JPEG"),
        (data_uri(GIF, "image/png"), "PNG or JPEG"),
        (data_uri(b"just some text"), "PNG or JPEG"),
        (data_uri(png(noise=b"x" * (5 * 1024 * 1024))), "1 MiB"),
        (data_uri(png(noise=b"x" * (1024 * 1024))), "1 MiB"),
        ("https://example.com/logo.png", "data:"),
        (base64.b64encode(LOGO).decode(), "data:"),
        ("", "data:"),
    ],
    ids=[
        "garbage",
        "bad-padding",
        "gif",
        "gif-labelled-png",
        "text",
        "5MiB",
        "just-over-1MiB",
        "url",
        "bare-base64",
        "empty",
    ],
)
async def test_bad_logos(api: Api, pool: asyncpg.Pool, portal: Any, logo: str, hint: str) -> None:
    status, body = await send(api, "POST", "/channels", {"name": "sport1", "title": "T", "logo": logo})
    assert status == 400, body
    assert body["field"] == "logo" and hint in body["message"]
    assert await channel_count(pool) == 0

    channel = await create_channel(api, "sport2", logo=data_uri(LOGO))
    status, body = await send(api, "PUT", f"/channels/{channel['channelId']}", {"title": "X", "logo": logo})
    assert status == 400 and body["field"] == "logo"
    assert (await api.get(f"/channels/{channel['channelId']}/logo"))[1] == LOGO
    assert (await api.get(f"/channels/{channel['channelId']}"))[1]["title"] == "sport2"
    assert await op_types(pool, portal) == ["createChannel"]


async def test_a_logo_of_exactly_1_mib_is_accepted(api: Api) -> None:
    # The text chunk adds 12 bytes of framing and "Comment\0" to the noise.
    image = png(noise=b"x" * (1024 * 1024 - len(png()) - 20))
    assert len(image) == 1024 * 1024
    status, channel = await send(
        api, "POST", "/channels", {"name": "big", "title": "T", "logo": data_uri(image)}
    )
    assert status == 200, channel
    assert (await api.get(f"/channels/{channel['channelId']}/logo"))[1] == image


async def test_a_body_beyond_8_mib_is_413(api: Api, pool: asyncpg.Pool) -> None:
    logo = data_uri(png(noise=b"x" * (7 * 1024 * 1024)))
    status, body = await send(api, "POST", "/channels", {"name": "huge", "title": "T", "logo": logo})
    assert status == 413 and body["error"] == "payload_too_large"
    assert await channel_count(pool) == 0


async def send(api: Api, method: str, path: str, body: Any) -> tuple[int, Any]:
    """A JSON request whose body may be megabytes (streamed, so aiohttp does not warn)."""
    data = io.BytesIO(msgspec.json.encode(body))
    return await api.call(method, path, data=data, headers={"Content-Type": "application/json"})


async def test_epg_link_may_name_a_source_not_created_yet(api: Api, pool: asyncpg.Pool) -> None:
    """Manual §3.1 links a channel to "main-epg" before §3.3 creates that source (issue 11)."""
    status, body = await api.post(
        "/channels", {"name": "sport1", "title": "T", "epgSourceName": "main-epg", "epgChannelName": "s1"}
    )
    assert status == 200 and body["epgSourceName"] == "main-epg" and body["epgChannelName"] == "s1"
    await api.post("/epg-sources", {"name": "main-epg", "url": "https://epg.example.com/xmltv.xml"})
    channel = await create_channel(api, "sport2", epgSourceName="main-epg", epgChannelName="sport-channel-1")
    assert channel["epgSourceName"] == "main-epg" and channel["epgChannelName"] == "sport-channel-1"
    status, body = await api.put(f"/channels/{channel['channelId']}", {"epgSourceName": None})
    assert status == 200 and body["epgSourceName"] is None and body["epgChannelName"] == "sport-channel-1"
    status, body = await api.put(f"/channels/{channel['channelId']}", {"epgSourceName": "later-epg"})
    assert status == 200 and body["epgSourceName"] == "later-epg"


async def test_delete_removes_the_channel_from_every_package(
    api: Api, pool: asyncpg.Pool, portal: Any, database_url: str
) -> None:
    channel = await create_channel(api)
    packages = [(await api.post("/packages", {"name": n}))[1] for n in ("basic", "premium")]
    for package in packages:
        await api.post(
            "/channels-packages", {"channelId": channel["channelId"], "packageId": package["packageId"]}
        )
    async with listening(database_url) as signals:
        status, _ = await api.delete(f"/channels/{channel['channelId']}")
        assert status == 201
        [signal] = await signals.wait_for(1)
    assert (signal.kind, signal.ids) == ("channel", [ids.decode(channel["channelId"])])
    for package in packages:
        assert (await api.get(f"/packages/{package['packageId']}"))[1]["channels"] == []
    deleted = (await operations_of(pool, portal))[-1]
    assert deleted["type"] == "deleteChannel"
    assert deleted["payload"]["packageNames"] == ["basic", "premium"]
    assert deleted["payload"]["managerEmail"] == "apiKey"


async def test_other_portals_channels_are_404(api: Api, make_portal: Any, pool: asyncpg.Pool) -> None:
    other = api.as_((await make_portal()).apiKey)
    theirs = await create_channel(other, logo=data_uri(LOGO))
    path = f"/channels/{theirs['channelId']}"
    for status, body in [
        await api.get(path),
        await api.get(path + "/logo"),
        await api.put(path, {"title": "mine now"}),
        await api.delete(path),
    ]:
        assert status == 404 and body["field"] == "id"
    assert (await other.get(path))[1]["title"] == "sport1"
    assert (await api.get("/channels"))[1]["channels"] == []


@pytest.mark.parametrize("bad", ["nope", "AAAAAAAAAAE", "AAAAAAAAAAF.", "a" * 300])
async def test_ids_that_do_not_decode_are_404(api: Api, bad: str) -> None:
    status, body = await api.get(f"/channels/{bad}")
    assert status == 404 and body["error"] == "not_found"


@pytest.mark.parametrize("query", ["limit=0", "limit=5000", "limit=-1", "limit=ten"])
async def test_bad_limit(api: Api, query: str) -> None:
    status, body = await api.get(f"/channels?{query}")
    assert status == 400 and body["field"] == "limit"


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        CURSORS.encode("packages", (1,)),
        CURSORS.encode("channels", ("1",)),
        CURSORS.encode("channels", (2**70,)),
        CURSORS.encode("channels", (1, 2)),
        CURSORS.encode("channels", (1,))[:-2],
        base64.urlsafe_b64encode(b"[not json").decode(),
        base64.urlsafe_b64encode(b'["channels",1]').decode().rstrip("="),
    ],
    ids=[
        "garbage",
        "other list",
        "wrong type",
        "beyond bigint",
        "wrong arity",
        "truncated",
        "not json",
        "unsigned",
    ],
)
async def test_forged_cursor(api: Api, cursor: str) -> None:
    status, body = await api.get(f"/channels?cursor={cursor}")
    assert status == 400 and body["field"] == "cursor"


async def test_name_filter(api: Api) -> None:
    for name in ("sport1", "news", "movies"):
        await create_channel(api, name)
    status, body = await api.get("/channels?name=news&name=sport1&name=unknown")
    assert status == 200
    assert sorted(c["name"] for c in body["channels"]) == ["news", "sport1"]


async def insert_channels(pool: asyncpg.Pool, portal: Any, names: list[str]) -> list[int]:
    rows = [(ids.new_id(), portal_id(portal), name, name.upper()) for name in names]
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "channels", records=rows, columns=["id", "portal_id", "name", "title"]
        )
    return [row[0] for row in rows]


async def test_paging_2500_channels_while_others_are_inserted(
    api: Api, pool: asyncpg.Pool, portal: Any
) -> None:
    existing = await insert_channels(pool, portal, [f"ch{i}" for i in range(2500)])
    stop = asyncio.Event()

    async def insert_more() -> int:
        made = 0
        while not stop.is_set():
            status, _ = await api.post("/channels", {"name": f"new{made}", "title": "Новый"})
            assert status == 200
            made += 1
            await asyncio.sleep(0)
        return made

    writer = asyncio.create_task(insert_more())
    seen, pages = await walk_channels(api)
    stop.set()
    made = await writer

    assert made > 0, "inserts ran while paging"
    seen_ids = [decoded(c["channelId"]) for c in seen]
    assert len(seen_ids) == len(set(seen_ids)), "no channel appears twice"
    assert seen_ids == sorted(seen_ids), "stable creation order"
    assert set(existing) <= set(seen_ids), "every channel present before paging appears"
    assert [c["name"] for c in seen[:2500]] == [f"ch{i}" for i in range(2500)]
    assert pages >= 25
    again, _ = await walk_channels(api)
    assert [c["channelId"] for c in again[:2500]] == [c["channelId"] for c in seen[:2500]]


async def walk_channels(api: Api) -> tuple[list[dict[str, Any]], int]:
    seen: list[dict[str, Any]] = []
    cursor, pages = None, 0
    while True:
        status, body = await api.get(
            "/channels", params={"limit": 100, **({"cursor": cursor} if cursor else {})}
        )
        assert status == 200, body
        assert len(body["channels"]) <= 100
        seen += body["channels"]
        pages += 1
        cursor = body.get("next")
        if not cursor:
            return seen, pages


async def test_permissions(api: Api, pool: asyncpg.Pool, portal: Any) -> None:
    content = await login_staff(api, "content@example.com", isContentAdmin=True)
    subscribers = await login_staff(api, "subs@example.com", isSubscriberAdmin=True)
    analyst = await login_staff(api, "analyst@example.com")
    channel = await create_channel(content, "made-by-staff", logo=data_uri(LOGO))
    path = f"/channels/{channel['channelId']}"
    for reader in (subscribers, analyst):
        assert (await reader.get("/channels"))[0] == 200
        assert (await reader.get(path))[0] == 200
        assert (await reader.get(path + "/logo"))[1] == LOGO
        for status, body in [
            await reader.post("/channels", {"name": "nope", "title": "T"}),
            await reader.put(path, {"title": "hijacked"}),
            await reader.delete(path),
        ]:
            assert status == 403 and "isContentAdmin" in body["message"]
    assert (await api.get(path))[1]["title"] == "made-by-staff"
    assert (await content.put(path, {"title": "ok"}))[0] == 200
    assert (await content.delete(path))[0] == 201
    ops = [r for r in await operations_of(pool, portal) if r["type"].endswith("Channel")]
    assert {r["payload"]["managerEmail"] for r in ops} == {"content@example.com"}


async def test_a_failed_mutation_leaves_no_operation_row(api: Api, pool: asyncpg.Pool, portal: Any) -> None:
    """A fault after the operation row is written, before the commit, takes the row back too."""
    channel = await create_channel(api, logo=data_uri(LOGO))
    before = await operations_of(pool, portal)
    version = await entitlement_version(pool, portal)
    async with fault(pool, "entitlement_versions", "UPDATE"):
        status, body = await api.delete(f"/channels/{channel['channelId']}")
    assert status == 500 and body["error"] == "internal_error"
    assert (await api.get(f"/channels/{channel['channelId']}"))[0] == 200
    assert (await api.get(f"/channels/{channel['channelId']}/logo"))[1] == LOGO
    assert await operations_of(pool, portal) == before
    assert await entitlement_version(pool, portal) == version


async def test_a_failed_operation_write_undoes_the_change(api: Api, pool: asyncpg.Pool, portal: Any) -> None:
    async with fault(pool, "operations", "INSERT"):
        status, _ = await api.post("/channels", {"name": "sport1", "title": "T", "logo": data_uri(LOGO)})
    assert status == 500
    assert await channel_count(pool) == 0
    assert await operations_of(pool, portal) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "sport1", "title": "Sport\u0000HD"}, "title"),
        ({"name": "sport1", "title": "T", "epgChannelName": "s\u00001"}, "epgChannelName"),
        ({"name": "sport1", "title": "T", "extra": 1}, "extra"),
        ({"title": "T"}, "name"),
        ({"name": "sport1"}, "title"),
    ],
)
async def test_text_that_cannot_be_stored_or_unknown_fields(
    api: Api, pool: asyncpg.Pool, body: dict[str, Any], field: str
) -> None:
    status, error = await api.post("/channels", body)
    assert status == 400 and error["field"] == field, error
    assert await channel_count(pool) == 0


@pytest.mark.parametrize(
    ("query", "status"), [("name=%00", 400), ("name=" + "x" * 300, 400), ("name=%ED%A0%80", 200)]
)
async def test_odd_name_filters(api: Api, query: str, status: int) -> None:
    """NUL or overlong names are refused; undecodable bytes simply match nothing."""
    got, body = await api.get(f"/channels?{query}")
    assert got == status, body
    assert body["field"] == "name[0]" if status == 400 else body["channels"] == []


async def test_malformed_json_and_wrong_media_type(api: Api, pool: asyncpg.Pool) -> None:
    json_type = {"Content-Type": "application/json"}
    for data in (b'{"name": "sport1",', b'{"name": "x",', b'{"name": "x"} {"name": "y"}'):
        # "x" is not a valid name, but the body is not JSON at all: that is the error.
        status, body = await api.call("POST", "/channels", data=data, headers=json_type)
        assert status == 400 and body["error"] == "malformed_json" and "field" not in body, (data, body)
    status, body = await api.call(
        "POST",
        "/channels",
        data=b"name=sport1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 415
    assert await channel_count(pool) == 0

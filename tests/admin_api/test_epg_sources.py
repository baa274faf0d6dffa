from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import pytest

from catena import ids, jobs
from tests.admin_api.content_support import login_staff, op_types, operations_of, portal_id
from tests.conftest import CURSORS, Api

URL = "https://epg.example.com/xmltv.xml"


async def create_source(api: Api, name: str = "main-epg", **fields: Any) -> dict[str, Any]:
    status, body = await api.post("/epg-sources", {"name": name, "url": URL, **fields})
    assert status == 200, body
    return cast(dict[str, Any], body)


async def source_count(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        count: int = await conn.fetchval("SELECT count(*) FROM epg_sources")
        return count


def db_id(text: str) -> int:
    value = ids.decode(text)
    assert value is not None
    return value


async def add_fetch(pool: asyncpg.Pool, source: dict[str, Any], status: str, **columns: Any) -> int:
    """A fetch record as the EPG worker writes it."""
    fetch_id = ids.new_id()
    values = {
        "id": fetch_id,
        "portal_id": db_id(source["portalId"]),
        "epg_source_id": db_id(source["epgSourceId"]),
        "status": status,
        **columns,
    }
    names = ", ".join(values)
    marks = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    async with pool.acquire() as conn:
        await conn.execute(f"INSERT INTO epg_fetches ({names}) VALUES ({marks})", *values.values())
    return fetch_id


async def add_programs(
    pool: asyncpg.Pool, source: dict[str, Any], rows: list[tuple[str, datetime, str]]
) -> None:
    records = [
        (
            ids.new_id(),
            db_id(source["portalId"]),
            db_id(source["epgSourceId"]),
            channel,
            start,
            start + timedelta(hours=1),
            title,
            "Описание",
            "News",
            "0+",
            "ru",
        )
        for channel, start, title in rows
    ]
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "epg_programs",
            records=records,
            columns=[
                "id",
                "portal_id",
                "epg_source_id",
                "epg_channel_name",
                "start_at",
                "end_at",
                "title",
                "description",
                "genre",
                "rating",
                "language",
            ],
        )


async def test_create_get_list(api: Api, pool: asyncpg.Pool, portal: Any) -> None:
    source = await create_source(api, period=7)
    assert source["period"] == 7 and source["url"] == URL and source["last_fetch_result"] is None
    assert source["portalId"] == portal.portalId
    assert (await api.get(f"/epg-sources/{source['epgSourceId']}"))[1] == source
    assert (await api.get("/epg-sources"))[1] == {"epgSources": [source]}
    assert (await create_source(api, "second"))["period"] == 1, "period defaults to one day"
    ops = await operations_of(pool, portal)
    assert [r["type"] for r in ops] == ["createEpgSource", "createEpgSource"]
    assert ops[0]["payload"]["epgSourceId"] == source["epgSourceId"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://epg.example.com/xmltv.xml"}, "url"),
        ({"url": "file:///etc/passwd"}, "url"),
        ({"url": "https://"}, "url"),
        ({"url": "epg.example.com/xmltv.xml"}, "url"),
        ({"url": "https://epg.example.com/a b.xml"}, "url"),
        ({"url": "http://[::1"}, "url"),
        ({"url": ""}, "url"),
        ({"period": 0}, "period"),
        ({"period": -3}, "period"),
        ({"period": 1.5}, "period"),
        ({"period": "7"}, "period"),
        ({"name": "main epg"}, "name"),
        ({"name": "m"}, "name"),
        ({"name": None}, "name"),
    ],
)
async def test_bad_input(api: Api, pool: asyncpg.Pool, portal: Any, body: dict[str, Any], field: str) -> None:
    status, error = await api.post("/epg-sources", {"name": "main-epg", "url": URL, **body})
    assert status == 400 and error["field"] == field, error
    assert await source_count(pool) == 0
    source = await create_source(api, "kept")
    status, error = await api.put(f"/epg-sources/{source['epgSourceId']}", body)
    assert status == 400 and error["field"] == field
    assert (await api.get(f"/epg-sources/{source['epgSourceId']}"))[1] == source
    assert await op_types(pool, portal) == ["createEpgSource"]


async def test_duplicate_name(api: Api, make_portal: Any) -> None:
    await create_source(api)
    status, body = await api.post("/epg-sources", {"name": "main-epg", "url": URL})
    assert status == 409 and body["message"] == "Name must be unique"
    # Another portal may use the same name.
    await create_source(api.as_((await make_portal()).apiKey))


async def test_update_does_not_start_a_fetch(api: Api, pool: asyncpg.Pool) -> None:
    source = await create_source(api)
    status, body = await api.put(
        f"/epg-sources/{source['epgSourceId']}",
        {**source, "url": "http://epg.example.com/new.xml", "period": 3},
    )
    assert status == 200 and body["url"] == "http://epg.example.com/new.xml" and body["period"] == 3
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM jobs") == 0


async def test_rename_follows_into_channels(api: Api) -> None:
    source = await create_source(api)
    status, channel = await api.post(
        "/channels", {"name": "sport1", "title": "Спорт", "epgSourceName": "main-epg", "epgChannelName": "s1"}
    )
    assert status == 200
    status, _ = await api.put(f"/epg-sources/{source['epgSourceId']}", {"name": "backup-epg"})
    assert status == 200
    body = (await api.get(f"/channels/{channel['channelId']}"))[1]
    assert body["epgSourceName"] == "backup-epg" and body["epgChannelName"] == "s1"


async def test_update_queues_one_job(api: Api, pool: asyncpg.Pool, portal: Any) -> None:
    source = await create_source(api)
    path = f"/epg-sources/{source['epgSourceId']}/update"
    status, first = await api.post(path)
    assert status == 200 and ids.decode(first["jobId"]) is not None
    assert (await api.post(path))[1] == first, "a queued job is returned again"
    async with pool.acquire() as conn:
        job = await conn.fetchrow("SELECT * FROM jobs")
        assert (job["kind"], job["target_id"], job["portal_id"]) == (
            "epg_update",
            db_id(source["epgSourceId"]),
            portal_id(portal),
        )
        claimed = await jobs.claim(conn, "epg_update", "test-worker")
        assert claimed is not None
        assert (await api.post(path))[1] == first, "a running job is returned again"
        await jobs.finish(conn, claimed["id"], "test-worker", ok=True)
    status, second = await api.post(path)
    assert status == 200 and second["jobId"] != first["jobId"]


async def test_last_fetch_result_and_history(api: Api, pool: asyncpg.Pool) -> None:
    source = await create_source(api)
    other = await create_source(api, "sports-epg")
    job_id = ids.new_id()
    done = await add_fetch(
        pool,
        source,
        "success",
        job_id=job_id,
        message="EPG source fetched successfully",
        channels=25,
        found_programs=5000,
        imported_programs=4950,
        deleted_programs=1100,
        fetch_duration=12.5,
        import_duration=3.25,
        fetched_at=datetime(2024, 10, 16, 10, 30, tzinfo=UTC),
    )
    await add_fetch(pool, other, "error", message="HTTP 404")
    pending = await add_fetch(pool, source, "pending", progress={"stage": "download", "bytes": 1024})
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE epg_sources SET last_fetch_id = $1 WHERE id = $2", done, db_id(source["epgSourceId"])
        )

    result = (await api.get(f"/epg-sources/{source['epgSourceId']}"))[1]["last_fetch_result"]
    assert result["epgFetchId"] == ids.encode(done) and result["job_id"] == ids.encode(job_id)
    assert result["fetched_at"] == "2024-10-16T10:30:00Z" and result["status"] == "success"
    assert (result["foundPrograms"], result["importedPrograms"], result["deletedPrograms"]) == (
        5000,
        4950,
        1100,
    )
    assert (result["fetchDuration"], result["importDuration"], result["channels"]) == (12.5, 3.25, 25)
    assert "created_at" in result and "progress" not in result

    history = (await api.get("/epg-fetches"))[1]["epgFetches"]
    assert [f["status"] for f in history] == ["pending", "error", "success"], "newest first"
    assert history[0]["progress"] == {"stage": "download", "bytes": 1024}
    assert history[0]["fetched_at"] is None and history[0]["epgFetchId"] == ids.encode(pending)
    mine = (await api.get(f"/epg-fetches?epgSourceId={source['epgSourceId']}"))[1]["epgFetches"]
    assert [f["status"] for f in mine] == ["pending", "success"]
    both = await api.get(
        f"/epg-fetches?epgSourceId={source['epgSourceId']}&epgSourceId={other['epgSourceId']}"
    )
    assert len(both[1]["epgFetches"]) == 3
    failed = (await api.get("/epg-fetches?status=error&status=timeout"))[1]["epgFetches"]
    assert [f["message"] for f in failed] == ["HTTP 404"]


async def test_fetch_history_pages(api: Api, pool: asyncpg.Pool) -> None:
    source = await create_source(api)
    made = [await add_fetch(pool, source, "success") for _ in range(7)]
    seen: list[str] = []
    cursor = ""
    while True:
        status, body = await api.get(f"/epg-fetches?limit=3&cursor={cursor}")
        assert status == 200
        seen += [f["epgFetchId"] for f in body["epgFetches"]]
        if not body.get("next"):
            break
        cursor = body["next"]
    assert seen == [ids.encode(f) for f in reversed(made)]


async def test_fetch_history_of_other_portals_is_hidden(
    api: Api, pool: asyncpg.Pool, make_portal: Any
) -> None:
    other = api.as_((await make_portal()).apiKey)
    theirs = await create_source(other)
    await add_fetch(pool, theirs, "success")
    assert (await api.get("/epg-fetches"))[1]["epgFetches"] == []
    for bad in (theirs["epgSourceId"], "nonsense"):
        status, body = await api.get(f"/epg-fetches?epgSourceId={bad}")
        assert status == 404 and body["field"] == "epgSourceId"
    status, body = await api.get("/epg-fetches?status=finished")
    assert status == 400 and body["field"].startswith("status")


async def test_programs(api: Api, pool: asyncpg.Pool) -> None:
    source = await create_source(api)
    day = datetime(2024, 10, 16, tzinfo=UTC)
    await add_programs(
        pool,
        source,
        [
            ("channel1", day + timedelta(hours=12), "Новости"),
            ("channel2", day + timedelta(hours=9), "Утро"),
            ("channel1", day - timedelta(minutes=30), "Вчерашний фильм"),
            ("channel1", day + timedelta(days=1, hours=1), "Завтра"),
        ],
    )
    path = f"/epg-sources/{source['epgSourceId']}/programs"
    everything = (await api.get(path))[1]["programs"]
    assert [p["title"] for p in everything] == ["Вчерашний фильм", "Утро", "Новости", "Завтра"]
    news = everything[2]
    assert news == {
        "programId": news["programId"],
        "epgSourceId": source["epgSourceId"],
        "epgChannelName": "channel1",
        "date": "2024-10-16",
        "start": "2024-10-16T12:00:00Z",
        "end": "2024-10-16T13:00:00Z",
        "title": "Новости",
        "language": "ru",
        "description": "Описание",
        "genre": "News",
        "rating": "0+",
    }
    assert everything[0]["date"] == "2024-10-15"
    on_day = (await api.get(path + "?date=2024-10-16"))[1]["programs"]
    assert [p["title"] for p in on_day] == ["Утро", "Новости"]
    one = (await api.get(path + "?date=2024-10-16&epgChannelName=channel1"))[1]["programs"]
    assert [p["title"] for p in one] == ["Новости"]
    assert (await api.get(path + "?epgChannelName=unknown"))[1]["programs"] == []


async def test_programs_page_in_start_order(api: Api, pool: asyncpg.Pool) -> None:
    source = await create_source(api)
    start = datetime(2024, 10, 16, tzinfo=UTC)
    # Several programmes share a start time: the id breaks the tie, so none is lost or repeated.
    await add_programs(
        pool, source, [(f"ch{i % 3}", start + timedelta(minutes=30 * (i // 3)), f"p{i}") for i in range(50)]
    )
    path = f"/epg-sources/{source['epgSourceId']}/programs"
    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 7}
    while True:
        status, body = await api.get(path, params=params)
        assert status == 200
        seen += body["programs"]
        if not body.get("next"):
            break
        params["cursor"] = body["next"]
    assert sorted(p["title"] for p in seen) == sorted(f"p{i}" for i in range(50))
    assert len({p["programId"] for p in seen}) == 50
    assert [p["start"] for p in seen] == sorted(p["start"] for p in seen)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("date=16.10.2024", "date"),
        ("date=2024-02-30", "date"),
        ("date=2024-10-16T00:00:00Z", "date"),
        ("date=20241016", "date"),
        ("date=9999-12-31", "date"),
        ("cursor=garbage", "cursor"),
        (f"cursor={CURSORS.encode('programs', (10**18, 1))}", "cursor"),
        (f"cursor={CURSORS.encode('channels', (1,))}", "cursor"),
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
    ],
)
async def test_program_query_errors(api: Api, query: str, field: str) -> None:
    source = await create_source(api)
    status, body = await api.get(f"/epg-sources/{source['epgSourceId']}/programs?{query}")
    assert status == 400 and body["field"] == field, body


async def test_delete_removes_programs_and_channel_links(api: Api, pool: asyncpg.Pool, portal: Any) -> None:
    source = await create_source(api)
    kept = await create_source(api, "backup-epg")
    await add_programs(pool, source, [("s1", datetime(2024, 10, 16, tzinfo=UTC), "Матч")])
    await add_programs(pool, kept, [("s1", datetime(2024, 10, 16, tzinfo=UTC), "Другой")])
    await add_fetch(pool, source, "success")
    linked = (
        await api.post(
            "/channels",
            {"name": "sport1", "title": "Спорт", "epgSourceName": "main-epg", "epgChannelName": "s1"},
        )
    )[1]
    other = (
        await api.post(
            "/channels",
            {"name": "sport2", "title": "Спорт 2", "epgSourceName": "backup-epg", "epgChannelName": "s1"},
        )
    )[1]
    status, _ = await api.delete(f"/epg-sources/{source['epgSourceId']}")
    assert status == 201
    assert (await api.get(f"/epg-sources/{source['epgSourceId']}"))[0] == 404
    assert (await api.get(f"/epg-sources/{source['epgSourceId']}/programs"))[0] == 404
    body = (await api.get(f"/channels/{linked['channelId']}"))[1]
    assert body["epgSourceName"] is None and body["epgChannelName"] is None
    assert (await api.get(f"/channels/{other['channelId']}"))[1]["epgSourceName"] == "backup-epg"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT array_agg(title) FROM epg_programs") == ["Другой"]
        assert await conn.fetchval("SELECT count(*) FROM epg_fetches") == 0
    deleted = (await operations_of(pool, portal))[-1]
    assert deleted["type"] == "deleteEpgSource" and deleted["payload"]["unlinkedChannels"] == 1


async def test_other_portals_sources_are_404(api: Api, pool: asyncpg.Pool, make_portal: Any) -> None:
    other = api.as_((await make_portal()).apiKey)
    theirs = await create_source(other)
    await add_programs(pool, theirs, [("s1", datetime(2024, 10, 16, tzinfo=UTC), "Чужое")])
    path = f"/epg-sources/{theirs['epgSourceId']}"
    for status, body in [
        await api.get(path),
        await api.get(path + "/programs"),
        await api.put(path, {"period": 2}),
        await api.post(path + "/update"),
        await api.delete(path),
    ]:
        assert status == 404 and body["field"] == "id"
    assert (await other.get(path))[1]["period"] == 1
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM jobs") == 0


async def test_permissions(api: Api) -> None:
    content = await login_staff(api, "content@example.com", isContentAdmin=True)
    subscribers = await login_staff(api, "subs@example.com", isSubscriberAdmin=True)
    analyst = await login_staff(api, "analyst@example.com")
    source = await create_source(content)
    path = f"/epg-sources/{source['epgSourceId']}"
    for reader in (subscribers, analyst):
        for read in ("/epg-sources", path, path + "/programs", "/epg-fetches"):
            assert (await reader.get(read))[0] == 200
        for status, _ in [
            await reader.post("/epg-sources", {"name": "nope", "url": URL}),
            await reader.put(path, {"period": 3}),
            await reader.post(path + "/update"),
            await reader.delete(path),
        ]:
            assert status == 403
    assert (await content.post(path + "/update"))[0] == 200
    assert (await content.put(path, {"period": 3}))[0] == 200
    assert (await content.delete(path))[0] == 201


async def test_sources_page(api: Api) -> None:
    names = [f"src{i}" for i in range(5)]
    for name in names:
        await create_source(api, name)
    first = (await api.get("/epg-sources?limit=3"))[1]
    second = (await api.get(f"/epg-sources?limit=3&cursor={first['next']}"))[1]
    assert [s["name"] for s in first["epgSources"] + second["epgSources"]] == names
    assert second.get("next") is None


@pytest.mark.parametrize(
    ("query", "status"), [("epgChannelName=%00", 400), ("epgChannelName=%ED%A0%80", 200)]
)
async def test_odd_program_filters(api: Api, query: str, status: int) -> None:
    source = await create_source(api)
    got, body = await api.get(f"/epg-sources/{source['epgSourceId']}/programs?{query}")
    assert got == status, body
    assert body["field"] == "epgChannelName" if status == 400 else body["programs"] == []

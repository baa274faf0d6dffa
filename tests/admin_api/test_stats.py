"""GET /stats: every figure against data the test makes, written the way production writes it."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from admin_api import stats
from authgate import sweeper
from authgate.recorder import write_batch
from catena import ids
from tests.admin_api._subscribers_support import create_subscriber, make_package, manager_session
from tests.conftest import Api

HOUR = 3_600_000


def session_row(
    portal: str, n: int, subscriber: str | None, channel: str, opened_ms: int, *, closed_ms: int | None = None
) -> tuple[Any, ...]:
    """A row of authgate.recorder.COLUMNS, as a gateway batches it."""
    return (
        f"flu-{portal}-{n}",
        ids.lowest_at(opened_ms) + n,
        ids.decode(portal),
        None if subscriber is None else ids.decode(subscriber),
        None,
        channel,
        opened_ms,
        closed_ms or opened_ms,
        closed_ms,
        1000,
        "10.0.0.1",
        "Test/1.0",
        None,
        None,
        "hls",
        "edge",
    )


async def write(pool: asyncpg.Pool, rows: list[tuple[Any, ...]]) -> None:
    async with pool.acquire() as conn:
        await write_batch(conn, rows)


async def get_stats(api: Api, query: str = "") -> dict[str, Any]:
    status, body = await api.get(f"/stats{query}")
    assert status == 200, body
    return dict(body)


async def recounted(pool: asyncpg.Pool, api: Api) -> dict[str, Any]:
    """The figures after rebuilding every counter from the base tables."""
    await pool.execute("SELECT catena_stats_recount()")
    return await get_stats(api)


def figures(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "generatedAt"}


async def test_session_figures(api: Api, portal: Any, make_portal: Any, pool: asyncpg.Pool) -> None:
    now_ms = int(time.time() * 1000)
    subs = [(await create_subscriber(api, phone=str(n)))["subscriberId"] for n in range(4)]
    rows = [
        session_row(portal.portalId, 1, subs[0], "sport", now_ms - 1000),
        session_row(portal.portalId, 2, subs[0], "news", now_ms - 2000),
        session_row(portal.portalId, 3, subs[1], "sport", now_ms - HOUR),
        session_row(portal.portalId, 4, subs[2], "sport", now_ms - 2 * HOUR, closed_ms=now_ms - HOUR),
        session_row(portal.portalId, 5, None, "kids", now_ms - 3 * HOUR),
        # Opened 30 hours ago and still open: counts now, not in the last 24 hours.
        session_row(portal.portalId, 6, subs[3], "kids", now_ms - 30 * HOUR),
    ]
    await write(pool, rows)
    other = await make_portal()
    await write(pool, [session_row(other.portalId, 7, None, "sport", now_ms)])
    body = await get_stats(api)
    assert body["viewersNow"] == 5
    assert body["subscribersWatchingNow"] == 3  # subs 0, 1, 3; the anonymous session has none
    top = [(c["name"], c["viewers"]) for c in body["topChannels"]]
    assert top == [("kids", 2), ("sport", 2), ("news", 1)]  # ties by name
    hours = body["sessionsOpenedPerHour"]
    assert len(hours) == 24 and sum(h["opened"] for h in hours) == 5
    this_hour = datetime.fromtimestamp(now_ms / 1000, UTC).replace(minute=0, second=0, microsecond=0)
    assert hours[-1]["hour"] == this_hour.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert hours[0]["hour"] == (this_hour - timedelta(hours=23)).strftime("%Y-%m-%dT%H:%M:%SZ")
    by_hour = {h["hour"]: h["opened"] for h in hours}
    for row in rows[:5]:
        hour = (
            datetime.fromtimestamp(row[6] / 1000, UTC)
            .replace(minute=0, second=0)
            .strftime("%Y-%m-%dT%H:%M:%SZ")
        )
        assert by_hour[hour] >= 1
    assert (await get_stats(api, "?top=1"))["topChannels"] == body["topChannels"][:1]

    # Later batches: sub 0 closes one of two sessions (still watching), sub 1 its only one.
    await write(
        pool,
        [
            session_row(portal.portalId, 2, subs[0], "news", now_ms - 2000, closed_ms=now_ms),
            session_row(portal.portalId, 3, subs[1], "sport", now_ms - HOUR, closed_ms=now_ms),
        ],
    )
    body = await get_stats(api)
    assert (body["viewersNow"], body["subscribersWatchingNow"]) == (3, 2)
    assert [(c["name"], c["viewers"]) for c in body["topChannels"]] == [("kids", 2), ("sport", 1)]
    # The sweeper closes what nobody updated; a late update reopens it.
    async with pool.acquire() as conn:
        idle = "UPDATE play_sessions SET updated_at = now() - interval '2 hours' WHERE portal_id = $1"
        await conn.execute(idle, ids.decode(portal.portalId))
        assert await sweeper.sweep(conn, 600, 60) == 3
    body = await get_stats(api)
    assert (body["viewersNow"], body["subscribersWatchingNow"], body["topChannels"]) == (0, 0, [])
    late = session_row(portal.portalId, 1, subs[0], "sport", now_ms - 1000)
    await write(pool, [(*late[:7], now_ms + 5000, *late[8:])])
    body = await get_stats(api)
    assert (body["viewersNow"], body["subscribersWatchingNow"]) == (1, 1)
    assert figures(await recounted(pool, api)) == figures(body)
    # The other portal sees its own session only.
    theirs = await get_stats(api.as_(other.apiKey))
    assert (theirs["viewersNow"], theirs["subscribersWatchingNow"]) == (1, 0)
    assert sum(h["opened"] for h in theirs["sessionsOpenedPerHour"]) == 1


async def test_subscriber_figures(api: Api, portal: Any, make_portal: Any, pool: asyncpg.Pool) -> None:
    basic = await make_package(pool, portal.portalId, "basic")
    sport = await make_package(pool, portal.portalId, "sport")
    subs = [(await create_subscriber(api, phone=str(n)))["subscriberId"] for n in range(5)]
    for sub, package in [(subs[0], basic), (subs[0], sport), (subs[1], basic), (subs[2], sport)]:
        assert (await api.post("/packages-subscribers", {"subscriberId": sub, "packageId": package}))[
            0
        ] == 200
    for sub in subs[3:]:
        assert (await api.post(f"/subscribers/{sub}/disable", {"reason": "долг"}))[0] == 200
    other = await make_portal()
    await create_subscriber(api.as_(other.apiKey))
    body = await get_stats(api)
    assert body["subscribers"] == {"total": 5, "disabled": 2, "withPackages": 3}
    await api.delete("/packages-subscribers", {"subscriberId": subs[0], "packageId": basic})
    await api.delete("/packages-subscribers", {"subscriberId": subs[2], "packageId": sport})
    await api.post(f"/subscribers/{subs[3]}/enable")
    assert (await get_stats(api))["subscribers"] == {"total": 5, "disabled": 1, "withPackages": 2}
    await api.delete(f"/subscribers/{subs[0]}")  # its last subscription ends with it
    await api.delete(f"/subscribers/{subs[4]}")  # disabled
    body = await get_stats(api)
    assert body["subscribers"] == {"total": 3, "disabled": 0, "withPackages": 1}
    assert figures(await recounted(pool, api)) == figures(body)
    assert (await get_stats(api.as_(other.apiKey)))["subscribers"] == {
        "total": 1,
        "disabled": 0,
        "withPackages": 0,
    }


async def test_parallel_changes_keep_the_counts_exact(api: Api, portal: Any, pool: asyncpg.Pool) -> None:
    """Subscriptions added and removed at once from many requests, with compaction running."""
    packages = [await make_package(pool, portal.portalId, f"p{n}") for n in range(4)]
    subs = [(await create_subscriber(api, phone=str(n)))["subscriberId"] for n in range(12)]
    rng = random.Random(7)

    async def churn(sub: str) -> None:
        for _ in range(6):
            package = rng.choice(packages)
            body = {"subscriberId": sub, "packageId": package}
            if (await api.post("/packages-subscribers", body))[0] == 409:
                await api.delete("/packages-subscribers", body)

    async def compact() -> None:
        for _ in range(10):
            await stats.compact(pool)
            await asyncio.sleep(0.01)

    await asyncio.gather(*(churn(s) for s in subs + subs), compact())
    body = await get_stats(api)
    expected = await pool.fetchval(
        "SELECT count(DISTINCT subscriber_id) FROM subscriptions WHERE portal_id = $1",
        ids.decode(portal.portalId),
    )
    assert body["subscribers"]["withPackages"] == expected
    assert figures(await recounted(pool, api)) == figures(body)


async def test_guide_and_epg_source_figures(
    api: Api, portal: Any, make_portal: Any, pool: asyncpg.Pool
) -> None:
    portal_id = ids.decode(portal.portalId)
    now = datetime.now(UTC)
    sources = {}
    for name, fetched, status in [
        ("fresh", now - timedelta(hours=1), "success"),
        ("stale", now - timedelta(days=3), "success"),
        ("broken", now - timedelta(hours=1), "error"),
        ("never", None, None),
    ]:
        sources[name] = source_id = ids.new_id()
        await pool.execute(
            "INSERT INTO epg_sources (id, portal_id, name, url) VALUES ($1, $2, $3, 'http://x/')",
            source_id,
            portal_id,
            name,
        )
        if status:
            fetch_id = ids.new_id()
            await pool.execute(
                "INSERT INTO epg_fetches (id, portal_id, epg_source_id, status, message, fetched_at)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                fetch_id,
                portal_id,
                source_id,
                status,
                "HTTP 404" if status == "error" else "",
                fetched,
            )
            await pool.execute("UPDATE epg_sources SET last_fetch_id = $1 WHERE id = $2", fetch_id, source_id)
    programmes: dict[str, list[tuple[datetime, datetime | None]]] = {
        "now": [(now - timedelta(minutes=30), now + timedelta(minutes=30))],
        "tomorrow": [(now + timedelta(hours=20), now + timedelta(hours=21))],
        "no-end": [(now - timedelta(hours=2), None)],  # runs at most 6 hours without an end
        "ended": [(now - timedelta(hours=3), now - timedelta(hours=1))],
        "old-no-end": [(now - timedelta(hours=7), None)],
        "far": [(now + timedelta(hours=25), now + timedelta(hours=26))],
    }
    for epg_name, spans in programmes.items():
        for start, end in spans:
            await pool.execute(
                "INSERT INTO epg_programs (id, portal_id, epg_source_id, epg_channel_name, start_at,"
                " end_at, title) VALUES ($1, $2, $3, $4, $5, $6, 'x')",
                ids.new_id(),
                portal_id,
                sources["fresh"],
                epg_name,
                start,
                end,
            )
    channels: list[tuple[str, str | None, str | None]] = [
        ("c-now", "fresh", "now"),
        ("c-tomorrow", "fresh", "tomorrow"),
        ("c-no-end", "fresh", "no-end"),
        ("c-ended", "fresh", "ended"),
        ("c-old-no-end", "fresh", "old-no-end"),
        ("c-far", "fresh", "far"),
        ("c-unknown", "fresh", "nothing"),
        ("c-unlinked", None, None),
        ("c-missing", "gone", "now"),
    ]
    for name, source, guide_name in channels:
        await pool.execute(
            "INSERT INTO channels (id, portal_id, name, title, epg_source_name, epg_channel_name)"
            " VALUES ($1, $2, $3, $3, $4, $5)",
            ids.new_id(),
            portal_id,
            name,
            source,
            guide_name,
        )
    other = await make_portal()
    await pool.execute(
        "INSERT INTO channels (id, portal_id, name, title) VALUES ($1, $2, 'theirs', 't')",
        ids.new_id(),
        ids.decode(other.portalId),
    )
    body = await get_stats(api)
    missing = body["channelsWithoutProgrammes"]
    names = ["c-ended", "c-far", "c-missing", "c-old-no-end", "c-unknown", "c-unlinked"]
    assert missing["count"] == 6 and [c["name"] for c in missing["channels"]] == names
    assert set(missing["channels"][0]) == {"channelId", "name", "title", "epgSourceName", "epgChannelName"}
    problems = {p["name"]: p for p in body["epgSourcesWithProblems"]}
    assert {n: p["problem"] for n, p in problems.items()} == {
        "stale": "stale",
        "broken": "failed",
        "never": "never",
    }
    assert problems["broken"]["message"] == "HTTP 404" and problems["broken"]["lastFetchStatus"] == "error"
    assert problems["never"]["lastFetchAt"] is None and problems["stale"]["lastFetchAt"].endswith("Z")
    theirs = await get_stats(api.as_(other.apiKey))
    assert theirs["channelsWithoutProgrammes"]["count"] == 1 and theirs["epgSourcesWithProblems"] == []


async def test_the_guide_figure_follows_changes(
    api: Api, portal: Any, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kept per portal: remade at once when channels or guides change, in the background as time passes."""
    portal_id = ids.decode(portal.portalId)
    source = ids.new_id()
    await pool.execute(
        "INSERT INTO epg_sources (id, portal_id, name, url) VALUES ($1, $2, 'main', 'http://x/')",
        source,
        portal_id,
    )
    status, channel = await api.post("/channels", {"name": "sport", "title": "Sport"})
    assert status == 200, channel

    async def unguided() -> list[str]:
        return [c["name"] for c in (await get_stats(api))["channelsWithoutProgrammes"]["channels"]]

    assert await unguided() == ["sport"]
    now = datetime.now(UTC)
    await pool.execute(
        "INSERT INTO epg_programs (id, portal_id, epg_source_id, epg_channel_name, start_at, end_at, title)"
        " VALUES ($1, $2, $3, 'sport-epg', $4, $5, 'x')",
        ids.new_id(), portal_id, source, now, now + timedelta(hours=1),
    )  # fmt: skip
    body = {"epgSourceName": "main", "epgChannelName": "sport-epg"}
    assert (await api.put(f"/channels/{channel['channelId']}", body))[0] == 200
    assert await unguided() == []  # the channel changed: made again before answering
    await pool.execute("DELETE FROM epg_programs WHERE epg_source_id = $1", source)
    assert await unguided() == []  # nothing it watches changed: the kept figure
    await pool.execute("UPDATE epg_sources SET imported_sha256 = '\\x01' WHERE id = $1", source)
    assert await unguided() == ["sport"]  # a new guide was imported
    await pool.execute(
        "INSERT INTO epg_programs (id, portal_id, epg_source_id, epg_channel_name, start_at, end_at, title)"
        " VALUES ($1, $2, $3, 'sport-epg', $4, $5, 'x')",
        ids.new_id(), portal_id, source, now, now + timedelta(hours=1),
    )  # fmt: skip
    monkeypatch.setattr(stats, "GUIDE_FRESH", 0.0)
    for _ in range(50):  # older than GUIDE_FRESH: answered, and made again behind the answer
        if await unguided() == []:
            break
        await asyncio.sleep(0.05)
    assert await unguided() == []


async def test_every_manager_reads_and_bad_input_is_400(api: Api, pool: asyncpg.Pool) -> None:
    reader = await manager_session(api, "reader@example.com")
    body = await get_stats(reader)
    assert body["viewersNow"] == 0 and len(body["sessionsOpenedPerHour"]) == 24
    assert body["subscribers"] == {"total": 0, "disabled": 0, "withPackages": 0}
    assert body["topChannels"] == [] and body["channelsWithoutProgrammes"] == {"count": 0, "channels": []}
    before = await pool.fetchval("SELECT count(*) FROM operations")
    for query in ("top=0", "top=101", "top=abc", "top=", "top=1.5", "top=-1"):
        status, answer = await api.get(f"/stats?{query}")
        assert (status, answer.get("field")) == (400, "top"), (query, answer)
    assert (await api.get("/stats?top=100"))[0] == 200
    assert (await api.as_(None).get("/stats"))[0] == 401
    assert (await api.as_("forged").get("/stats"))[0] == 401
    assert (await api.post("/stats", {}))[0] == 405
    assert await pool.fetchval("SELECT count(*) FROM operations") == before


@pytest.mark.slow
async def test_sessions_opened_by_a_real_gateway(
    api: Api,
    portal: Any,
    pool: asyncpg.Pool,
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    from tests.authgate.conftest import Launcher, Portal, World
    from tests.redis_servers import RedisBackend

    world = World(pool)
    mine = Portal(ids.decode(portal.portalId) or 0, portal.portalId)
    await world.package(mine, "basic")
    for channel in ("sport", "news"):
        await world.channel(mine, channel, ["basic"])
    viewers = [await world.subscriber(mine, ["basic"]) for _ in range(2)]
    launcher = Launcher(database_url, RedisBackend.single(redis_url), redis_prefix, tmp_path)
    try:
        gateway = await launcher.start()
        for sub, channel, session in [
            (viewers[0], "sport", "g1"),
            (viewers[0], "news", "g2"),
            (viewers[1], "sport", "g3"),
        ]:
            assert (await gateway.auth(sub, channel, session=session)).status == 200

        async def settled(expected: tuple[int, int]) -> dict[str, Any]:
            for _ in range(100):
                body = await get_stats(api)
                if (body["viewersNow"], body["subscribersWatchingNow"]) == expected:
                    return body
                await asyncio.sleep(0.1)
            raise AssertionError(body)

        body = await settled((3, 2))
        assert [(c["name"], c["viewers"]) for c in body["topChannels"]] == [("sport", 2), ("news", 1)]
        assert body["topChannels"][0]["channelId"] == ids.encode(mine.channels["sport"])
        assert body["sessionsOpenedPerHour"][-1]["opened"] == 3
        await gateway.events({"event": "play_closed", "id": "g3", "token": viewers[1].token})
        body = await settled((2, 1))
        assert figures(await recounted(pool, api)) == figures(body)
    finally:
        await launcher.stop_all()


async def test_gateways_writing_at_once_keep_the_figures_exact(
    api: Api, portal: Any, pool: asyncpg.Pool
) -> None:
    """Two gateways' batches touching the same subscribers, a sweep and compaction, all at once."""
    subs = [(await create_subscriber(api, phone=str(n)))["subscriberId"] for n in range(6)]
    rng = random.Random(5)
    now_ms = int(time.time() * 1000)

    async def gateway(node: int) -> None:
        async with pool.acquire() as conn:
            for round_ in range(15):
                rows = []
                for k in range(8):  # every third round new sessions; two of each eight on both gateways
                    n = (0 if k < 2 else node * 1000) + round_ // 3 * 10 + k
                    closed = now_ms + round_ if rng.random() < 0.3 else None
                    channel = rng.choice(["sport", "news", "kids"])
                    rows.append(
                        session_row(portal.portalId, n, rng.choice(subs), channel, now_ms, closed_ms=closed)
                    )
                await write_batch(conn, rows)

    async def sweep_and_compact() -> None:
        for _ in range(5):
            async with pool.acquire() as conn:
                await sweeper.sweep(conn, 600, 60)
            await stats.compact(pool)
            await asyncio.sleep(0.01)

    await asyncio.gather(gateway(1), gateway(2), sweep_and_compact())
    body = await get_stats(api)
    truth = await pool.fetchrow(
        "SELECT count(*) FILTER (WHERE active) AS viewers,"
        " count(DISTINCT subscriber_id) FILTER (WHERE active) AS watching, count(*) AS opened"
        " FROM play_sessions WHERE portal_id = $1",
        ids.decode(portal.portalId),
    )
    assert (body["viewersNow"], body["subscribersWatchingNow"]) == (truth["viewers"], truth["watching"])
    assert sum(h["opened"] for h in body["sessionsOpenedPerHour"]) == truth["opened"]
    assert sum(c["viewers"] for c in body["topChannels"]) == truth["viewers"]
    assert figures(await recounted(pool, api)) == figures(body)

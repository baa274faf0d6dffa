"""Redis down, PostgreSQL down, both down — each really stopped and started again (issue item 6)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis

from catena import db, migrations
from catena import redis as catena_redis
from catena.redis_keys import KeySpace
from loadtests import check_sessions

from .conftest import Gateway, Launcher, Portal, PrivatePostgres, PrivateRedis, Sub, World, eventually

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PrivatePostgres.available(), reason="needs PostgreSQL's initdb and pg_ctl"),
]


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    server.init()
    server.start()
    yield server
    server.remove()


@pytest.fixture
async def private_pool(private_pg: PrivatePostgres) -> AsyncIterator[asyncpg.Pool]:
    private_pg.start() if not await _answers(private_pg.url) else None
    conn = await db.connect(private_pg.url)
    await migrations.apply(conn)
    tables = await conn.fetchval(
        "SELECT string_agg(format('%I', relname), ', ') FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE nspname = 'public' AND relkind IN ('r', 'p') "
        "AND NOT relispartition AND relname <> 'schema_migrations'"
    )
    await conn.execute(f"TRUNCATE {tables} CASCADE")
    await conn.close()
    pool = await db.create_pool(private_pg.url, max_size=3)
    yield pool
    await pool.close()


async def _answers(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=2)
    except (OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


async def scene(world: World, **settings: object) -> tuple[Portal, list[Sub]]:
    portal = await world.portal(**settings)
    await world.package(portal, "basic")
    await world.channel(portal, "sport", ["basic"])
    subs = [await world.subscriber(portal, ["basic"]) for _ in range(3)]
    return portal, subs


async def health(gateway: Gateway) -> dict[str, Any]:
    status, _, body = await gateway.request("GET", "/health")
    return {"status_code": status, **msgspec.json.decode(body)}


async def until_health(gateway: Gateway, **expected: object) -> None:
    async def matches() -> bool:
        current = await health(gateway)
        return all(current[k] == v for k, v in expected.items())

    assert await eventually(matches, timeout=10.0), await health(gateway)


async def test_redis_down_answers_from_memory_and_postgres_then_recovers(
    world: World, launcher: Launcher, private_redis: PrivateRedis
) -> None:
    portal, (cached, unseen, limited) = await scene(world)
    gateway = await launcher.start(redis_url=private_redis.url, auth_stale_limit=2, auth_local_count_after=0)
    assert (await gateway.auth(cached, "sport", session="c1")).status == 200

    private_redis.stop()
    await until_health(gateway, redis="down", status_code=200)
    again = await gateway.auth(cached, "sport", session="c1", request_type="update_session")
    assert again.status == 200, again
    assert (await gateway.auth(unseen, "sport", session="u1")).status == 200  # built from PostgreSQL
    # Session limits are still enforced, by the process itself.
    await world.change(
        portal,
        "subscriber",
        [limited.id],
        "UPDATE subscribers SET max_sessions = 1 WHERE id = $1",
        limited.id,
    )
    assert (await gateway.auth(limited, "sport", session="l1")).status == 200
    assert (await gateway.auth(limited, "sport", session="l2")).reason == "session_limit"
    # Changes still arrive (the listener needs no Redis).
    await world.change(
        portal, "subscriber", [cached.id], "UPDATE subscribers SET disabled = true WHERE id = $1", cached.id
    )
    assert await eventually(lambda: _reason(gateway, cached, "c1", "subscriber_disabled"), timeout=1.0)
    await asyncio.sleep(2.5)  # past the staleness limit: entries come from PostgreSQL again
    assert (await gateway.auth(unseen, "sport", session="u1", request_type="update_session")).status == 200

    private_redis.start()
    await until_health(gateway, redis="up")
    client: aioredis.Redis = catena_redis.connect(private_redis.url)
    prefix = gateway.env["CATENA_REDIS_PREFIX"]
    try:
        # The sessions admitted while Redis was away are counted there again.
        await gateway.auth(unseen, "sport", session="u1", request_type="update_session")
        keys = KeySpace(prefix)
        assert await eventually(lambda: client.zcard(keys.sessions(unseen.id)[0]), timeout=5.0) == 1
        assert await client.zcard(keys.sessions(limited.id)[0]) == 1
    finally:
        await client.aclose()
    assert (await gateway.auth(limited, "sport", session="l2")).reason == "session_limit"
    await gateway.stop()


async def _reason(gateway: Gateway, sub: Sub, session: str, reason: str) -> bool:
    return (await gateway.auth(sub, "sport", session=session, request_type="update_session")).reason == reason


async def test_postgres_down_keeps_answering_and_spools_then_replays(
    launcher: Launcher, private_pg: PrivatePostgres, private_pool: asyncpg.Pool
) -> None:
    world = World(private_pool)
    _, (warm, other, _) = await scene(world)
    gateway, neighbour = [await launcher.start(database_url=private_pg.url) for _ in range(2)]
    assert (await gateway.auth(warm, "sport", session="w1")).status == 200
    # The neighbour's check puts `other` in Redis; this gateway has never seen it.
    assert (await neighbour.auth(other, "sport", session="o0")).status == 200
    await neighbour.stop()

    private_pg.stop()
    await until_health(gateway, postgres="down", status_code=200)
    for sub, session in ((warm, "w1"), (other, "o1"), (warm, "w2")):
        answer = await gateway.auth(sub, "sport", session=session, bytes=42)
        assert answer.status == 200, answer
    events = await gateway.events({"event": "play_closed", "id": "w2", "token": warm.token, "bytes": 99})
    assert events.status == 200 and events.json["accepted"] == 1
    assert await eventually(lambda: _spooled(gateway), timeout=5.0)

    private_pg.start()
    await until_health(gateway, postgres="up", spoolBytes=0)

    async def replayed() -> list[asyncpg.Record]:
        rows = await private_pool.fetch("SELECT flussonic_id, active, bytes FROM play_sessions ORDER BY 1")
        return rows if len(rows) == 4 and not rows[3]["active"] else []

    rows = await eventually(replayed, timeout=10.0)
    assert [(r["flussonic_id"], r["active"], r["bytes"]) for r in rows] == [
        ("o0", True, 0),
        ("o1", True, 42),
        ("w1", True, 42),
        ("w2", False, 99),
    ]
    await gateway.stop()


async def _spooled(gateway: Gateway) -> bool:
    return int((await health(gateway))["spoolBytes"]) > 0


async def test_both_down_answers_recent_entries_then_503_then_recovers(
    launcher: Launcher, private_pg: PrivatePostgres, private_pool: asyncpg.Pool, private_redis: PrivateRedis
) -> None:
    world = World(private_pool)
    _, (warm, unseen, _) = await scene(world)
    gateway = await launcher.start(
        database_url=private_pg.url, redis_url=private_redis.url, auth_stale_limit=10
    )
    await until_health(gateway, status="ok")
    assert (await gateway.auth(warm, "sport", session="w1")).status == 200

    private_redis.stop()
    private_pg.stop()
    await until_health(gateway, redis="down", postgres="down", status_code=503)
    assert (await gateway.auth(warm, "sport", session="w1", request_type="update_session")).status == 200
    unavailable = await gateway.auth(unseen, "sport", session="u1")
    assert unavailable.status == 503 and unavailable.reason == "unavailable"
    # Entries answer for the staleness limit after the gateway lost the means to check them.
    await asyncio.sleep(10.5)
    assert (await gateway.auth(warm, "sport", session="w1", request_type="update_session")).status == 503

    private_redis.start()
    private_pg.start()
    await until_health(gateway, redis="up", postgres="up", status_code=200)
    for sub, session in ((warm, "w1"), (unseen, "u1")):
        answer = await gateway.auth(sub, "sport", session=session)
        assert answer.status == 200, answer
    await gateway.stop()


async def test_a_session_that_waited_for_redis_is_recorded_from_its_admission(
    world: World, launcher: Launcher, private_redis: PrivateRedis, pool: asyncpg.Pool
) -> None:
    # A new session can wait in the gateway for its admission (Redis slow, the
    # limiter's calls in flight) while the subscriber's other session closes and its
    # slot goes back.  Redis then admits it rightly, but its row must not say it
    # opened before the other closed: play_sessions would show the subscriber over
    # its limit (loadtests.check_sessions) although Redis never counted two.
    portal, subs = await scene(world, maxSessions=1)
    viewer, others = subs[0], subs[1:]
    gateway = await launcher.start(redis_url=private_redis.url, auth_redis_timeout=10)
    for sub in subs:  # every entry in memory: nothing below waits for a load
        assert (await gateway.auth(sub, "sport", session=f"first-{sub.id}")).status == 200
    private_redis.signal(signal.SIGSTOP)
    try:
        # Two admissions of other subscribers fill the limiter's calls in flight.
        busy = []
        for sub in others:
            busy.append(asyncio.create_task(gateway.auth(sub, "sport", session=f"busy-{sub.id}")))
            await asyncio.sleep(0.1)
        second = asyncio.create_task(gateway.auth(viewer, "sport", session="second"))
        await asyncio.sleep(0.1)
        event = {"event": "play_closed", "id": f"first-{viewer.id}", "media": "sport", "token": viewer.token}
        assert (await gateway.events([event])).json["accepted"] == 1
        await asyncio.sleep(0.5)  # the release leaves with the limiter's next flush, ahead of `second`
    finally:
        private_redis.signal(signal.SIGCONT)
    assert (await second).status == 200  # the slot was free when Redis counted it
    await asyncio.gather(*busy)
    await gateway.stop()
    async with pool.acquire() as conn:
        findings = await check_sessions.check(conn, portal.id)
    assert findings.over_limit == [], findings.summary()

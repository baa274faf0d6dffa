"""Terminating a play session through the Management API, end to end (issue 11 §2).

A real gateway process admits a session; ``POST /play-sessions/{id}/terminate``
closes its row with the reason, logs an operation, frees the subscriber's slot in
Redis at once and signals every gateway, which refuses the session at its next
check even though it had the allow answer cached.  Runs against a single Redis, a
cluster and a sentinel group (the admin API in the same mode as the gateway).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from admin_api.app import create_app
from catena import ids
from catena.redis_keys import KeySpace
from catena.settings import AdminSettings, load
from tests.conftest import BASE, AdminTestServer

from .conftest import MODES, Gateway, Launcher, Portal, RedisBackend, Sub, World, eventually

pytestmark = pytest.mark.slow
REDIS_MODES = MODES


@pytest.fixture
async def admin(
    database_url: str, redis_backend: RedisBackend, redis_prefix: str
) -> AsyncIterator[aiohttp.ClientSession]:
    settings = load(
        AdminSettings,
        environ=redis_backend.env,
        database_url=database_url,
        redis_prefix=redis_prefix,
        bcrypt_rounds=4,
        webhooks_enabled=False,
        database_timeout=30.0,
    )
    server = AdminTestServer(create_app(settings))
    await server.start_server()
    async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as http:
        yield http
    await server.close()


async def api_key(pool: asyncpg.Pool, portal: Portal) -> str:
    key = f"k{portal.id}"
    await pool.execute("UPDATE portals SET api_key = $2 WHERE id = $1", portal.id, key)
    return key


async def terminate(http: aiohttp.ClientSession, key: str, session: str, body: Any = None) -> tuple[int, Any]:
    kwargs = {} if body is None else {"json": body}
    async with http.post(
        f"{BASE}/play-sessions/{session}/terminate", headers={"X-Auth-Token": key}, **kwargs
    ) as response:
        return response.status, await response.json()


async def row_of(pool: asyncpg.Pool, flussonic_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT id, active, closed_at, close_reason FROM play_sessions WHERE flussonic_id = $1", flussonic_id
    )


async def scene(world: World) -> tuple[Portal, Sub]:
    portal = await world.portal()
    await world.package(portal, "basic")
    await world.channel(portal, "sport", ["basic"])
    return portal, await world.subscriber(portal, ["basic"], max_sessions=1)


async def admitted(gateways: list[Gateway], pool: asyncpg.Pool, sub: Sub, session: str) -> asyncpg.Record:
    """The session allowed (twice: its answer cached) at every gateway; its row written."""
    for gateway in gateways:
        for _ in range(2):
            answer = await gateway.auth(sub, "sport", session=session)
            assert answer.status == 200, answer
    row = await eventually(lambda: row_of(pool, session), timeout=10.0)
    assert row is not None and row["active"]
    return row


async def test_terminated_session_is_refused_and_its_slot_freed(
    launcher: Launcher,
    pool: asyncpg.Pool,
    admin: aiohttp.ClientSession,
    backend_redis: Any,
    redis_prefix: str,
) -> None:
    world = World(pool)
    portal, sub = await scene(world)
    key = await api_key(pool, portal)
    gateways = [await launcher.start(), await launcher.start()]
    row = await admitted(gateways, pool, sub, "t1")
    # The limit is 1: a second session is refused while t1 plays.
    assert (await gateways[0].auth(sub, "sport", session="t2")).reason == "session_limit"

    status, body = await terminate(admin, key, ids.encode(row["id"]), {"reason": "account sharing"})
    assert status == 200, body
    assert body["active"] is False and body["closeReason"] == "account sharing" and body["closedAt"]
    # The slot is free in Redis at once.
    counted = KeySpace(redis_prefix).sessions(sub.id)[0]
    assert await backend_redis.zscore(counted, "t1") is None
    for gateway in gateways:
        answer = await gateway.auth(sub, "sport", session="t1", request_type="update_session")
        assert answer.status == 403 and answer.reason == "session_terminated", answer
    # The subscriber may open a new session (limit 1).
    assert (await gateways[1].auth(sub, "sport", session="t3")).status == 200
    closed = await row_of(pool, "t1")
    assert closed is not None and not closed["active"] and closed["close_reason"] == "account sharing"
    operation = await pool.fetchrow(
        "SELECT subscriber_id, payload FROM operations WHERE portal_id = $1"
        " AND type = 'terminatePlaySession'",
        portal.id,
    )
    assert operation is not None and operation["subscriber_id"] == sub.id
    assert operation["payload"]["reason"] == "account sharing"
    for gateway in gateways:
        await gateway.stop()


async def test_bad_terminations_change_nothing(
    launcher: Launcher,
    pool: asyncpg.Pool,
    admin: aiohttp.ClientSession,
    backend_redis: Any,
    redis_prefix: str,
) -> None:
    world = World(pool)
    portal, sub = await scene(world)
    other = await world.portal()
    key, other_key = await api_key(pool, portal), await api_key(pool, other)
    gateway = await launcher.start()
    row = await admitted([gateway], pool, sub, "b1")
    session = ids.encode(row["id"])
    operations = "SELECT count(*) FROM operations WHERE type = 'terminatePlaySession' AND portal_id = ANY($1)"

    assert (await terminate(admin, other_key, session))[0] == 404
    status, body = await terminate(admin, key, session, {"reason": "x" * 201})
    assert status == 400 and body.get("field") == "reason", body
    assert (await terminate(admin, key, session, {"why": "x"}))[0] == 400
    assert (await terminate(admin, key, "nonsense"))[0] == 404
    unchanged = await row_of(pool, "b1")
    assert unchanged is not None and unchanged["active"] and unchanged["close_reason"] is None
    assert await backend_redis.zscore(KeySpace(redis_prefix).sessions(sub.id)[0], "b1") is not None
    assert await pool.fetchval(operations, [portal.id, other.id]) == 0
    answer = await gateway.auth(sub, "sport", session="b1", request_type="update_session")
    assert answer.status == 200, answer

    status, body = await terminate(admin, key, session)
    assert status == 200 and body["closeReason"] == "terminated", body
    status, body = await terminate(admin, key, session, {"reason": "again"})
    assert status == 409, body
    again = await row_of(pool, "b1")
    assert again is not None and again["close_reason"] == "terminated"
    assert await pool.fetchval(operations, [portal.id, other.id]) == 1
    await gateway.stop()

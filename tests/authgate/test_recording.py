"""Play sessions recorded from checks and events (docs/api.md, issue item 5)."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import asyncpg
import pytest

from catena import ids

from .conftest import Gateway, Launcher, Portal, Sub, World, eventually

pytestmark = pytest.mark.slow


@pytest.fixture
async def scene(world: World) -> tuple[Portal, Sub]:
    portal = await world.portal(maxSessions=5)
    await world.package(portal, "basic")
    await world.channel(portal, "sport", ["basic"])
    sub = await world.subscriber(portal, ["basic"])
    return portal, sub


async def row(pool: asyncpg.Pool, flussonic_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT * FROM play_sessions WHERE flussonic_id = $1", flussonic_id)


async def wait_row(pool: asyncpg.Pool, flussonic_id: str, **expected: Any) -> asyncpg.Record:
    async def matches() -> asyncpg.Record | None:
        found = await row(pool, flussonic_id)
        ok = found is not None and all(found[k] == v for k, v in expected.items())
        return found if ok else None

    found = await eventually(matches, timeout=5.0)
    assert found is not None, (await row(pool, flussonic_id), expected)
    return found


async def test_new_session_opens_a_row_with_what_flussonic_sent(
    gateways: list[Gateway], scene: tuple[Portal, Sub], pool: asyncpg.Pool
) -> None:
    portal, sub = scene
    before = time.time()
    answer = await gateways[0].auth(
        sub,
        "sport",
        session="rec-1",
        ip="2001:db8::7",
        user_agent="VLC/3.0.16",
        qs="token=abc&device_id=tv-42",
    )
    assert answer.status == 200
    found = await wait_row(pool, "rec-1")
    assert found["portal_id"] == portal.id and found["subscriber_id"] == sub.id
    assert found["channel_id"] == portal.channels["sport"] and found["channel_name"] == "sport"
    assert found["ip"] == "2001:db8::7" and found["user_agent"] == "VLC/3.0.16"
    assert found["token"] == sub.token and found["device_id"] == "tv-42"
    assert found["active"] and found["closed_at"] is None and found["bytes"] == 0
    assert before - 1 <= found["opened_at"].timestamp() <= time.time()
    assert ids.timestamp_ms(found["id"]) // 1000 == int(found["opened_at"].timestamp())


async def test_update_session_advances_updated_at_and_bytes(
    gateways: list[Gateway], scene: tuple[Portal, Sub], pool: asyncpg.Pool
) -> None:
    _, sub = scene
    await gateways[0].auth(sub, "sport", session="rec-2")
    opened = await wait_row(pool, "rec-2")
    await asyncio.sleep(0.05)
    for gateway in gateways:  # the other process's update lands on the same row
        await gateway.auth(sub, "sport", session="rec-2", request_type="update_session", bytes=5_000_000)
    updated = await wait_row(pool, "rec-2", bytes=5_000_000)
    assert updated["updated_at"] > opened["updated_at"]
    assert updated["opened_at"] == opened["opened_at"] and updated["id"] == opened["id"]
    assert await pool.fetchval("SELECT count(*) FROM play_sessions WHERE flussonic_id = 'rec-2'") == 1


async def test_events_open_update_and_close_one_row_in_any_order(
    gateways: list[Gateway], scene: tuple[Portal, Sub], pool: asyncpg.Pool
) -> None:
    portal, sub = scene
    common = {"id": "rec-3", "media": "sport", "token": sub.token, "user_id": sub.text_id}
    closing = {
        **common,
        "event": "play_closed",
        "event_id": "3",
        "bytes": 900,
        "closed_at": int(time.time() * 1000),
    }
    # Admitted at one process (its check carries no ip: the events' is recorded) …
    assert (await gateways[1].auth(sub, "sport", session="rec-3", ip=None)).status == 200
    # … the close reaches one process before the open reaches the other.
    assert (await gateways[1].events([closing])).json["accepted"] == 1
    answer = await gateways[0].events(
        [
            {**common, "event": "play_opened", "event_id": "1", "ip": "10.9.9.9", "server": "edge-1"},
            {**common, "event": "play_updated", "event_id": "2", "bytes": 500},
        ]
    )
    assert answer.json == {"accepted": 2, "rejected": 0, "duplicates": 0, "ignored": 0, "errors": []}
    closed = await wait_row(pool, "rec-3", active=False, bytes=900, ip="10.9.9.9")
    assert closed["closed_at"] is not None and closed["server"] == "edge-1"
    assert closed["channel_id"] == portal.channels["sport"] and closed["subscriber_id"] == sub.id
    assert await pool.fetchval("SELECT count(*) FROM play_sessions WHERE flussonic_id = 'rec-3'") == 1


async def test_redelivered_events_change_nothing(
    gateways: list[Gateway], scene: tuple[Portal, Sub], pool: asyncpg.Pool
) -> None:
    _, sub = scene
    batch = [
        {"event": "play_started", "id": "rec-4", "media": "sport", "token": sub.token, "event_id": "a"},
        {
            "event": "play_closed",
            "id": "rec-4",
            "media": "sport",
            "token": sub.token,
            "event_id": "b",
            "bytes": 1234,
        },
    ]
    assert (await gateways[0].auth(sub, "sport", session="rec-4")).status == 200
    first = await gateways[0].events(batch)
    assert first.json["accepted"] == 2
    before = await wait_row(pool, "rec-4", active=False, bytes=1234)
    again = await gateways[0].events(batch)
    assert again.json["duplicates"] == 2 and again.json["accepted"] == 0
    elsewhere = await gateways[1].events(batch)  # another process has not seen them: merges to the same row
    assert elsewhere.json["accepted"] == 2
    await asyncio.sleep(0.6)
    after = await row(pool, "rec-4")
    assert after is not None
    assert dict(after) | {"updated_at": None} == dict(before) | {"updated_at": None}


async def test_auth_and_events_of_one_viewing_share_a_row(
    gateways: list[Gateway], scene: tuple[Portal, Sub], pool: asyncpg.Pool
) -> None:
    _, sub = scene
    await gateways[0].auth(sub, "sport", session="rec-5", user_agent="Player/1")
    await gateways[1].events({"event": "play_closed", "id": "rec-5", "user_id": sub.text_id, "bytes": 77})
    # Each process flushes its own batch; the row ends up with what both knew.
    found = await wait_row(pool, "rec-5", active=False, bytes=77, user_agent="Player/1")
    assert found["subscriber_id"] == sub.id and found["channel_name"] == "sport"
    assert await pool.fetchval("SELECT count(*) FROM play_sessions WHERE flussonic_id = 'rec-5'") == 1


async def test_sweeper_closes_idle_sessions_and_a_late_update_reopens_them(
    world: World, launcher: Launcher, scene: tuple[Portal, Sub], pool: asyncpg.Pool
) -> None:
    portal, sub = scene
    patient = await world.portal(authDuration=3600)
    gateway = await launcher.start(auth_session_idle=60, auth_sweep_interval=0.3)
    insert = """
        INSERT INTO play_sessions (id, portal_id, subscriber_id, channel_name, flussonic_id,
                                   opened_at, updated_at)
        VALUES ($1, $2, $3, 'sport', $4, now() - make_interval(mins => $5), now() - make_interval(mins => $5))
    """
    for flussonic_id, portal_id, minutes in (
        ("idle", portal.id, 15),
        ("fresh", portal.id, 0),
        ("long", patient.id, 15),
    ):
        await pool.execute(insert, ids.new_id(), portal_id, sub.id, flussonic_id, minutes)
    swept = await wait_row(pool, "idle", active=False)
    assert swept["closed_at"] == swept["updated_at"] and swept["swept"]
    assert (await row(pool, "fresh"))["active"]  # type: ignore[index]
    assert (await row(pool, "long"))["active"]  # type: ignore[index]  # within its portal's authDuration
    await pool.execute(
        "INSERT INTO play_session_ids (flussonic_id, id, portal_id) "
        "SELECT flussonic_id, id, portal_id FROM play_sessions WHERE flussonic_id = 'idle'"
    )
    await gateway.events({"event": "play_updated", "id": "idle", "token": sub.token, "bytes": 10})
    reopened = await wait_row(pool, "idle", active=True, bytes=10)
    assert reopened["closed_at"] is None and not reopened["swept"]
    await gateway.stop()


async def test_sigterm_flushes_what_was_accepted(
    launcher: Launcher, scene: tuple[Portal, Sub], pool: asyncpg.Pool
) -> None:
    _, sub = scene
    gateway = await launcher.start(auth_flush_interval=3600, auth_progress_interval=3600)
    for index in range(20):
        assert (await gateway.auth(sub, "sport", session=f"term-{index % 5}", bytes=index)).status == 200
    # A sixth session is refused: it must leave no row behind, even at shutdown.
    assert (await gateway.auth(sub, "sport", session="term-refused")).reason == "session_limit"
    terms = "SELECT flussonic_id, bytes FROM play_sessions WHERE flussonic_id LIKE 'term-%' ORDER BY 1"
    assert await pool.fetch(terms) == []
    assert await gateway.stop(signal.SIGTERM) == 0
    rows = await pool.fetch(terms)
    assert [(r["flussonic_id"], r["bytes"]) for r in rows] == [(f"term-{i}", 15 + i) for i in range(5)]

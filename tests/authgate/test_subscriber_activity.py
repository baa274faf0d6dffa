"""A subscriber's last_activity_at (the Management API's lastActivityAt) follows its
play sessions, written once per session batch (authgate.recorder.touch_subscribers)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from authgate import recorder
from catena import ids

from .conftest import Gateway, Portal, Sub, World, eventually

pytestmark = pytest.mark.slow


@pytest.fixture
async def scene(world: World) -> tuple[Portal, Sub, Sub]:
    portal = await world.portal(maxSessions=5)
    await world.package(portal, "basic")
    await world.channel(portal, "sport", ["basic"])
    return portal, await world.subscriber(portal, ["basic"]), await world.subscriber(portal, ["basic"])


async def activity(pool: asyncpg.Pool, sub: Sub) -> datetime | None:
    value: datetime | None = await pool.fetchval(
        "SELECT last_activity_at FROM subscribers WHERE id = $1", sub.id
    )
    return value


def batch_row(subscriber_id: int | None, updated_ms: int, closed_ms: int | None = None) -> tuple[Any, ...]:
    values: dict[str, Any] = {name: None for name in recorder.COLUMNS}
    values.update(subscriber_id=subscriber_id, updated_ms=updated_ms, closed_ms=closed_ms)
    return tuple(values[name] for name in recorder.COLUMNS)


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


async def test_a_check_moves_last_activity_to_the_sessions_update(
    gateways: list[Gateway], scene: tuple[Portal, Sub, Sub], pool: asyncpg.Pool
) -> None:
    _, sub, idle = scene
    updated_before = await pool.fetchval("SELECT updated_at FROM subscribers WHERE id = $1", sub.id)
    assert await activity(pool, sub) is None
    assert (await gateways[0].auth(sub, "sport", session="act-1")).status == 200

    async def written() -> datetime | None:
        return await activity(pool, sub)

    first = await eventually(written)
    assert first is not None
    row = await pool.fetchrow("SELECT updated_at FROM play_sessions WHERE flussonic_id = 'act-1'")
    assert abs(first - row["updated_at"]) < timedelta(milliseconds=2)

    await asyncio.sleep(0.05)
    await gateways[1].auth(sub, "sport", session="act-1", request_type="update_session", bytes=10)

    async def moved() -> datetime | None:
        value = await activity(pool, sub)
        return value if value is not None and value > first else None

    assert await eventually(moved)
    assert await activity(pool, idle) is None  # nobody else's
    # Activity is not a change of the subscriber: updatedAt stays.
    assert await pool.fetchval("SELECT updated_at FROM subscribers WHERE id = $1", sub.id) == updated_before


async def test_one_time_per_subscriber_per_batch_never_backwards(
    scene: tuple[Portal, Sub, Sub], pool: asyncpg.Pool
) -> None:
    _, sub, other = scene
    now = datetime.now(UTC).replace(microsecond=0)
    rows = [
        batch_row(sub.id, ms(now - timedelta(seconds=30))),
        batch_row(sub.id, ms(now - timedelta(seconds=20)), closed_ms=ms(now - timedelta(seconds=5))),
        batch_row(other.id, ms(now - timedelta(seconds=10))),
        batch_row(None, ms(now)),  # a session nobody is known for
        batch_row(ids.new_id(), ms(now)),  # a subscriber deleted meanwhile
    ]
    async with pool.acquire() as conn:
        await recorder.touch_subscribers(conn, rows)
        assert await activity(pool, sub) == now - timedelta(seconds=5)  # the latest, a close
        assert await activity(pool, other) == now - timedelta(seconds=10)
        # A spooled batch replayed late does not move it back.
        await recorder.touch_subscribers(conn, [batch_row(sub.id, ms(now - timedelta(minutes=5)))])
        assert await activity(pool, sub) == now - timedelta(seconds=5)
        await recorder.touch_subscribers(conn, [])


async def test_gateways_touching_the_same_subscribers_at_once(
    scene: tuple[Portal, Sub, Sub], pool: asyncpg.Pool, database_url: str
) -> None:
    """Two processes' batches name the same subscribers in opposite orders while a third
    party holds one of them: both wait their turn, neither deadlocks."""
    _, first, second = scene
    low, high = sorted([first, second], key=lambda s: s.id)
    now = ms(datetime.now(UTC))
    blocker, a, b = [await asyncpg.connect(database_url) for _ in range(3)]
    for conn in (a, b):
        # Plan as with a large table: by index, in the batch's order (a small table is
        # scanned whole, in the same order for everybody, hiding the problem).
        await conn.execute("SET enable_seqscan = off; SET enable_hashjoin = off; SET enable_mergejoin = off")
    try:
        async with blocker.transaction():
            await blocker.execute("SELECT 1 FROM subscribers WHERE id = $1 FOR UPDATE", low.id)
            touches = [
                asyncio.create_task(
                    recorder.touch_subscribers(a, [batch_row(low.id, now), batch_row(high.id, now)])
                )
            ]
            assert await eventually(lambda: waiting(pool, 1))  # a is first in line for low
            touches.append(
                asyncio.create_task(
                    recorder.touch_subscribers(b, [batch_row(high.id, now + 1), batch_row(low.id, now + 1)])
                )
            )
            assert await eventually(lambda: waiting(pool, 2))
        await asyncio.wait_for(asyncio.gather(*touches), 10)
    finally:
        for conn in (blocker, a, b):
            await conn.close()
    latest = datetime.fromtimestamp((now + 1) / 1000, UTC)
    assert await activity(pool, low) == latest and await activity(pool, high) == latest


async def waiting(pool: asyncpg.Pool, count: int) -> bool:
    found = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    return bool(found >= count)

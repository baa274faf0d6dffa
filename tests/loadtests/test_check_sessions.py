"""check_sessions finds every subscriber that held more sessions than allowed, and only those."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from catena import ids
from loadtests import check_sessions
from loadtests.viewing import Admitted

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class World:
    """A portal with subscribers, and play_sessions rows written the way a gateway does."""

    def __init__(self, pool: asyncpg.Pool, portal_id: int) -> None:
        self.pool, self.portal_id = pool, portal_id
        self.serial = 0

    async def subscriber(self, max_sessions: int | None) -> int:
        subscriber_id = ids.new_id()
        self.serial += 1
        await self.pool.execute(
            "INSERT INTO subscribers (id, portal_id, name, phone_country_code, phone, max_sessions)"
            " VALUES ($1, $2, 'S', '7', $3, $4)",
            subscriber_id,
            self.portal_id,
            f"900{self.serial}",
            max_sessions,
        )
        return subscriber_id

    async def session(
        self,
        subscriber_id: int,
        opened: float,
        updated: float,
        closed: float | None = None,
        flussonic_id: str | None = None,
    ) -> str:
        self.serial += 1
        flussonic_id = flussonic_id or f"session-{self.serial}"
        await self.pool.execute(
            "INSERT INTO play_sessions (id, portal_id, subscriber_id, channel_name, flussonic_id,"
            " opened_at, updated_at, closed_at, active) VALUES ($1, $2, $3, 'ch1', $4, $5, $6, $7, $8)",
            ids.new_id(),
            self.portal_id,
            subscriber_id,
            flussonic_id,
            at(opened),
            at(updated),
            None if closed is None else at(closed),
            closed is None,
        )
        return flussonic_id

    async def check(self, admitted: list[Admitted] | None = None) -> check_sessions.Findings:
        async with self.pool.acquire() as conn:
            return await check_sessions.check(conn, self.portal_id, admitted)


@pytest.fixture
async def world(pool: asyncpg.Pool, portal: Any) -> World:
    portal_id = ids.decode(portal.portalId)
    assert portal_id is not None
    return World(pool, portal_id)


async def test_sessions_in_turn_are_within_the_limit(world: World) -> None:
    single = await world.subscriber(1)
    await world.session(single, 0, 50, closed=60)
    await world.session(single, 60, 100, closed=120)  # opened the instant the first closed
    await world.session(single, 130, 170)  # still open; last vouched for at 170
    findings = await world.check()
    assert findings.over_limit == [] and findings.ok
    assert (findings.rows, findings.sessions, findings.subscribers) == (3, 3, 1)


async def test_overlap_beyond_the_subscribers_own_limit_is_reported(world: World) -> None:
    single = await world.subscriber(1)
    family = await world.subscriber(4)
    await world.session(single, 0, 50, closed=60)
    await world.session(single, 59, 70)  # opened one second before the first closed
    for start in range(4):
        await world.session(family, start, 100)
    findings = await world.check()
    assert findings.over_limit == [(single, 2, 1)]
    assert not findings.ok
    assert "held 2 sessions at once, allowed 1" in findings.summary()


async def test_portal_default_applies_when_the_subscriber_has_none(world: World, pool: asyncpg.Pool) -> None:
    default = await world.subscriber(None)
    for start in (0, 1, 2):
        await world.session(default, start, 30)
    findings = await world.check()
    assert findings.over_limit == [(default, 3, 2)]  # the portal's maxSessions is 2
    await pool.execute("UPDATE portals SET settings = $2 WHERE id = $1", world.portal_id, {"maxSessions": 3})
    assert (await world.check()).over_limit == []


async def test_a_session_written_twice_counts_once(world: World) -> None:
    single = await world.subscriber(1)
    # The gateway's row and a late event-sink row for the same Flussonic session.
    await world.session(single, 0, 40, flussonic_id="same")
    await world.session(single, 5, 50, closed=55, flussonic_id="same")
    findings = await world.check()
    assert findings.over_limit == [] and (findings.rows, findings.sessions) == (2, 1)


async def test_admitted_sessions_without_a_row_are_reported(world: World) -> None:
    single = await world.subscriber(1)
    recorded = await world.session(single, 0, 10)
    admitted = [Admitted(recorded, ids.encode(single)), Admitted("lost-one", ids.encode(single))]
    findings = await world.check(admitted)
    assert findings.missing == ["lost-one"] and not findings.ok
    assert "admitted sessions without a row: 1 of 2" in findings.summary()


async def test_nothing_recorded_is_a_failure(world: World) -> None:
    findings = await world.check()
    assert findings.sessions == 0 and not findings.ok

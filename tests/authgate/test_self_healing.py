"""A gateway SIGKILLed before it wrote the sessions it admitted: the record heals (issue 15 item 10).

The killed process held rows of sessions it had admitted and not yet flushed.  Redis
still counts those sessions, so the next gateway to hear of one — Flussonic's
re-check (``update_session``) or an event — writes its row with what it carries:
subscriber, channel, address, bytes, and the time the session opened (the re-check's
``duration``, the event's ``opened_at``), not the time the loss was noticed.
"""

from __future__ import annotations

import signal
import time

import asyncpg
import pytest

from .conftest import MODES, Gateway, Launcher, Portal, Sub, World, eventually

pytestmark = pytest.mark.slow
REDIS_MODES = MODES

# Seconds the viewers had been watching when the new gateway heard of them.
WATCHED = 90


@pytest.fixture
async def viewers(world: World) -> tuple[Portal, list[Sub]]:
    portal = await world.portal(maxSessions=2)
    await world.package(portal, "basic")
    await world.channel(portal, "sport", ["basic"])
    return portal, [await world.subscriber(portal, ["basic"]) for _ in range(3)]


async def rows(pool: asyncpg.Pool, prefix: str) -> dict[str, asyncpg.Record]:
    found = await pool.fetch("SELECT * FROM play_sessions WHERE flussonic_id LIKE $1", prefix + "%")
    return {r["flussonic_id"]: r for r in found}


async def kill(gateway: Gateway) -> None:
    assert gateway.process is not None
    assert await gateway.stop(signal.SIGKILL) == -signal.SIGKILL


async def test_sessions_of_a_killed_gateway_are_recorded_at_their_next_recheck_or_event(
    launcher: Launcher, viewers: tuple[Portal, list[Sub]], pool: asyncpg.Pool
) -> None:
    portal, subs = viewers
    prefix = f"heal-{launcher.mode}-"
    # A flush interval no test outlives: nothing this gateway admits reaches PostgreSQL.
    doomed = await launcher.start(auth_flush_interval=3600)
    admitted = {f"{prefix}{i}": subs[i % 3] for i in range(6)}
    for session, sub in admitted.items():
        answer = await doomed.auth(sub, "sport", session=session, ip="10.1.1.1", user_agent="TV/1")
        assert answer.status == 200, answer
    await kill(doomed)
    assert await rows(pool, prefix) == {}  # lost with the process

    heir = await launcher.start()
    rechecked, reported = list(admitted)[:3], list(admitted)[3:]
    now = time.time()
    for session in rechecked:
        answer = await heir.auth(
            admitted[session],
            "sport",
            session=session,
            request_type="update_session",
            duration=WATCHED,
            bytes=5000,
            ip="10.1.1.1",
            user_agent="TV/1",
        )
        assert answer.status == 200, answer  # still counted in Redis: no second slot taken
    opened_ms = int((now - WATCHED) * 1000)
    events = [
        {"event": "play_updated", "id": s, "token": admitted[s].token, "media": "sport", "bytes": 7000,
         "opened_at": opened_ms, "ip": "10.1.1.1"}
        for s in reported
    ]  # fmt: skip
    events[-1]["event"] = "play_closed"
    answer = await heir.events(events)
    assert answer.json["accepted"] == 3, answer

    healed = await eventually(lambda: _all(pool, prefix, len(admitted)), timeout=10.0)
    assert set(healed) == set(admitted)
    for session, row in healed.items():
        sub = admitted[session]
        assert (row["portal_id"], row["subscriber_id"]) == (portal.id, sub.id)
        assert row["channel_id"] == portal.channels["sport"] and row["ip"] == "10.1.1.1"
        # Opened when the viewer started, not when the loss was repaired.
        assert abs(row["opened_at"].timestamp() - (now - WATCHED)) < 5, (session, row["opened_at"], now)
        assert row["bytes"] == (5000 if session in rechecked else 7000)
    assert not healed[reported[-1]]["active"] and all(healed[s]["active"] for s in rechecked)


async def _all(pool: asyncpg.Pool, prefix: str, count: int) -> dict[str, asyncpg.Record] | None:
    found = await rows(pool, prefix)
    return found if len(found) == count else None

"""Concurrent-session limits held across gateway processes (docs/authgate.md, issue item 4)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from authgate import recovery
from authgate.caches import Caches
from authgate.decision import Decider
from authgate.health import Health
from authgate.metrics import Metrics
from authgate.recorder import Recorder
from authgate.redis_pipe import RedisPipe
from authgate.session_limiter import EVICTED, FULL, OK, UNAVAILABLE, SessionLimiter
from authgate.sessions import KnownSession, SessionTable
from authgate.spool import Spool
from catena.redis_keys import SLOTS, KeySpace
from loadtests import check_sessions

from .conftest import CODEC, MODES, Answer, Gateway, Portal, World, eventually

pytestmark = pytest.mark.slow
# The gateways of this module run against a single Redis, a cluster and a sentinel group.
REDIS_MODES = MODES


@pytest.fixture
async def portal(world: World) -> Portal:
    portal = await world.portal(maxSessions=2)
    await world.package(portal, "basic")
    await world.channel(portal, "sport", ["basic"])
    await world.channel(portal, "news", ["basic"])
    return portal


async def test_deny_new_holds_across_gateways(world: World, gateways: list[Gateway], portal: Portal) -> None:
    sub = await world.subscriber(portal, ["basic"])
    gw0, gw1 = gateways
    assert (await gw0.auth(sub, "sport", session="a")).status == 200
    assert (await gw1.auth(sub, "news", session="b")).status == 200
    for gateway in gateways:
        answer = await gateway.auth(sub, "sport", session="c")
        assert answer.status == 403 and answer.reason == "session_limit"
    # Updates of counted sessions, on either gateway, neither count twice nor get refused.
    for gateway in gateways:
        for session in ("a", "b"):
            again = await gateway.auth(sub, "sport", session=session, request_type="update_session")
            assert again.status == 200, again
    assert (await gw1.auth(sub, "sport", session="c")).reason == "session_limit"


async def test_limit_is_per_subscriber_not_per_token(
    world: World,
    gateways: list[Gateway],
    portal: Portal,
) -> None:
    sub = await world.subscriber(portal, ["basic"], max_sessions=1)
    assert (await gateways[0].auth(sub, "sport", session="one")).status == 200
    await world.reset_token(sub)

    # The reset reaches the gateways through their listeners (within the second
    # docs/authgate.md promises); until then the old entry, which gateways[0] put in
    # Redis, refuses the new token with token_revoked.  Those refusals count nothing.
    async def past_the_old_token() -> Answer | None:
        answer = await gateways[1].auth(sub, "sport", session="two")
        return None if answer.reason == "token_revoked" else answer

    answer = await eventually(past_the_old_token, timeout=10.0)
    assert answer is not None and answer.reason == "session_limit", answer


async def test_evict_oldest_admits_and_refuses_the_evicted(
    world: World, gateways: list[Gateway], pool: asyncpg.Pool
) -> None:
    portal = await world.portal(maxSessions=1, sessionLimitPolicy="evict_oldest")
    await world.package(portal, "basic")
    await world.channel(portal, "sport", ["basic"])
    sub = await world.subscriber(portal, ["basic"])
    gw0, gw1 = gateways
    assert (await gw0.auth(sub, "sport", session="old")).status == 200
    assert (await gw1.auth(sub, "sport", session="new")).status == 200
    for gateway in gateways:
        evicted = await gateway.auth(sub, "sport", session="old", request_type="update_session")
        assert evicted.reason == "session_limit", evicted
        kept = await gateway.auth(sub, "sport", session="new", request_type="update_session")
        assert kept.status == 200

    async def old_row_closed() -> bool:
        row = await pool.fetchrow("SELECT active, closed_at FROM play_sessions WHERE flussonic_id = 'old'")
        return row is not None and not row["active"] and row["closed_at"] is not None

    assert await eventually(old_row_closed)


async def test_closing_a_session_frees_its_slot(
    world: World,
    gateways: list[Gateway],
    portal: Portal,
) -> None:
    sub = await world.subscriber(portal, ["basic"], max_sessions=1)
    assert (await gateways[0].auth(sub, "sport", session="first")).status == 200
    assert (await gateways[1].auth(sub, "news", session="second")).reason == "session_limit"
    answer = await gateways[1].events(
        [{"event": "play_closed", "id": "first", "media": "sport", "token": sub.token, "event_id": "e1"}]
    )
    assert answer.status == 200 and answer.json["accepted"] == 1

    async def admitted() -> bool:
        return (await gateways[0].auth(sub, "news", session="second")).status == 200

    assert await eventually(admitted, timeout=3.0)


async def test_a_session_refused_then_admitted_is_recorded_from_its_admission(
    world: World, gateways: list[Gateway], portal: Portal, pool: asyncpg.Pool
) -> None:
    # A player retries a refused session with the same id; once a slot frees, the
    # retry is admitted.  Its row must open then, not at the first (refused) check,
    # or play_sessions shows the subscriber holding both sessions meanwhile.
    sub = await world.subscriber(portal, ["basic"], max_sessions=1)
    gw0, gw1 = gateways
    assert (await gw0.auth(sub, "sport", session="held")).status == 200
    assert (await gw1.auth(sub, "news", session="waiting")).reason == "session_limit"
    closed = await gw0.events([{"event": "play_closed", "id": "held", "media": "sport", "token": sub.token}])
    assert closed.json["accepted"] == 1

    async def admitted() -> bool:
        return (await gw1.auth(sub, "news", session="waiting")).status == 200

    assert await eventually(admitted, timeout=5.0)

    async def recorded() -> bool:
        rows = await pool.fetch("SELECT closed_at FROM play_sessions WHERE subscriber_id = $1", sub.id)
        return len(rows) == 2 and any(r["closed_at"] is not None for r in rows)

    assert await eventually(recorded, timeout=5.0)
    async with pool.acquire() as conn:
        findings = await check_sessions.check(conn, portal.id)
    assert findings.over_limit == [], findings.summary()


async def test_a_refused_session_retried_at_once_is_admitted_soon_after_a_slot_frees(
    world: World,
    gateways: list[Gateway],
    portal: Portal,
) -> None:
    # Players retry a refused session at once and often; the gateway answers those
    # retries from memory for a moment, which must not keep a freed slot from them.
    sub = await world.subscriber(portal, ["basic"], max_sessions=1)
    gw0, gw1 = gateways
    assert (await gw0.auth(sub, "sport", session="retry-first")).status == 200
    for _ in range(3):
        assert (await gw1.auth(sub, "news", session="retry-second")).reason == "session_limit"
    closed = await gw0.events(
        [
            {
                "event": "play_closed",
                "id": "retry-first",
                "media": "sport",
                "token": sub.token,
                "event_id": "retry-e1",
            }
        ]
    )
    assert closed.json["accepted"] == 1
    started = time.monotonic()

    async def admitted() -> bool:
        return (await gw1.auth(sub, "news", session="retry-second")).status == 200

    assert await eventually(admitted, timeout=3.0)
    assert time.monotonic() - started < 1.5  # the slot went back on another gateway


async def test_a_slot_freed_at_the_same_gateway_ends_its_refusals_at_once(
    world: World,
    gateways: list[Gateway],
    portal: Portal,
) -> None:
    sub = await world.subscriber(portal, ["basic"], max_sessions=1)
    gw = gateways[0]
    assert (await gw.auth(sub, "sport", session="own-first")).status == 200
    assert (await gw.auth(sub, "news", session="own-second")).reason == "session_limit"
    await gw.events(
        [
            {
                "event": "play_closed",
                "id": "own-first",
                "media": "sport",
                "token": sub.token,
                "event_id": "own-e1",
            }
        ]
    )
    started = time.monotonic()

    async def admitted() -> bool:
        return (await gw.auth(sub, "news", session="own-second")).status == 200

    assert await eventually(admitted, timeout=3.0, step=0.02)
    # The release reaches Redis with the limiter's next flush (every 0.2 s).
    assert time.monotonic() - started < 0.9  # a refusal remembered would hold it a full second


async def test_redis_counts_each_session_once(
    world: World, gateways: list[Gateway], portal: Portal, backend_redis: aioredis.Redis, redis_prefix: str
) -> None:
    sub = await world.subscriber(portal, ["basic"], max_sessions=3)
    for round_ in range(3):
        for gateway in gateways:
            kind = "new_session" if round_ == 0 else "update_session"
            assert (await gateway.auth(sub, "sport", session="x", request_type=kind)).status == 200
    counted, _, _ = KeySpace(redis_prefix).sessions(sub.id)
    assert await backend_redis.zcard(counted) == 1


# ---------------------------------------------------------------- the limiter itself, with a clock


class Clocked(SessionLimiter):
    """The limiter with a clock the test moves (the script takes "now" as an argument)."""

    now = 0.0

    def clock(self) -> float:
        return self.now


@pytest.fixture
async def limiter(
    redis: aioredis.Redis,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Clocked]:
    metrics, sessions = Metrics(), SessionTable()
    health = Health(lambda trusting: None)
    health.set_redis(True)

    async def no_connection() -> asyncpg.Connection:
        raise OSError("not used")

    recorder = Recorder(
        no_connection,
        Spool(tmp_path / "spool"),
        health,
        metrics,
        interval=1.0,
        max_buffered=10,
    )
    decider = Decider(
        Caches(100), sessions, recorder, CODEC, metrics, deny_duration=10, grace=60.0, stale_limit=300.0
    )

    async def restore(slots: set[int]) -> bool:
        return True

    monkeypatch.setattr(recovery, "SETTLE", 0.0)
    limiter = Clocked(
        RedisPipe(redis_url, deadline=1.0),
        redis_prefix,
        sessions,
        decider,
        health,
        metrics,
        grace=60.0,
        on_evicted=recorder.touch,
        restore=restore,
    )
    assert await limiter.connect()
    limiter.now = time.time()
    assert await limiter.recover()  # the slots' counts ready on this server, as gateways leave them
    yield limiter
    limiter.pipe.close()


def session(limiter: Clocked, key: str, subscriber: int = 7) -> KnownSession:
    """A session as the gate makes it: known to the process, opened now."""
    known = limiter.sessions.get(key.encode())
    if known is None:
        known = limiter.sessions.add(KnownSession(key.encode(), 1, subscriber, int(limiter.now * 1000)))
    return known


async def test_unrefreshed_session_stops_counting_after_duration_and_grace(limiter: Clocked) -> None:
    first = session(limiter, "first")
    assert await limiter.admit(first, 1, False, 180_000) == OK
    limiter.now += 180 + 59
    assert await limiter.admit(session(limiter, "second"), 1, False, 180_000) == FULL
    limiter.now += 2  # 180 s + 61 s since the last refresh: past duration + grace
    assert await limiter.admit(session(limiter, "second"), 1, False, 180_000) == OK


async def test_refresh_keeps_a_session_counted(limiter: Clocked) -> None:
    first = session(limiter, "first")
    assert await limiter.admit(first, 1, False, 180_000) == OK
    for _ in range(3):
        limiter.now += 170
        assert await limiter.admit(first, 1, False, 180_000) == OK
    assert await limiter.admit(session(limiter, "second"), 1, False, 180_000) == FULL


async def test_evicted_session_is_refused_until_it_would_have_expired(limiter: Clocked) -> None:
    old = session(limiter, "old")
    assert await limiter.admit(old, 1, True, 180_000) == OK
    limiter.now += 1
    assert await limiter.admit(session(limiter, "new"), 1, True, 180_000) == OK
    assert old.evicted and old.closed_ms is not None
    assert await limiter.admit(session(limiter, "old"), 1, True, 180_000) == EVICTED
    limiter.now += 180 + 61
    assert await limiter.admit(session(limiter, "old"), 1, True, 180_000) == OK


async def test_admissions_go_on_after_redis_forgets_the_script(
    limiter: Clocked, redis: aioredis.Redis
) -> None:
    assert await limiter.admit(session(limiter, "before"), 2, False, 180_000) == OK
    await redis.script_flush()  # what a restarted Redis has forgotten
    assert await limiter.admit(session(limiter, "after"), 2, False, 180_000) == OK
    assert await limiter.admit(session(limiter, "third"), 2, False, 180_000) == FULL
    assert limiter.health.redis_up


async def test_counts_a_failover_may_have_lost_are_rebuilt_before_admitting(
    limiter: Clocked, redis: aioredis.Redis, redis_prefix: str
) -> None:
    keys = KeySpace(redis_prefix)
    held = session(limiter, "held", subscriber=8)
    assert await limiter.admit(held, 1, False, 180_000) == OK
    # What a replica promoted after its primary died looks like: the slot's marker names
    # the old primary, and the primary's last write (the held session) never arrived.
    await redis.set(keys.marker(keys.subscriber_slot(8)), "the-old-primary")
    await redis.delete(*keys.sessions(8)[:2])
    newcomer = session(limiter, "newcomer", subscriber=8)
    assert await limiter.admit(newcomer, 1, False, 180_000) == UNAVAILABLE  # not from lost counts
    assert await limiter.recover()  # this process re-counts what it holds, then marks ready
    assert await redis.zscore(keys.sessions(8)[0], "held") is not None
    assert await limiter.admit(newcomer, 1, False, 180_000) == FULL


async def test_without_postgres_to_vouch_for_them_counts_stay_not_ready(
    limiter: Clocked, redis: aioredis.Redis, redis_prefix: str
) -> None:
    keys = KeySpace(redis_prefix)

    async def postgres_away(slots: set[int]) -> bool:
        return False

    limiter.recovery._restore = postgres_away
    async with redis.pipeline(transaction=False) as pipe:  # every slot: a whole server changed
        for slot in range(SLOTS):
            pipe.set(keys.marker(slot), "the-old-primary")
        await pipe.execute()
    assert await limiter.admit(session(limiter, "x", subscriber=9), 1, False, 180_000) == UNAVAILABLE
    assert not await limiter.recover()
    assert await limiter.admit(session(limiter, "y", subscriber=9), 1, False, 180_000) == UNAVAILABLE
    assert not (await limiter.check()).ready

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from admin_api import play_sessions
from catena import ids
from tests.admin_api._subscribers_support import op_id_at
from tests.conftest import Api

T0 = 1714233600  # 2024-04-27T16:00:00Z, the manual's example


async def insert_session(
    pool: asyncpg.Pool,
    portal_id: str,
    opened: int,
    *,
    subscriber: int | None = None,
    channel: int | None = None,
    active: bool = False,
    n: int = 0,
) -> str:
    """A session row as the gateway writes it: its id made when it opened."""
    opened_at = datetime.fromtimestamp(opened, UTC)
    session_id = op_id_at(opened_at, n)
    await pool.execute(
        """INSERT INTO play_sessions (id, portal_id, subscriber_id, channel_id, channel_name, flussonic_id,
                                      opened_at, updated_at, closed_at, active, bytes, ip, user_agent, token)
           VALUES ($1, $2, $3, $4, 'sport1', $5, $6, $7, $8, $9, 5242880000, '192.168.1.100', 'VLC/3.0.16',
                   'eyJhbGciOiJIUzI1NiJ9.x.y')""",
        session_id, ids.decode(portal_id), subscriber, channel, f"flu-{session_id}", opened_at,
        opened_at + timedelta(seconds=600), None if active else opened_at + timedelta(seconds=600), active,
    )  # fmt: skip
    return ids.encode(session_id)


async def listed(api: Api, query: str = "") -> list[str]:
    status, body = await api.get(f"/play-sessions?{query}")
    assert status == 200, body
    return [s["sessionId"] for s in body["sessions"]]


async def test_session_object(api: Api, portal: Any, pool: asyncpg.Pool) -> None:
    subscriber, channel = ids.new_id(), ids.new_id()
    closed = await insert_session(pool, portal.portalId, T0, subscriber=subscriber, channel=channel)
    live = await insert_session(pool, portal.portalId, T0 + 60, subscriber=subscriber, active=True)
    status, body = await api.get("/play-sessions")
    assert status == 200 and body.get("next") is None
    first, second = body["sessions"]
    assert (first["sessionId"], second["sessionId"]) == (live, closed)  # newest first
    assert second == {
        "sessionId": closed,
        "subscriberId": ids.encode(subscriber),
        "channelId": ids.encode(channel),
        "channelName": "sport1",
        "programId": None,
        "portalId": portal.portalId,
        "openedAt": T0,
        "closedAt": T0 + 600,
        "updatedAt": T0 + 600,
        "active": False,
        "bytes": 5242880000,
        "ip": "192.168.1.100",
        "userAgent": "VLC/3.0.16",
        "token": "eyJhbGciOiJIUzI1NiJ9.x.y",
        "deviceId": None,
        "closeReason": None,
    }
    assert first["active"] is True and first["closedAt"] is None


async def test_filters(api: Api, portal: Any, make_portal: Any, pool: asyncpg.Pool) -> None:
    a, b, c = ids.new_id(), ids.new_id(), ids.new_id()
    news, sport = ids.new_id(), ids.new_id()
    s1 = await insert_session(pool, portal.portalId, T0, subscriber=a, channel=news)
    s2 = await insert_session(pool, portal.portalId, T0 + 3600, subscriber=b, channel=sport, active=True)
    s3 = await insert_session(pool, portal.portalId, T0 + 86400, subscriber=c, channel=news, active=True)
    s4 = await insert_session(pool, portal.portalId, T0 + 40 * 86400, subscriber=a, channel=sport)
    other = await make_portal()
    await insert_session(pool, other.portalId, T0 + 3600, subscriber=a, channel=news, n=1)
    A, B, news_id = ids.encode(a), ids.encode(b), ids.encode(news)
    assert await listed(api) == [s4, s3, s2, s1]
    assert await listed(api, f"subscriberId={A}") == [s4, s1]
    assert await listed(api, f"subscriberId={A}&subscriberId={B}") == [s4, s2, s1]
    assert await listed(api, f"channelId={news_id}") == [s3, s1]
    assert await listed(api, "active=true") == [s3, s2]
    assert await listed(api, "active=false") == [s4, s1]
    assert await listed(api, f"opened_at_gte={T0 + 3600}") == [s4, s3, s2]
    assert await listed(api, f"opened_at_lt={T0 + 3600}") == [s1]
    assert await listed(api, f"opened_at_gte={T0}&opened_at_lt={T0 + 86400}") == [s2, s1]
    assert await listed(api, f"subscriberId={A}&active=true") == []
    assert await listed(api.as_(other.apiKey)) != []
    assert s1 not in await listed(api.as_(other.apiKey))


async def test_pages_newest_first(api: Api, portal: Any, pool: asyncpg.Pool) -> None:
    made = [await insert_session(pool, portal.portalId, T0 + 60 * n) for n in range(7)]
    seen, cursor = [], None
    while True:
        status, body = await api.get("/play-sessions?limit=3" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200
        seen += [s["sessionId"] for s in body["sessions"]]
        cursor = body.get("next")
        if not cursor:
            break
    assert seen == made[::-1]


async def test_bad_queries(api: Api) -> None:
    for query, field in [
        ("opened_at_gte=yesterday", "opened_at_gte"),
        ("opened_at_lt=2024-04-28", "opened_at_lt"),
        ("opened_at_gte=-5", "opened_at_gte"),
        ("opened_at_gte=99999999999999999999", "opened_at_gte"),
        ("active=maybe", "active"),
        ("subscriberId=sKl9SW3AAAE", "subscriberId"),
        ("channelId=chK19SW3AAAE.", "channelId"),
        ("cursor=abc", "cursor"),
        ("limit=5000", "limit"),
    ]:
        status, body = await api.get(f"/play-sessions?{query}")
        assert (status, body.get("field")) == (400, field), (query, body)


async def test_opened_at_filters_prune_partitions(portal: Any, pool: asyncpg.Pool) -> None:
    # Mid-month of the current month, whose partition always exists.
    now = int(datetime.now(UTC).replace(day=15, hour=12).timestamp())
    query = play_sessions.SessionsQuery(opened_at_gte=now - 3600, opened_at_lt=now)
    where = play_sessions._where(ids.decode(portal.portalId) or 0, query, None)
    sql = play_sessions._LIST.format(where=where.sql, limit=where.next_param())
    async with pool.acquire() as conn:
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *where.args, 100))
    # Only the month of the hour asked for is read (ids are made within a day of opened_at).
    month = datetime.fromtimestamp(now, UTC).strftime("%Ym%m")
    scanned = {w for w in plan.replace("(", " ").split() if w.startswith("play_sessions_y")}
    assert scanned and all(month in name for name in scanned), plan
    assert "play_sessions_default" not in plan

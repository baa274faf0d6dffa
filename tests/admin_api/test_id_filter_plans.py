"""One subscriber's sessions and operations read through the subscriber index, even by a generic plan.

asyncpg prepares every statement, and PostgreSQL switches a prepared statement to
its generic plan after a few runs.  For ``subscriber_id = ANY($n)`` that plan walked
the whole table in id order (the console's subscriber card took 50 ms and more);
``admin_api._filters.add_id_filter`` writes one id as an equality instead.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from admin_api import operations, play_sessions
from admin_api.operations import OperationsQuery
from admin_api.play_sessions import SessionsQuery
from catena import ids, portals


async def _generic_plan(pool: asyncpg.Pool, sql: str, args: list[Any]) -> str:
    literals = []
    for value in args:
        if isinstance(value, list):
            literals.append("'{" + ",".join(str(v) for v in value) + "}'::bigint[]")
        elif isinstance(value, bool):
            literals.append("true" if value else "false")
        else:
            literals.append(f"'{value}'")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await conn.execute("PREPARE one_subscriber AS " + sql)
        try:
            rows = await conn.fetch(f"EXPLAIN EXECUTE one_subscriber({', '.join(literals)})")
        finally:
            await conn.execute("DEALLOCATE one_subscriber")
    return "\n".join(r[0] for r in rows)


async def _fill(pool: asyncpg.Pool, portal_id: int) -> int:
    """Sessions and operations of 400 subscribers, a handful of them the measured one's."""
    subscribers = [ids.new_id() for _ in range(400)]
    rows = [(ids.new_id(), portal_id, subscribers[n % 400], f"f-{n}", n % 7 == 0) for n in range(8000)]
    await pool.executemany(
        """INSERT INTO play_sessions (id, portal_id, subscriber_id, channel_name, flussonic_id, opened_at,
                                      updated_at, active)
           VALUES ($1, $2, $3, 'news', $4, now(), now(), $5)""",
        rows,
    )
    await pool.executemany(
        """INSERT INTO operations (id, portal_id, type, subscriber_id, payload)
           VALUES ($1, $2, 'enableSubscriber', $3, '{}')""",
        [(ids.new_id(), portal_id, subscribers[n % 400]) for n in range(8000)],
    )
    await pool.execute("ANALYZE play_sessions")
    await pool.execute("ANALYZE operations")
    return subscribers[0]


async def test_one_subscribers_history_uses_the_subscriber_index(
    pool: asyncpg.Pool, portal: portals.CreatedPortal
) -> None:
    portal_id = ids.decode(portal.portalId)
    assert portal_id is not None
    subscriber = ids.encode(await _fill(pool, portal_id))

    for active in (True, False):
        query = SessionsQuery(subscriberId=[subscriber], active=active, limit=20)
        where = play_sessions._where(portal_id, query, None)
        sql = play_sessions._LIST.format(where=where.sql, limit=where.next_param())
        plan = await _generic_plan(pool, sql, [*where.args, 21])
        assert "subscriber_id_id_idx" in plan or "play_sessions_subscriber" in plan, plan

    operations_query = OperationsQuery(subscriberId=[subscriber], created_at_gte="2020-01-01", limit=20)
    where = operations._where(portal_id, operations_query, None)
    sql = operations._LIST.format(where=where.sql, limit=where.next_param())
    plan = await _generic_plan(pool, sql, [*where.args, 21])
    assert "subscriber_id_id_idx" in plan or "operations_subscriber" in plan, plan

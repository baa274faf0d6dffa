"""Closing play sessions nobody has updated for a while (docs/api.md).

A session is idle when its ``updated_at`` is older than ``auth_session_idle``, and
also older than its portal's ``authDuration`` plus ``auth_session_grace`` (Flussonic
re-checks only every ``authDuration``, so a portal with a long one must not lose
its sessions between checks).  It is closed with ``closedAt`` = its last update and
marked ``swept``: a late update (a spool replayed after an outage) reopens it.
Every gateway process runs the sweeper; the statements are idempotent and row
locks order them, so running it many times at once only repeats a no-op.  The
sweep also forgets session-id mappings of sessions closed for two days.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg

from .health import Health
from .metrics import Metrics

log = logging.getLogger("authgate.sweeper")

_SWEEP = """
UPDATE play_sessions ps SET active = false, closed_at = ps.updated_at, swept = true
FROM portals p
WHERE ps.active AND ps.updated_at < now() - make_interval(secs => $1)
  AND p.id = ps.portal_id
  AND ps.updated_at < now() - make_interval(secs => greatest($1,
        CASE WHEN jsonb_typeof(p.settings -> 'authDuration') = 'number'
             THEN (p.settings ->> 'authDuration')::numeric ELSE 180 END + $2))
"""

_FORGET = """
DELETE FROM play_session_ids m
WHERE m.created_at < now() - interval '2 days'
  AND NOT EXISTS (SELECT 1 FROM play_sessions ps WHERE ps.id = m.id AND ps.active)
"""

_ACTIVE = "SELECT count(*) FROM play_sessions WHERE active"


async def sweep(conn: asyncpg.Connection, idle: float, grace: float) -> int:
    """Close idle sessions; return how many this call closed."""
    status = await conn.execute(_SWEEP, idle, grace)
    await conn.execute(_FORGET)
    return int(status.split()[-1])


async def run(
    pool: Callable[[], asyncpg.Pool | None],
    health: Health,
    metrics: Metrics,
    *,
    idle: float,
    grace: float,
    interval: float,
) -> None:
    """Sweep every ``interval`` until cancelled."""
    while True:
        await asyncio.sleep(interval)
        current = pool()
        if current is None or not health.pg_up:
            continue
        try:
            async with current.acquire(timeout=5.0) as conn:
                metrics.sessions_swept += await sweep(conn, idle, grace)
                metrics.sessions_active = await conn.fetchval(_ACTIVE)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("session sweep failed", extra={"error": str(exc)})

"""The jobs table (docs/contracts.md, "Jobs"): enqueue, claim with SKIP LOCKED, finish.

A job goes queued → running → done | failed.  A running job whose worker stopped
sending heartbeats is queued again by :func:`reclaim_stale`, so work left by a
crashed worker is picked up by another.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from . import ids

_ENQUEUE = """
INSERT INTO jobs (id, kind, portal_id, target_id) VALUES ($1, $2, $3, $4)
ON CONFLICT (kind, target_id) WHERE state IN ('queued', 'running') DO NOTHING
RETURNING id
"""
_PENDING = """
SELECT id FROM jobs WHERE kind = $1 AND target_id = $2 AND state IN ('queued', 'running')
"""
_CLAIM = """
UPDATE jobs SET state = 'running', attempts = attempts + 1, locked_by = $2,
       heartbeat_at = now(), updated_at = now()
WHERE id = (
    SELECT id FROM jobs
    WHERE kind = $1 AND state = 'queued' AND run_after <= now()
    ORDER BY run_after, id
    FOR UPDATE SKIP LOCKED
    LIMIT 1
)
RETURNING id, kind, portal_id, target_id, attempts
"""
_HEARTBEAT = "UPDATE jobs SET heartbeat_at = now() WHERE id = $1 AND locked_by = $2 AND state = 'running'"
_FINISH = """
UPDATE jobs SET state = $3, result = $4, error = $5, finished_at = now(), updated_at = now()
WHERE id = $1 AND locked_by = $2 AND state = 'running'
"""
_RETRY = """
UPDATE jobs SET state = 'queued', error = $3, locked_by = NULL, updated_at = now(),
       run_after = now() + make_interval(secs => $4)
WHERE id = $1 AND locked_by = $2 AND state = 'running'
"""
_RECLAIM = """
UPDATE jobs SET state = 'queued', locked_by = NULL, updated_at = now(),
       error = 'worker stopped responding; queued again'
WHERE state = 'running' AND heartbeat_at < now() - make_interval(secs => $1)
  AND ($2::text IS NULL OR kind = $2)
RETURNING id
"""


async def enqueue(conn: asyncpg.Connection, kind: str, portal_id: int | None, target_id: int) -> int:
    """Queue a job for ``target_id`` unless one is already queued or running; return its id."""
    for _ in range(3):
        job_id = await conn.fetchval(_ENQUEUE, ids.new_id(), kind, portal_id, target_id)
        if job_id is None:
            job_id = await conn.fetchval(_PENDING, kind, target_id)
        if job_id is not None:
            return int(job_id)
    # The pending job finished between our two statements three times in a row.
    raise RuntimeError("could not enqueue job")


async def claim(conn: asyncpg.Connection, kind: str, worker: str) -> asyncpg.Record | None:
    """Take the oldest due job of ``kind`` for ``worker``, or ``None`` when none is due."""
    row: asyncpg.Record | None = await conn.fetchrow(_CLAIM, kind, worker)
    return row


async def heartbeat(conn: asyncpg.Connection, job_id: int, worker: str) -> bool:
    """Tell others ``worker`` still runs the job; ``False`` if it lost the job."""
    status: str = await conn.execute(_HEARTBEAT, job_id, worker)
    return status == "UPDATE 1"


async def finish(
    conn: asyncpg.Connection,
    job_id: int,
    worker: str,
    *,
    ok: bool,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> bool:
    state = "done" if ok else "failed"
    status: str = await conn.execute(_FINISH, job_id, worker, state, result, error)
    return status == "UPDATE 1"


async def retry_later(conn: asyncpg.Connection, job_id: int, worker: str, error: str, delay: float) -> bool:
    """Put a running job back in the queue to run again after ``delay`` seconds."""
    status: str = await conn.execute(_RETRY, job_id, worker, error, delay)
    return status == "UPDATE 1"


async def reclaim_stale(conn: asyncpg.Connection, timeout: float, kind: str | None = None) -> list[int]:
    """Queue again every running job without a heartbeat for ``timeout`` seconds."""
    return [r["id"] for r in await conn.fetch(_RECLAIM, timeout, kind)]

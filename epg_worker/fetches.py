"""The record of every update attempt: ``epg_fetches`` rows and the source's pointers.

An attempt's row is created ``pending`` when it starts, carries a ``progress`` object
while it runs, and is finished once as ``success``, ``error`` or ``timeout`` with its
message, counts and durations; the source's ``last_fetch_id`` then points at it.
Times are passed as Unix seconds so that these statements also run on the import
connection, whose ``timestamptz`` codec takes PostgreSQL tuples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from catena import ids

Status = Literal["success", "error", "timeout"]

ABANDONED = "the worker running this update stopped before it finished; the update was retried"

_CLOSE_ABANDONED = """
UPDATE epg_fetches SET status = 'error', message = $2, fetched_at = coalesce(fetched_at, now())
WHERE epg_source_id = $1 AND status = 'pending'
"""
_START = """
INSERT INTO epg_fetches (id, portal_id, epg_source_id, job_id, status, progress)
VALUES ($1, $2, $3, $4, 'pending', $5)
"""
_TOUCH_SOURCE = "UPDATE epg_sources SET last_attempt_at = now() WHERE id = $1"
_PROGRESS = "UPDATE epg_fetches SET progress = $2 WHERE id = $1 AND status = 'pending'"
_FINISH = """
UPDATE epg_fetches
SET status = $2, message = $3, channels = $4, found_programs = $5, imported_programs = $6,
    deleted_programs = $7, fetch_duration = $8, import_duration = $9,
    fetched_at = coalesce(to_timestamp($10), now())
WHERE id = $1 AND status = 'pending'
"""
_POINT_SOURCE = "UPDATE epg_sources SET last_fetch_id = $2 WHERE id = $1"
_REMEMBER_FILE = """
UPDATE epg_sources
SET http_etag = $2, http_last_modified = $3, imported_url = $4, imported_time_shift = $5,
    imported_sha256 = $6
WHERE id = $1
"""


@dataclass
class Result:
    """How an attempt ended, as its fetch record shows it."""

    status: Status
    message: str
    channels: int = 0
    found: int = 0
    imported: int = 0
    deleted: int = 0
    fetch_duration: float | None = None
    import_duration: float | None = None
    fetched_at: float | None = None  # Unix seconds the download ended; None = now


@dataclass(frozen=True)
class ImportedFile:
    """What the imported guide came from, kept to recognise the same file next time."""

    url: str
    time_shift: int
    etag: str | None
    last_modified: str | None
    sha256: bytes


async def start(conn: asyncpg.Connection, portal_id: int, source_id: int, job_id: int | None) -> int:
    """Open a pending record for a new attempt and return its id.

    The caller holds the source's update lock, so any record still pending belongs
    to an attempt whose worker died; those are closed as errors first.
    """
    fetch_id = ids.new_id()
    async with conn.transaction():
        await conn.execute(_CLOSE_ABANDONED, source_id, ABANDONED)
        await conn.execute(_START, fetch_id, portal_id, source_id, job_id, {"phase": "starting"})
        await conn.execute(_TOUCH_SOURCE, source_id)
    return fetch_id


async def progress(conn: asyncpg.Connection | asyncpg.Pool, fetch_id: int, state: dict[str, Any]) -> None:
    await conn.execute(_PROGRESS, fetch_id, state)


async def finish(conn: asyncpg.Connection, source_id: int, fetch_id: int, result: Result) -> None:
    """Close the record and make it the source's ``last_fetch_result`` (one transaction)."""
    async with conn.transaction():
        await conn.execute(
            _FINISH,
            fetch_id,
            result.status,
            result.message,
            result.channels,
            result.found,
            result.imported,
            result.deleted,
            result.fetch_duration,
            result.import_duration,
            result.fetched_at,
        )
        await conn.execute(_POINT_SOURCE, source_id, fetch_id)


async def remember_file(conn: asyncpg.Connection, source_id: int, file: ImportedFile) -> None:
    await conn.execute(
        _REMEMBER_FILE, source_id, file.etag, file.last_modified, file.url, file.time_shift, file.sha256
    )

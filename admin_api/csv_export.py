"""CSV exports: every row a list's filters match, streamed as RFC 4180 CSV.

An export action (``export_operations``, ``export_play_sessions``) checks its
filters at once, so bad input is a 400 before anything is sent, and returns a
:class:`CsvExport` whose rows come from a server-side cursor in a read-only
``REPEATABLE READ`` transaction: the file is one consistent snapshot, read
:data:`BATCH` rows at a time and written as they come, so memory stays flat
however many rows match.  :func:`stream` sends it (the JSON API and the console
both call it).

Lines are built by each list's own converter rather than by ``csv.writer``, which
copies every character one by one and cost more than the query itself: ids, times
and numbers never need quoting, and free text is quoted by the query (:data:`QUOTED`,
always, so an empty string ``""`` stays distinct from a null, an empty field).
While one batch is converted and sent, PostgreSQL already reads the next.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from catena.errors import TooManyRequests

from .services import Services

log = logging.getLogger("admin_api.csv")

MEDIA_TYPE = "text/csv"
# The OpenAPI description of a list endpoint that exports.
DESCRIPTION = (
    "With `Accept: text/csv` (preferred to JSON by q-value) or `format=csv`: every row the "
    "filters match, not one page, streamed as RFC 4180 CSV (UTF-8, CRLF, a header row of the "
    "JSON field names in the JSON order; times ISO 8601 UTC; null as an empty field; JSON "
    "values such as `payload` as their JSON text).  `cursor` starts after the page that "
    "issued it; `limit` is checked as for JSON but does not cut an export."
)
# Rows per round trip to PostgreSQL, and per chunk of the response.
BATCH = 2000
# Seconds a client may leave a chunk unread before the export is abandoned (it
# holds a database connection and a transaction open while it waits).
WRITE_TIMEOUT = 60.0

# SQL writing a timestamptz column as the API does: ISO 8601 in UTC, whole seconds.
ISO_UTC = "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
# SQL writing a text column as a CSV field: quoted, quotes doubled; NULL stays NULL
# (an empty field once the line is built).  PostgreSQL does it while Python formats
# the previous batch.
QUOTED = "('\"' || replace({}, '\"', '\"\"') || '\"')"
# A batch of CSV lines, without their CRLF.
Lines = list[str]
Convert = Callable[[list[asyncpg.Record]], Lines]


@dataclass(frozen=True, slots=True)
class CsvExport:
    """A CSV file to send: its name, header row and the batches of rows after it."""

    filename: str
    header: Sequence[str]
    batches: AsyncGenerator[Lines, None]


class _Exports:
    """Exports running in this process: each holds a pooled connection while it streams."""

    running = 0

    @classmethod
    def limit(cls, services: Services) -> int:
        # Half the pool at most, so JSON requests always find a connection.
        return max(1, services.settings.database_pool_size // 2)


def filename(kind: str) -> str:
    """``operations-20241016T103000Z.csv``: what the export is and when it was made."""
    return f"{kind}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.csv"


async def cursor_batches(
    services: Services, sql: str, args: Sequence[Any], convert: Convert
) -> AsyncGenerator[Lines, None]:
    """The rows of ``sql`` through a server-side cursor, :data:`BATCH` at a time, converted."""
    if _Exports.running >= _Exports.limit(services):
        raise TooManyRequests("too many CSV exports are running; try again shortly", retry_after=5)
    _Exports.running += 1
    try:
        async with services.db.acquire() as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                cursor = await conn.cursor(sql, *args)
                ahead = asyncio.ensure_future(cursor.fetch(BATCH))
                try:
                    while batch := await ahead:
                        # Ask for the next batch before converting this one.
                        ahead = asyncio.ensure_future(cursor.fetch(BATCH))
                        await asyncio.sleep(0)
                        yield convert(batch)
                finally:
                    await _settle(ahead)
    finally:
        _Exports.running -= 1


async def _settle(fetch: asyncio.Future[Any]) -> None:
    """Let a read-ahead end before its connection goes back to the pool (cancelled if still running).

    Its own outcome no longer matters; a cancellation of this task still propagates.
    """
    if not fetch.done():
        fetch.cancel()
    await asyncio.wait([fetch])
    if not fetch.cancelled():
        fetch.exception()  # retrieved, so asyncio does not log it as never retrieved


def _chunk(lines: Lines) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode() if lines else b""


async def stream(request: web.Request, export: CsvExport) -> web.StreamResponse:
    """Send ``export``: header row, then each batch as it is read (CRLF line ends, RFC 4180).

    The first batch is read before anything is sent, so a refusal (too many
    exports, PostgreSQL away) is still a JSON error.  A failure after that cuts the
    connection without the final chunk: the client sees an incomplete download,
    never a file that merely looks complete.
    """
    async with aclosing(export.batches) as batches:
        first = _chunk([",".join(export.header), *await anext(batches, [])])
        response = web.StreamResponse(headers=_headers(export.filename))
        await response.prepare(request)
        try:
            await _send(response, first)
            async for lines in batches:
                await _send(response, _chunk(lines))
        except Exception as exc:
            _abandon(request, exc)
            return response
    await response.write_eof()
    return response


async def _send(response: web.StreamResponse, data: bytes) -> None:
    async with asyncio.timeout(WRITE_TIMEOUT):
        await response.write(data)


def _abandon(request: web.Request, exc: Exception) -> None:
    if isinstance(exc, ConnectionError | TimeoutError):
        log.info("CSV export abandoned: %s", type(exc).__name__, extra={"path": request.path})
    else:
        log.error("CSV export failed after it started", exc_info=exc, extra={"path": request.path})
    if request.transport is not None:
        request.transport.abort()


def _headers(name: str) -> dict[str, str]:
    return {
        "Content-Type": f"{MEDIA_TYPE}; charset=utf-8; header=present",
        "Content-Disposition": f'attachment; filename="{name}"',
        "Cache-Control": "private, no-store",
        "Vary": "Accept",
    }

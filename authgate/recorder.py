"""Play-session recording: an in-memory batch written to PostgreSQL with COPY.

Checks and events put the sessions they touch into :attr:`Recorder.pending` (one
entry per session, so a session touched a hundred times in a second is one row).
Every ``auth_flush_interval`` one task swaps the batch out, COPYs it into a
temporary table and merges it into ``play_sessions`` in one transaction.  The merge
is monotonic — earliest open, latest update, largest byte count, first close — so
a batch applied twice, or batches applied out of order, leave the same row.

When PostgreSQL cannot be reached the batch is appended to the :class:`Spool`, and
so is every later one until the spool has been replayed, oldest first; only then
do batches go straight to PostgreSQL again.  If the disk fails too, batches wait in
memory up to ``auth_max_buffered_records`` rows; beyond that the oldest are dropped
and counted.  A crash loses what was accepted since the last flush (at most one
flush interval); SIGTERM flushes first.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from .health import Health
from .metrics import Metrics
from .sessions import KnownSession
from .spool import Spool

log = logging.getLogger("authgate.recorder")

COLUMNS = (
    "flussonic_id",
    "new_id",
    "portal_id",
    "subscriber_id",
    "channel_id",
    "channel_name",
    "opened_ms",
    "updated_ms",
    "closed_ms",
    "bytes",
    "ip",
    "user_agent",
    "token",
    "device_id",
    "proto",
    "server",
)

_BATCH_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS session_batch (
    flussonic_id text, new_id bigint, portal_id bigint, subscriber_id bigint, channel_id bigint,
    channel_name text, opened_ms bigint, updated_ms bigint, closed_ms bigint, bytes bigint,
    ip text, user_agent text, token text, device_id text, proto text, server text
) ON COMMIT DELETE ROWS
"""

# The first batch to mention a Flussonic session claims its row id; rows of a
# session that another portal already claimed are left out below.
_CLAIM = """
INSERT INTO play_session_ids (flussonic_id, id, portal_id)
SELECT flussonic_id, new_id, portal_id FROM session_batch ORDER BY flussonic_id
ON CONFLICT (flussonic_id) DO NOTHING
"""

_MERGE = """
INSERT INTO play_sessions AS ps (
    id, portal_id, subscriber_id, channel_id, channel_name, flussonic_id, opened_at, updated_at,
    closed_at, active, bytes, ip, user_agent, token, device_id, proto, server)
SELECT m.id, b.portal_id, b.subscriber_id, b.channel_id, b.channel_name, b.flussonic_id,
       to_timestamp(b.opened_ms / 1000.0), to_timestamp(b.updated_ms / 1000.0),
       to_timestamp(b.closed_ms / 1000.0), b.closed_ms IS NULL, b.bytes, b.ip, b.user_agent,
       b.token, b.device_id, b.proto, b.server
FROM session_batch b
JOIN play_session_ids m ON m.flussonic_id = b.flussonic_id AND m.portal_id = b.portal_id
ORDER BY b.flussonic_id
ON CONFLICT (id) DO UPDATE SET
    subscriber_id = coalesce(ps.subscriber_id, excluded.subscriber_id),
    channel_id = coalesce(ps.channel_id, excluded.channel_id),
    channel_name = CASE WHEN ps.channel_name = '' THEN excluded.channel_name ELSE ps.channel_name END,
    opened_at = least(ps.opened_at, excluded.opened_at),
    updated_at = greatest(ps.updated_at, excluded.updated_at),
    bytes = greatest(ps.bytes, excluded.bytes),
    ip = coalesce(ps.ip, excluded.ip),
    user_agent = coalesce(ps.user_agent, excluded.user_agent),
    token = coalesce(ps.token, excluded.token),
    device_id = coalesce(ps.device_id, excluded.device_id),
    proto = coalesce(ps.proto, excluded.proto),
    server = coalesce(ps.server, excluded.server),
    active = CASE WHEN excluded.closed_at IS NOT NULL THEN false
                  WHEN ps.swept AND excluded.updated_at > ps.updated_at THEN true
                  ELSE ps.active END,
    closed_at = CASE WHEN excluded.closed_at IS NOT NULL AND (ps.active OR ps.swept)
                         THEN greatest(excluded.closed_at, least(ps.opened_at, excluded.opened_at))
                     WHEN excluded.closed_at IS NOT NULL THEN least(ps.closed_at, excluded.closed_at)
                     WHEN ps.swept AND excluded.updated_at > ps.updated_at THEN NULL
                     ELSE ps.closed_at END,
    swept = ps.swept AND excluded.closed_at IS NULL AND excluded.updated_at <= ps.updated_at
"""

# Rows handled between two turns of the event loop.
SLICE = 500
# Seconds one batch may take before PostgreSQL is treated as away.
WRITE_TIMEOUT = 10.0

# SQLSTATE classes after which the same batch may well succeed later.
_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")

Connect = Callable[[], Awaitable[asyncpg.Connection]]


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` says "PostgreSQL is away" rather than "this data is refused"."""
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        return state[:2] in _TRANSIENT_CLASSES
    return isinstance(exc, OSError | asyncpg.InterfaceError | TimeoutError | ConnectionError)


async def write_batch(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Merge ``rows`` (see :data:`COLUMNS`) into ``play_sessions`` in one transaction."""
    async with conn.transaction():
        await conn.execute(_BATCH_TABLE)
        await conn.copy_records_to_table("session_batch", records=_in_slices(rows), columns=COLUMNS)
        await conn.execute(_CLAIM)
        await conn.execute(_MERGE)
    await touch_subscribers(conn, rows)


# A subscriber's lastActivityAt (Management API) follows its sessions: one statement
# per batch for the subscribers in it, never a write per check.  Rows are locked in
# id order so that two gateway processes touching the same subscribers cannot
# deadlock; a spooled batch replayed late never moves the time back.
_TOUCH_SUBSCRIBERS = """
WITH batch AS (SELECT * FROM unnest($1::bigint[], $2::timestamptz[]) AS b(id, at)),
due AS (
    SELECT s.id, b.at FROM subscribers s JOIN batch b ON b.id = s.id
    WHERE s.last_activity_at IS NULL OR s.last_activity_at < b.at
    ORDER BY s.id FOR NO KEY UPDATE OF s)
UPDATE subscribers s SET last_activity_at = due.at FROM due WHERE s.id = due.id
"""
_SUBSCRIBER, _UPDATED, _CLOSED = (COLUMNS.index(c) for c in ("subscriber_id", "updated_ms", "closed_ms"))


async def touch_subscribers(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Set each batch subscriber's ``last_activity_at`` to its latest session time.

    Runs after the batch committed: failing here loses no session.  Transient errors
    propagate (the batch is written again, which merges to the same rows); any other
    is logged and the batch stands.
    """
    latest: dict[int, int] = {}
    for row in rows:
        subscriber, at = row[_SUBSCRIBER], max(row[_UPDATED], row[_CLOSED] or 0)
        if subscriber is not None and at > latest.get(subscriber, 0):
            latest[subscriber] = at
    if not latest:
        return
    ordered = sorted(latest)
    times = [datetime.fromtimestamp(latest[s] / 1000, UTC) for s in ordered]
    try:
        await conn.execute(_TOUCH_SUBSCRIBERS, ordered, times)
    except Exception as exc:
        if transient(exc):
            raise
        log.exception("subscribers' last activity not written")


async def _in_slices(rows: list[tuple[Any, ...]]) -> AsyncIterator[tuple[Any, ...]]:
    # Encoding a large batch at once would hold the event loop (and every check
    # waiting on it) for tens of milliseconds: let it run between slices.
    for start in range(0, len(rows), SLICE):
        for row in rows[start : start + SLICE]:
            yield row
        await asyncio.sleep(0)


async def rows_of(sessions: Iterable[KnownSession]) -> list[tuple[Any, ...]]:
    """The sessions' rows, built a slice at a time between other work."""
    rows = []
    for count, session in enumerate(sessions, 1):
        rows.append(session.row())
        if count % SLICE == 0:
            await asyncio.sleep(0)
    return rows


class Recorder:
    """Owns the pending batch, the writer task, the spool and the database connection."""

    def __init__(
        self,
        connect: Connect,
        spool: Spool,
        health: Health,
        metrics: Metrics,
        *,
        interval: float,
        max_buffered: int,
    ) -> None:
        self.pending: dict[bytes, KnownSession] = {}
        self._connect = connect
        self._conn: asyncpg.Connection | None = None
        self._spool = spool
        self._health = health
        self._metrics = metrics
        self._interval = interval
        self._max_buffered = max_buffered
        # Batches neither PostgreSQL nor the disk took, oldest first.
        self._held: deque[list[tuple[Any, ...]]] = deque()
        self._held_rows = 0
        self._lock = asyncio.Lock()

    def touch(self, session: KnownSession) -> None:
        self.pending[session.key] = session

    async def run(self) -> None:
        """Flush every interval until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                # Shielded: cancelling the loop at shutdown must not cut a flush
                # in half; `close` waits for it (the lock) and flushes once more.
                await asyncio.shield(self.flush())
            except Exception:
                log.exception("session flush failed; will retry")

    async def flush(self) -> None:
        """Write the pending batch, then replay anything spooled, oldest first."""
        async with self._lock:
            batch, self.pending = self.pending, {}
            rows = await rows_of(batch.values())
            if rows:
                self._metrics.observe_batch(len(rows))
                await self._deliver(rows)
            await self._replay()
            self._metrics.spool_bytes = self._spool.size()

    async def close(self) -> None:
        await self.flush()
        self._spool.seal()
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _deliver(self, rows: list[tuple[Any, ...]]) -> None:
        # Once anything waits in the spool or in memory, new batches queue behind it.
        if not self._held and not self._spool.pending() and await self._write(rows):
            return
        self._keep(rows)

    def _keep(self, rows: list[tuple[Any, ...]]) -> None:
        try:
            self._metrics.spooled_bytes_total += self._spool.append(rows)
            return
        except OSError:
            log.exception("cannot write the session spool; holding the batch in memory")
        self._held.append(rows)
        self._held_rows += len(rows)
        while self._held_rows > self._max_buffered and len(self._held) > 1:
            dropped = self._held.popleft()
            self._held_rows -= len(dropped)
            self._metrics.records_dropped_total += len(dropped)
            log.error("session records dropped: memory bound reached", extra={"rows": len(dropped)})

    async def _replay(self) -> None:
        while self._held:
            if not await self._write(self._held[0]):
                return
            self._held_rows -= len(self._held.popleft())
        if not self._spool.pending():
            return
        self._spool.seal()
        for path in self._spool.segments():
            if not await self._replay_segment(path):
                return

    async def _replay_segment(self, path: Any) -> bool:
        with self._spool.claim(path) as batches:
            if batches is None:
                return True  # another process is replaying it
            for rows in batches:
                if not await self._write(rows):
                    return False
                self._metrics.replayed_rows_total += len(rows)
            path.unlink(missing_ok=True)
        log.info("spooled session batches replayed", extra={"segment": path.name})
        return True

    async def _write(self, rows: list[tuple[Any, ...]]) -> bool:
        """Write one batch; ``False`` when PostgreSQL is away (the batch is not written)."""
        try:
            conn = await self._connection()
        except Exception:
            await self._away()
            return False
        try:
            # A PostgreSQL that hangs (a partition, a lock) counts as away: spool.
            await asyncio.wait_for(write_batch(conn, rows), WRITE_TIMEOUT)
        except Exception as exc:
            if not transient(exc):
                log.exception("session batch refused by PostgreSQL; writing it row by row")
                return await self._write_each(rows)
            await self._away()
            return False
        self._health.set_pg(True)
        return True

    async def _write_each(self, rows: list[tuple[Any, ...]]) -> bool:
        # One bad row must not hold every other row of its batch hostage.
        try:
            conn = await self._connection()
            for row in rows:
                await self._write_one(conn, row)
        except Exception as exc:
            if not transient(exc):
                raise
            await self._away()
            return False  # the whole batch is kept; rows already written merge again
        return True

    async def _write_one(self, conn: asyncpg.Connection, row: tuple[Any, ...]) -> None:
        try:
            await write_batch(conn, [row])
        except Exception as exc:
            if transient(exc):
                raise
            self._metrics.records_refused_total += 1
            log.error("session row refused", extra={"flussonic_id": str(row[0]), "error": str(exc)})

    async def _away(self) -> None:
        self._health.set_pg(False)
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await self._connect()
        return self._conn

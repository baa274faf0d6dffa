"""The asyncpg pool every service uses, with deadlines, and how a lost database shows."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import msgspec
from asyncpg.pool import PoolAcquireContext

log = logging.getLogger("catena.db")

# What asyncpg raises when PostgreSQL is stopped, restarting, refusing, full or
# silent: the request could not be served now, but may be a moment later.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    # asyncpg's protocol state after the server went away in the middle of a
    # statement ("cannot switch to state 12; another operation is in progress").
    asyncpg.exceptions.InternalClientError,
)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # JSON columns come and go as Python objects, encoded by msgspec.
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(
            kind,
            encoder=lambda value: msgspec.json.encode(value).decode(),
            decoder=msgspec.json.decode,
            schema="pg_catalog",
        )


async def connect(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    """One connection with Catena's codecs (for LISTEN, the CLI and tests)."""
    conn = await asyncpg.connect(dsn, **kwargs)
    await _init_connection(conn)
    return conn


class Pool(asyncpg.Pool):  # type: ignore[misc]  # asyncpg has no type hints
    """asyncpg's pool whose ``acquire()`` waits at most ``acquire_timeout`` by default.

    asyncpg waits for a free connection for ever unless each caller passes a
    timeout; a hung PostgreSQL then holds every request.  The same timeout bounds
    the reset of a connection given back (asyncpg applies the acquire timeout there).
    """

    __slots__ = ("acquire_timeout", "outage")

    acquire_timeout: float | None
    outage: Outage

    def acquire(self, *, timeout: float | None = None) -> Any:
        return _Acquire(self, self.acquire_timeout if timeout is None else timeout)


class _Acquire(PoolAcquireContext):  # type: ignore[misc]  # asyncpg has no type hints
    """``async with pool.acquire()`` that does not wait for a server that stopped answering.

    Giving a connection back resets it, and after a statement timeout first waits
    for asyncpg's cancel request to reach the server: with a hung server that is
    one more deadline before the request can answer.  A connection that failed for
    want of the server is given back in the background instead (the cancel still
    stops a statement that was only slow; the pool's own deadline closes the
    connection if the server stays silent).
    """

    __slots__ = ()

    async def __aexit__(self, *exc_info: Any) -> None:
        if isinstance(exc_info[1], UNAVAILABLE) and self.connection is not None:
            task = asyncio.get_running_loop().create_task(super().__aexit__(*exc_info))
            _releasing.add(task)
            task.add_done_callback(_released)
            return
        await super().__aexit__(*exc_info)


# Connections being given back in the background, kept until they are.
_releasing: set[asyncio.Task[None]] = set()


def _released(task: asyncio.Task[None]) -> None:
    _releasing.discard(task)
    if not task.cancelled() and task.exception() is not None:
        # asyncpg closes a connection it could not reset; nothing is lost.
        log.debug("connection dropped after a database failure", extra={"error": str(task.exception())})


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, timeout: float | None = None, **kwargs: Any
) -> Pool:
    """A pool with Catena's codecs; raises if PostgreSQL cannot be reached.

    ``timeout`` (seconds) bounds waiting for a connection, connecting, and every
    statement that does not pass its own; ``None`` keeps asyncpg's defaults.
    """
    if timeout is not None:
        kwargs = {"timeout": timeout, "command_timeout": timeout, **kwargs}
    # asyncpg.create_pool with our Pool class: the same arguments it passes.
    pool = Pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        max_queries=50000,
        max_inactive_connection_lifetime=300.0,
        init=_init_connection,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        **kwargs,
    )
    pool.acquire_timeout = timeout
    pool.outage = Outage(pool)
    await pool
    return pool


async def ping(pool: asyncpg.Pool, timeout: float = 2.0) -> bool:
    """Whether PostgreSQL answers ``SELECT 1`` within ``timeout`` seconds."""
    try:
        async with pool.acquire(timeout=timeout) as conn:
            await conn.fetchval("SELECT 1", timeout=timeout)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return False
    return True


class Outage:
    """Whether the pool's database is known to be unreachable, logged once per change.

    A request that fails for want of the database calls :meth:`failed`; the first
    one logs a warning and starts a probe that logs the recovery, so an outage is
    two log lines however many requests it refuses.
    """

    PROBE_INTERVAL = 1.0

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.down = False
        self._probe: asyncio.Task[None] | None = None

    def failed(self, exc: BaseException) -> None:
        if self.down:
            log.debug("database still unavailable", extra={"error": _describe(exc)})
            return
        self.down = True
        log.warning("database unavailable; answering 503 until it is back", extra={"error": _describe(exc)})
        self._probe = asyncio.get_running_loop().create_task(self._until_back())

    async def _until_back(self) -> None:
        while not await ping(self.pool, timeout=2.0):
            if self.pool.is_closing():
                return
            await asyncio.sleep(self.PROBE_INTERVAL)
        self.down = False
        log.info("database reachable again")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

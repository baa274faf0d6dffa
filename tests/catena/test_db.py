"""The pool's deadlines: a slow statement is cut and cancelled in PostgreSQL too."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from catena import db


async def test_a_statement_past_the_deadline_is_cut_and_cancelled(database_url: str) -> None:
    pool = await db.create_pool(database_url, max_size=2, timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with pool.acquire() as conn:
                await conn.execute("SELECT pg_sleep(30) /* catena deadline test */")
        assert time.monotonic() - started < 5
        # The cancel request reached the server: the statement is not left running.
        for _ in range(50):
            running = await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%catena deadline test%' "
                "AND state = 'active' AND pid <> pg_backend_pid()"
            )
            if running == 0:
                break
            await asyncio.sleep(0.1)
        assert running == 0
        # And the pool still serves.
        assert await pool.fetchval("SELECT 1") == 1
    finally:
        await pool.close()


async def test_waiting_for_a_connection_has_the_same_deadline(database_url: str) -> None:
    pool = await db.create_pool(database_url, min_size=1, max_size=1, timeout=0.3)
    try:
        async with pool.acquire():
            with pytest.raises(TimeoutError):
                async with pool.acquire():
                    pass
    finally:
        await pool.close()


def test_unavailable_covers_what_a_lost_server_raises() -> None:
    for exc in (
        ConnectionRefusedError(),
        TimeoutError(),
        asyncpg.exceptions.ConnectionDoesNotExistError(),
        asyncpg.exceptions.CannotConnectNowError(),
        asyncpg.exceptions.AdminShutdownError(),
        asyncpg.exceptions.TooManyConnectionsError(),
    ):
        assert isinstance(exc, db.UNAVAILABLE), exc
    assert not isinstance(asyncpg.exceptions.UniqueViolationError(), db.UNAVAILABLE)

"""The shared test support (catena.testing): URL rewriting and scratch databases."""

from __future__ import annotations

import asyncpg
import pytest

from catena import testing


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@db:5432/postgres", "postgresql://u:p@db:5432/scratch"),
        ("postgresql://u@db/postgres?sslmode=require", "postgresql://u@db/scratch?sslmode=require"),
        ("postgresql:///postgres?host=/run/pg", "postgresql:///scratch?host=/run/pg"),
        ("postgresql://db", "postgresql://db/scratch"),
    ],
)
def test_replace_database(url: str, expected: str) -> None:
    assert testing.replace_database(url, "scratch") == expected


async def test_scratch_database_is_migrated_then_dropped(server_database_url: str) -> None:
    async with testing.scratch_database(server_database_url, "catena_t_", migrate=True) as url:
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM schema_migrations") > 0
        finally:
            await conn.close()
    name = url.split("?")[0].rsplit("/", 1)[1]
    admin = await asyncpg.connect(server_database_url)
    try:
        assert await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name) == 0
    finally:
        await admin.close()


def test_free_port_can_be_bound() -> None:
    import socket

    port = testing.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))

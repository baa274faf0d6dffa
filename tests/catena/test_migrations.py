from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from catena import db, migrations
from tests.conftest import replace_database


@pytest.fixture
async def empty_database(server_database_url: str) -> AsyncIterator[str]:
    name = "catena_migrate_" + secrets.token_hex(4)
    admin = await asyncpg.connect(server_database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    yield replace_database(server_database_url, name)
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


async def test_applied_twice_is_a_no_op(empty_database: str) -> None:
    conn = await db.connect(empty_database)
    try:
        first = await migrations.apply(conn)
        assert [m.version for m in first] == [m.version for m in migrations.discover()]
        tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert await migrations.apply(conn) == []
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == tables
        recorded = await conn.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
        assert [(r["version"], r["checksum"]) for r in recorded] == [
            (m.version, m.checksum) for m in migrations.discover()
        ]
    finally:
        await conn.close()


async def test_concurrent_runs_apply_each_migration_once(empty_database: str) -> None:
    conns = [await db.connect(empty_database) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrations.apply(c) for c in conns))
        applied = [m.version for result in results for m in result]
        assert sorted(applied) == [m.version for m in migrations.discover()]
        count = await conns[0].fetchval("SELECT count(*) FROM schema_migrations")
        assert count == len(migrations.discover())
    finally:
        for conn in conns:
            await conn.close()


async def test_a_failing_migration_leaves_nothing_behind(empty_database: str, tmp_path: object) -> None:
    from pathlib import Path

    directory = Path(str(tmp_path))
    (directory / "0001_ok.sql").write_text("CREATE TABLE ok_table (id int);")
    (directory / "0002_broken.sql").write_text("CREATE TABLE half (id int); SELECT no_such_function();")
    conn = await db.connect(empty_database)
    try:
        with pytest.raises(asyncpg.PostgresError):
            await migrations.apply(conn, directory)
        assert await conn.fetchval("SELECT to_regclass('half') IS NULL")
        assert await conn.fetchval("SELECT to_regclass('ok_table') IS NOT NULL")
        assert await conn.fetchval("SELECT array_agg(version) FROM schema_migrations") == [1]
    finally:
        await conn.close()


def test_file_names_are_checked(tmp_path: object) -> None:
    from pathlib import Path

    directory = Path(str(tmp_path))
    (directory / "1_bad.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match="NNNN_name"):
        migrations.discover(directory)
    (directory / "1_bad.sql").unlink()
    (directory / "0003_a.sql").write_text("SELECT 1;")
    (directory / "0003_b.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match="two migrations"):
        migrations.discover(directory)


async def test_monthly_partitions_exist_ahead(pool: asyncpg.Pool) -> None:
    for table in ("operations", "play_sessions"):
        parts = await pool.fetchval("SELECT count(*) FROM pg_inherits WHERE inhparent = $1::regclass", table)
        assert parts >= 5  # the default partition, this month and three ahead
        made = await pool.fetchval("SELECT catena_ensure_partitions($1::regclass, 3)", table)
        assert made == 0

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from catena import db, migrations, testing
from tests.catena.test_cli import catena
from tests.conftest import ROOT


@pytest.fixture
async def empty_database(server_database_url: str) -> AsyncIterator[str]:
    async with testing.scratch_database(server_database_url, "catena_migrate_") as url:
        yield url


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


async def test_a_failing_migration_leaves_nothing_behind(empty_database: str, tmp_path: Path) -> None:
    directory = tmp_path
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


def test_file_names_are_checked(tmp_path: Path) -> None:
    (tmp_path / "1_bad.sql").write_text("SELECT 1;")
    with pytest.raises(migrations.MigrationError, match="NNNN_name"):
        migrations.discover(tmp_path)
    (tmp_path / "1_bad.sql").unlink()
    (tmp_path / "0003_a.sql").write_text("SELECT 1;")
    (tmp_path / "0003_b.sql").write_text("SELECT 1;")
    with pytest.raises(migrations.MigrationError, match="two migrations"):
        migrations.discover(tmp_path)


async def test_no_migration_files_is_an_error_not_an_empty_run(empty_database: str, tmp_path: Path) -> None:
    (tmp_path / "README.txt").write_text("no SQL here")
    conn = await db.connect(empty_database)
    try:
        with pytest.raises(migrations.MigrationError, match="no migration files"):
            await migrations.apply(conn, tmp_path)
        assert await conn.fetchval("SELECT to_regclass('schema_migrations') IS NULL")
    finally:
        await conn.close()


def test_the_package_carries_every_migration_and_nothing_is_left_outside() -> None:
    """SQL files are read from the package; a ``migrations/`` at the top of the
    repository (where they used to live) would be left out of the wheel."""
    names = [entry.name for entry in migrations.default_source().iterdir() if entry.name.endswith(".sql")]
    assert len(migrations.discover()) == len(names) > 0
    stray = sorted(p.relative_to(ROOT) for p in ROOT.glob("*/*.sql") if p.parent.name == "migrations")
    assert stray == [], f"move these into catena/migrations/: {stray}"


async def test_a_changed_applied_migration_stops_the_run(empty_database: str, tmp_path: Path) -> None:
    (tmp_path / "0001_one.sql").write_text("CREATE TABLE one (id int);")
    conn = await db.connect(empty_database)
    try:
        await migrations.apply(conn, tmp_path)
        (tmp_path / "0001_one.sql").write_text("CREATE TABLE one (id bigint);")
        (tmp_path / "0002_two.sql").write_text("CREATE TABLE two (id int);")
        with pytest.raises(migrations.ChangedMigration, match="0001_one"):
            await migrations.apply(conn, tmp_path)
        assert await conn.fetchval("SELECT to_regclass('two') IS NULL")  # nothing applied
        applied = await migrations.apply(conn, tmp_path, accept_changed=True)
        assert [m.label for m in applied] == ["0002_two"]
        assert await migrations.apply(conn, tmp_path) == []  # the new checksum is the recorded one
        recorded = await conn.fetchval("SELECT checksum FROM schema_migrations WHERE version = 1")
        assert recorded == migrations.discover(tmp_path)[0].checksum
    finally:
        await conn.close()


async def test_catena_migrate_refuses_a_changed_migration(empty_database: str) -> None:
    conn = await db.connect(empty_database)
    try:
        await migrations.apply(conn)
        await conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    finally:
        await conn.close()
    refused = catena(empty_database, "migrate")
    assert refused.returncode == 1, refused
    assert "0001_core differ" in refused.stderr and "--accept-changed" in refused.stderr
    assert "Traceback" not in refused.stderr
    accepted = catena(empty_database, "migrate", "--accept-changed")
    assert accepted.returncode == 0, accepted.stderr
    assert "accepted the changed migration 0001_core" in accepted.stderr
    assert catena(empty_database, "migrate").returncode == 0


async def test_monthly_partitions_exist_ahead(pool: asyncpg.Pool) -> None:
    for table in ("operations", "play_sessions"):
        parts = await pool.fetchval("SELECT count(*) FROM pg_inherits WHERE inhparent = $1::regclass", table)
        assert parts >= 5  # the default partition, this month and three ahead
        made = await pool.fetchval("SELECT catena_ensure_partitions($1::regclass, 3)", table)
        assert made == 0

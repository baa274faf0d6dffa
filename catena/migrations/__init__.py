"""Forward-only migrations: numbered ``NNNN_name.sql`` files in this package.

The SQL files live beside this module (``catena/migrations/``) and ship inside the
wheel; they are read with :mod:`importlib.resources`, so an installed package
finds them wherever it is installed.  A new migration is a new file here, never
an edit of an applied one.

The runner takes a PostgreSQL advisory lock, so concurrent runs queue behind each
other; the second one finds everything applied.  Each file runs in its own
transaction together with the row that records it.  Before applying anything it
compares the checksum recorded for every applied migration with the file's: a
difference stops it (:class:`ChangedMigration`) unless ``accept_changed`` is set,
and then the new checksums are recorded.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import asyncpg

from catena.errors import CatenaError

log = logging.getLogger("catena.migrations")

PACKAGE = __name__
_LOCK_KEY = 0x0CA7E4A  # any constant; shared by every runner of this schema
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
_ACCEPT = "UPDATE schema_migrations SET checksum = $2 WHERE version = $1"


class MigrationError(CatenaError):
    """The migrations cannot be applied as they are; nothing was changed."""


class ChangedMigration(MigrationError):
    """A migration the database has applied differs from the file that now carries its number."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


def default_source() -> Traversable:
    """Where the installed package keeps its SQL files."""
    return resources.files(PACKAGE)


def discover(source: Traversable | None = None) -> list[Migration]:
    """The migrations in ``source`` (default: the package's), by number.

    A file not named ``NNNN_name.sql``, two files with one number, or no file at
    all is a :class:`MigrationError`: an installation without its SQL files must
    not look like a database with nothing to do.
    """
    source = default_source() if source is None else source
    found: dict[int, Migration] = {}
    for entry in sorted(source.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            migration = _read(entry)
            if migration.version in found:
                raise MigrationError(f"two migrations numbered {migration.version:04d} in {source}")
            found[migration.version] = migration
    if not found:
        raise MigrationError(
            f"no migration files (NNNN_name.sql) found in {source}: the installation is broken"
        )
    return [found[v] for v in sorted(found)]


def _read(entry: Traversable) -> Migration:
    match = _FILE_RE.match(entry.name)
    if not match:
        raise MigrationError(f"migration file name {entry.name!r} is not NNNN_name.sql")
    return Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8"))


async def apply(
    conn: asyncpg.Connection, source: Traversable | None = None, *, accept_changed: bool = False
) -> list[Migration]:
    """Apply every migration not yet applied; return the ones this call applied.

    Raises :class:`ChangedMigration` (having applied nothing) when an applied
    migration's recorded checksum differs from its file, unless ``accept_changed``.
    """
    migrations = discover(source)
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        recorded = {r["version"]: r["checksum"] for r in await conn.fetch("SELECT * FROM schema_migrations")}
        await _check_applied(conn, migrations, recorded, accept_changed)
        applied = []
        for migration in migrations:
            if migration.version not in recorded:
                await _apply_one(conn, migration)
                applied.append(migration)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


def changed(migrations: list[Migration], recorded: dict[int, str]) -> list[Migration]:
    """The migrations whose file no longer matches the checksum the database recorded."""
    return [m for m in migrations if m.version in recorded and recorded[m.version] != m.checksum]


async def _check_applied(
    conn: asyncpg.Connection, migrations: list[Migration], recorded: dict[int, str], accept: bool
) -> None:
    different = changed(migrations, recorded)
    if different and not accept:
        names = ", ".join(m.label for m in different)
        raise ChangedMigration(
            f"applied migration(s) {names} differ from the files of this release (checksum mismatch); "
            "nothing was applied.  Applied migrations must never be edited: restore the original "
            "files, or, once you have checked the database matches the new files, run "
            "`catena migrate --accept-changed` to record their new checksums"
        )
    for migration in different:
        log.warning("accepted the changed migration %s: its new checksum is recorded", migration.label)
        await conn.execute(_ACCEPT, migration.version, migration.checksum)


async def _apply_one(conn: asyncpg.Connection, migration: Migration) -> None:
    async with conn.transaction():
        await conn.execute(migration.sql)
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            migration.version,
            migration.name,
            migration.checksum,
        )

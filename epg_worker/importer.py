"""Importing a downloaded guide into ``epg_programs``, all or nothing.

The file is read (gunzipped when it starts with gzip's magic bytes), parsed with
:mod:`epg_worker.xmltv` and turned into rows on demand, by the ``COPY`` that sends
them: asyncpg pulls rows, fills a buffer and writes it to the socket, and PostgreSQL
stores one buffer while the next is parsed.  Nothing but that buffer is held, so
memory does not grow with the file; when PostgreSQL falls behind, the socket fills
and parsing waits.  The parser gives the event loop a turn every few hundred
programmes, so heartbeats, progress and ``/health`` go on during a long import (a
thread would not parse any faster: parsing holds the GIL).

Every row goes into ``epg_programs`` inside one transaction, tagged with the fetch
id, and so do the guide's ``<channel>`` declarations (id and display names, into
``epg_guide_channels``).  Just before committing, the source's rows of every other
fetch are deleted.
Readers (``WHERE epg_source_id = $1``) therefore see the old guide until the commit
and the new one after it, never a mix; an import that fails, is cancelled or whose
worker dies is rolled back and leaves the old guide as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import time
import zlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg

from catena import ids

from . import xmltv

COLUMNS = (
    "id",
    "portal_id",
    "epg_source_id",
    "fetch_id",
    "epg_channel_name",
    "start_at",
    "end_at",
    "title",
    "description",
    "genre",
    "rating",
    "language",
)
ID_BLOCK = 4096  # ids taken at once (one millisecond's worth)
SLICE = 250  # programmes parsed between two turns of the event loop
# Past this many distinct channels the set of names stops growing (a hostile file
# could name millions); the count then comes from the database.
MAX_TRACKED_CHANNELS = 100_000
# <channel> declarations kept per guide (with at most three display names each);
# later ones are dropped, so a hostile file cannot grow memory without bound.
MAX_GUIDE_CHANNELS = 20_000
GUIDE_CHANNEL_COLUMNS = ("epg_source_id", "fetch_id", "portal_id", "xmltv_id", "display_names")
GZIP_MAGIC = b"\x1f\x8b"
# Rows carry times as PostgreSQL's own binary value, microseconds since 2000-01-01
# UTC: with the codec :func:`prepare` installs, asyncpg copies them as they are,
# which is several times cheaper than encoding datetime objects.
PG_EPOCH = 946_684_800

_LOCK_SOURCE = "SELECT 1 FROM epg_sources WHERE id = $1 FOR KEY SHARE"
_DELETE_OTHERS = "DELETE FROM epg_programs WHERE epg_source_id = $1 AND fetch_id IS DISTINCT FROM $2"
_DELETE_OTHER_CHANNELS = "DELETE FROM epg_guide_channels WHERE epg_source_id = $1 AND fetch_id <> $2"
_COUNT_CHANNELS = """
SELECT count(DISTINCT epg_channel_name) FROM epg_programs WHERE epg_source_id = $1 AND fetch_id = $2
"""


def archive_cutoff(archive_days: int) -> int:
    """Unix seconds before which a programme that has ended is past the archive depth."""
    return int(time.time()) - archive_days * 86400


class ImportFailed(Exception):
    """The guide cannot be imported; the old one stays.  The message says why."""


@dataclass(frozen=True)
class Target:
    """Where rows go and how they are shaped."""

    portal_id: int
    source_id: int
    fetch_id: int
    time_shift: int  # minutes added to every time
    cutoff: int  # Unix seconds; programmes that ended before this are not kept


@dataclass
class Problem:
    """One kind of bad programme: how many, and the first one seen."""

    count: int = 0
    example: str = ""

    def add(self, line: int, value: str | None) -> None:
        if not self.count:
            self.example = f"line {line}" + (f": {value!r}" if value is not None else "")
        self.count += 1


@dataclass
class Stats:
    """Counts of one import, read for progress while it runs."""

    found: int = 0
    imported: int = 0
    pruned: int = 0
    skipped: dict[str, Problem] = field(default_factory=dict)
    bad_stops: Problem = field(default_factory=Problem)
    channel_names: set[str] = field(default_factory=set)
    # The guide's <channel> declarations: id → display names.
    guide_channels: dict[str, list[str]] = field(default_factory=dict)
    channels_overflow: bool = False
    channels: int = 0
    deleted: int = 0
    file_position: int = 0  # bytes of the downloaded file consumed so far
    xml_bytes: int = 0  # bytes of XML (after gunzip) parsed so far

    def skip(self, reason: str, line: int, value: str | None = None) -> None:
        self.skipped.setdefault(reason, Problem()).add(line, value)

    def declare_channel(self, channel_id: str, display_names: list[str]) -> None:
        """A ``<channel>`` of the guide (the first declaration of an id wins)."""
        if len(self.guide_channels) < MAX_GUIDE_CHANNELS:
            self.guide_channels.setdefault(channel_id, display_names)


Finish = Callable[[asyncpg.Connection, Stats], Awaitable[None]]


def tune_gc() -> None:
    """Run the cyclic garbage collector less often in an importing process.

    An import allocates several container objects per programme (row tuples, lxml
    proxies), none of which can be part of a cycle; with the default threshold
    (700) a collection would start every few hundred programmes, for nothing.
    """
    gc.set_threshold(50_000, 20, 100)


async def prepare(conn: asyncpg.Connection) -> None:
    """Make ``conn`` (a connection used only for imports) take times as PostgreSQL tuples."""
    # tuple() of a tuple is the tuple itself, and a C call: the cheapest identity.
    await conn.set_type_codec(
        "timestamptz", schema="pg_catalog", encoder=tuple, decoder=tuple, format="tuple"
    )


async def import_guide(
    conn: asyncpg.Connection,
    path: Path,
    target: Target,
    stats: Stats,
    finish: Finish,
    max_xml_bytes: int,
) -> None:
    """Replace the source's programmes with those of the file at ``path``.

    ``finish`` runs inside the transaction just before it commits (to record the
    result atomically with the new guide).  Raises :class:`ImportFailed`, or
    whatever ``conn`` raises; in both cases nothing changed.
    """
    check_head(path)
    records = _rows(path, Rows(target, stats), stats, max_xml_bytes)
    try:
        async with conn.transaction():
            await conn.copy_records_to_table("epg_programs", records=records, columns=COLUMNS)
            await _replace(conn, target, stats)
            await finish(conn, stats)
    finally:
        await records.aclose()  # closes the file when COPY stopped early


async def _rows(
    path: Path, rows: Rows, stats: Stats, max_xml_bytes: int
) -> AsyncGenerator[tuple[Any, ...], None]:
    try:
        with open_guide(path) as stream:
            turn = SLICE
            counted: Any = _Counted(stream, stats, max_xml_bytes)  # file-like enough for lxml
            for raw in xmltv.iter_programmes(counted, stats.declare_channel):
                row = rows(raw)
                if row is not None:
                    yield row
                turn -= 1
                if not turn:
                    turn = SLICE
                    await asyncio.sleep(0)
    except xmltv.XmltvError as exc:
        after = f" (after {stats.found} programmes)" if stats.found else ""
        raise ImportFailed(f"{exc}{after}") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ImportFailed(
            f"the gzip data is truncated or corrupt after {stats.file_position} bytes: {exc}"
        ) from None


async def _replace(conn: asyncpg.Connection, target: Target, stats: Stats) -> None:
    if stats.imported == 0:
        raise ImportFailed(
            f"no programme could be imported: {stats.found} found{describe(stats)}; "
            "the previous guide was kept"
        )
    if await conn.fetchval(_LOCK_SOURCE, target.source_id) is None:
        raise ImportFailed("the EPG source was deleted during the import")
    status = await conn.execute(_DELETE_OTHERS, target.source_id, target.fetch_id)
    stats.deleted = int(status.split()[-1])
    await _replace_guide_channels(conn, target, stats)
    if stats.channels_overflow:
        stats.channels = await conn.fetchval(_COUNT_CHANNELS, target.source_id, target.fetch_id)
    else:
        stats.channels = len(stats.channel_names)


async def _replace_guide_channels(conn: asyncpg.Connection, target: Target, stats: Stats) -> None:
    await conn.execute(_DELETE_OTHER_CHANNELS, target.source_id, target.fetch_id)
    records = [
        (target.source_id, target.fetch_id, target.portal_id, channel_id, names)
        for channel_id, names in stats.guide_channels.items()
    ]
    if records:
        await conn.copy_records_to_table("epg_guide_channels", records=records, columns=GUIDE_CHANNEL_COLUMNS)


def check_head(path: Path) -> None:
    """Fail early, with a clear message, on files that cannot be XMLTV."""
    try:
        with open_guide(path) as stream:
            head = stream.read(2048)
    except (OSError, EOFError, zlib.error) as exc:
        raise ImportFailed(f"the gzip data is corrupt: {exc}") from None
    problem = xmltv.sniff(head)
    if problem is not None:
        raise ImportFailed(problem)


@contextlib.contextmanager
def open_guide(path: Path) -> Iterator[IO[bytes]]:
    """The file's XML bytes: gunzipped when it starts with gzip's magic bytes."""
    with path.open("rb") as raw:
        if raw.read(2) != GZIP_MAGIC:
            raw.seek(0)
            yield raw
            return
        raw.seek(0)
        with gzip.GzipFile(fileobj=raw, mode="rb") as unpacked:
            yield unpacked  # type: ignore[misc]


class Rows:
    """Turns raw programmes into ``epg_programs`` rows, counting what it drops.

    Called once per programme, so the common path is written for speed: tuple
    unpacking, the time cache read directly, ids taken from reserved blocks.
    """

    def __init__(self, target: Target, stats: Stats) -> None:
        self.target = target
        self.portal_id = target.portal_id
        self.source_id = target.source_id
        self.fetch_id = target.fetch_id
        self.times = xmltv.TimeParser(target.time_shift)
        self.stats = stats
        self.next_id = 0
        self.end_id = 0

    def __call__(self, raw: xmltv.RawProgramme) -> tuple[Any, ...] | None:
        channel, start_text, stop_text, title, language, description, genre, rating, _ = raw
        stats = self.stats
        stats.found += 1
        if channel is None or title is None or start_text is None:
            self._incomplete(raw)
            return None
        known = self.times.known
        start = known.get(start_text, xmltv.UNKNOWN)
        if start == xmltv.UNKNOWN:
            start = self.times.learn(start_text)
        if start is None:
            stats.skip("with an invalid start time", raw.line, start_text)
            return None
        stop = None
        if stop_text is not None:
            stop = known.get(stop_text, xmltv.UNKNOWN)
            if stop == xmltv.UNKNOWN:
                stop = self.times.learn(stop_text)
            if stop is None or stop <= start:
                # A programme with a broken stop is still worth showing: it keeps
                # its start and gets no end, like one whose stop is missing.
                stats.bad_stops.add(raw.line, stop_text)
                stop = None
        if (start if stop is None else stop) < self.target.cutoff:
            stats.pruned += 1
            return None
        if channel not in stats.channel_names:
            self._new_channel(channel)
        stats.imported += 1
        programme_id = self.next_id
        if programme_id == self.end_id:
            block = ids.reserve(ID_BLOCK)
            programme_id, self.end_id = block.start, block.stop
        self.next_id = programme_id + 1
        return (
            programme_id,
            self.portal_id,
            self.source_id,
            self.fetch_id,
            channel,
            ((start - PG_EPOCH) * 1_000_000,),
            None if stop is None else ((stop - PG_EPOCH) * 1_000_000,),
            title,
            description,
            genre,
            rating,
            language,
        )

    def _incomplete(self, raw: xmltv.RawProgramme) -> None:
        missing = "channel" if raw.channel is None else "title" if raw.title is None else "start time"
        self.stats.skip(f"without a {missing}", raw.line)

    def _new_channel(self, channel: str) -> None:
        stats = self.stats
        if stats.channels_overflow:
            return
        if len(stats.channel_names) >= MAX_TRACKED_CHANNELS:
            stats.channels_overflow = True
            stats.channel_names.clear()
            return
        stats.channel_names.add(channel)


class _Counted:
    """A reader that tracks how far into the file and the XML the parser is."""

    def __init__(self, stream: IO[bytes], stats: Stats, limit: int) -> None:
        self.stream = stream
        self.raw = getattr(stream, "fileobj", None) or stream
        self.stats = stats
        self.limit = limit

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.stats.xml_bytes += len(data)
        self.stats.file_position = self.raw.tell()
        if self.stats.xml_bytes > self.limit:
            raise ImportFailed(
                f"the XML is larger than the limit of {self.limit} bytes (CATENA_EPG_MAX_BYTES)"
            )
        return data


def describe(stats: Stats) -> str:
    """What was dropped or corrected, for the fetch record's message ("" when nothing)."""
    parts = [
        f"skipped {problem.count} {reason} (first at {problem.example})"
        for reason, problem in stats.skipped.items()
    ]
    if stats.pruned:
        parts.append(f"{stats.pruned} ended before the archive depth (archiveDays) and were not kept")
    if stats.bad_stops.count:
        parts.append(
            f"ignored {stats.bad_stops.count} stop times that were invalid or not after the start "
            f"(first at {stats.bad_stops.example})"
        )
    return "".join(f"; {part}" for part in parts)

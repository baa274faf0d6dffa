"""What a subscriber may watch, and the guide for it: the client API's SQL in one place.

A subscriber's channels are those of its explicit subscriptions and of the
portal's free packages, each channel once: numbered channels first, by number,
then the others by title (case-insensitive) and name.  A channel's guide is
found through its ``epg_source_name`` (an EPG source of the same portal, joined
by name, so a channel naming a source created later links by itself) and
``epg_channel_name``; the EPG worker replaces a source's programmes atomically,
so one query sees one import.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

# A programme without an end is taken to run until the next one starts; with no
# next one either, it counts as running for at most this long.
OPEN_END = timedelta(hours=6)

_CHANNELS = """
WITH granted AS (
    SELECT package_id FROM subscriptions WHERE subscriber_id = $1 AND portal_id = $2
    UNION
    SELECT package_id FROM portal_free_packages WHERE portal_id = $2
)
SELECT c.id, c.name, c.title, c.number, c.epg_channel_name, s.id AS epg_source_id, l.etag AS logo_etag,
       min(p.name) AS package_name, c.updated_at
FROM granted g
JOIN packages p ON p.id = g.package_id AND p.portal_id = $2
JOIN channel_packages cp ON cp.package_id = g.package_id
JOIN channels c ON c.id = cp.channel_id AND c.portal_id = $2
LEFT JOIN channel_logos l ON l.channel_id = c.id
LEFT JOIN epg_sources s ON s.portal_id = $2 AND s.name = c.epg_source_name
WHERE $3::text IS NULL OR c.name = $3
GROUP BY c.id, s.id, l.etag
ORDER BY c.number NULLS LAST, lower(c.title), c.name
"""

_PROGRAM_COLUMNS = "p.id, p.start_at, p.end_at, p.title, p.description, p.genre, p.rating, p.language"

_NOW_NEXT = f"""
SELECT k.source_id, k.epg_name, x.*
FROM (SELECT DISTINCT * FROM unnest($1::bigint[], $2::text[])) AS k(source_id, epg_name)
CROSS JOIN LATERAL (
    (SELECT false AS upcoming, {_PROGRAM_COLUMNS} FROM epg_programs p
     WHERE p.epg_source_id = k.source_id AND p.epg_channel_name = k.epg_name AND p.start_at <= $3
     ORDER BY p.start_at DESC LIMIT 1)
    UNION ALL
    (SELECT true AS upcoming, {_PROGRAM_COLUMNS} FROM epg_programs p
     WHERE p.epg_source_id = k.source_id AND p.epg_channel_name = k.epg_name AND p.start_at > $3
     ORDER BY p.start_at LIMIT 1)
) x
"""

# Programmes that overlap [$3, $4), plus the first one starting at or after $4,
# whose start ends the last one when that has no end of its own.
_RANGE = f"""
(SELECT {_PROGRAM_COLUMNS} FROM epg_programs p
 WHERE p.epg_source_id = $1 AND p.epg_channel_name = $2 AND p.start_at < $4
   AND (p.end_at > $3 OR (p.end_at IS NULL AND p.start_at >= $3 - interval '6 hours'))
 ORDER BY p.start_at, p.id)
UNION ALL
(SELECT {_PROGRAM_COLUMNS} FROM epg_programs p
 WHERE p.epg_source_id = $1 AND p.epg_channel_name = $2 AND p.start_at >= $4
 ORDER BY p.start_at LIMIT 1)
"""

_GUIDE = f"""
SELECT k.source_id, k.epg_name, {_PROGRAM_COLUMNS}
FROM (SELECT DISTINCT * FROM unnest($1::bigint[], $2::text[])) AS k(source_id, epg_name)
JOIN epg_programs p ON p.epg_source_id = k.source_id AND p.epg_channel_name = k.epg_name
WHERE p.start_at >= $3 AND p.start_at < $4
ORDER BY k.source_id, k.epg_name, p.start_at, p.id
"""

_GUIDE_STATE = """
SELECT count(*) AS programs, coalesce(max(p.id), 0) AS newest
FROM (SELECT DISTINCT * FROM unnest($1::bigint[], $2::text[])) AS k(source_id, epg_name)
JOIN epg_programs p ON p.epg_source_id = k.source_id AND p.epg_channel_name = k.epg_name
WHERE p.start_at >= $3 AND p.start_at < $4
"""

GuideKey = tuple[int, str]


@dataclass(frozen=True, slots=True)
class Channel:
    id: int
    name: str
    title: str
    number: int | None
    group: str
    logo_etag: str | None
    guide: GuideKey | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Program:
    id: int
    start: datetime
    end: datetime | None
    title: str
    description: str | None
    genre: str | None
    rating: str | None
    language: str | None

    def ends(self, following: Program | None) -> datetime | None:
        """The end, or else the next programme's start."""
        if self.end is not None:
            return self.end
        return following.start if following is not None else None


def _channel(row: asyncpg.Record) -> Channel:
    source, epg_name = row["epg_source_id"], row["epg_channel_name"]
    return Channel(
        id=row["id"],
        name=row["name"],
        title=row["title"],
        number=row["number"],
        group=row["package_name"],
        logo_etag=row["logo_etag"],
        updated_at=row["updated_at"],
        guide=(source, epg_name) if source is not None and epg_name else None,
    )


def _program(row: asyncpg.Record) -> Program:
    return Program(
        id=row["id"],
        start=row["start_at"],
        end=row["end_at"],
        title=row["title"],
        description=row["description"],
        genre=row["genre"],
        rating=row["rating"],
        language=row["language"],
    )


async def channels(
    conn: asyncpg.Connection, subscriber_id: int, portal_id: int, name: str | None = None
) -> list[Channel]:
    """The subscriber's channels (or the one called ``name``, if the subscriber has it)."""
    return [_channel(row) for row in await conn.fetch(_CHANNELS, subscriber_id, portal_id, name)]


def _columns(keys: Iterable[GuideKey]) -> tuple[list[int], list[str]]:
    pairs = list(keys)
    return [source for source, _ in pairs], [name for _, name in pairs]


async def now_next(
    conn: asyncpg.Connection, keys: Sequence[GuideKey], now: datetime
) -> dict[GuideKey, tuple[Program | None, Program | None]]:
    """For each guide: the programme on air at ``now`` (or ``None``) and the one after it."""
    found: dict[GuideKey, list[Program | None]] = {key: [None, None] for key in keys}
    for row in await conn.fetch(_NOW_NEXT, *_columns(keys), now):
        found[(row["source_id"], row["epg_name"])][1 if row["upcoming"] else 0] = _program(row)
    return {key: (_on_air(latest, upcoming, now), upcoming) for key, (latest, upcoming) in found.items()}


def _on_air(latest: Program | None, upcoming: Program | None, now: datetime) -> Program | None:
    if latest is None:
        return None
    end = latest.ends(upcoming) or latest.start + OPEN_END
    return latest if end > now else None


async def programs(conn: asyncpg.Connection, key: GuideKey, start: datetime, end: datetime) -> list[Program]:
    """Programmes of one guide overlapping ``[start, end)``, each with its end filled in."""
    rows = [_program(row) for row in await conn.fetch(_RANGE, *key, start, end)]
    return [p for p in _fill_ends(rows) if p.start < end and (p.end or p.start + OPEN_END) > start]


def _fill_ends(rows: list[Program]) -> list[Program]:
    return [_filled(program, rows[i + 1] if i + 1 < len(rows) else None) for i, program in enumerate(rows)]


def _filled(program: Program, following: Program | None) -> Program:
    end = program.ends(following)
    if end is program.end:
        return program
    return Program(
        program.id,
        program.start,
        end,
        program.title,
        program.description,
        program.genre,
        program.rating,
        program.language,
    )


async def guide(
    conn: asyncpg.Connection, keys: Sequence[GuideKey], start: datetime, end: datetime
) -> dict[GuideKey, list[Program]]:
    """Programmes of several guides starting within ``[start, end)``, by guide, in order."""
    found: dict[GuideKey, list[Program]] = {}
    for row in await conn.fetch(_GUIDE, *_columns(keys), start, end):
        found.setdefault((row["source_id"], row["epg_name"]), []).append(_program(row))
    return {key: _fill_ends(rows) for key, rows in found.items()}


async def guide_state(
    conn: asyncpg.Connection, keys: Sequence[GuideKey], start: datetime, end: datetime
) -> tuple[int, int]:
    """``(programmes, newest id)`` of the guides in ``[start, end)``: changes with every import."""
    row = await conn.fetchrow(_GUIDE_STATE, *_columns(keys), start, end)
    return int(row["programs"]), int(row["newest"])

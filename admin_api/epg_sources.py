"""``/epg-sources``, their programmes and ``/epg-fetches``: the EPG as operators see it (docs/api.md).

The EPG worker (``epg_worker``) does the fetching: it claims the ``epg_update`` jobs
queued here, writes ``epg_fetches`` rows (``pending`` with a ``progress`` object
while it runs), points ``epg_sources.last_fetch_id`` at the latest finished fetch and
replaces a source's ``epg_programs`` atomically.  This module only reads those.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import asyncpg
from msgspec import UNSET, Meta, UnsetType

from catena import ids, jobs, operations
from catena.errors import InvalidInput

from ._content import FIRST_ID, LAST_ID, BodyId, check_echo, decode_id, fetch_owned, id_page, name_taken
from .auth import authenticate_manager
from .channels import EpgChannelName
from .principal import Principal
from .routing import Api, Call
from .schema import Name, PageQuery, Request, Response, TextId, Timestamp, iso, opt_text_id, text_id
from .services import Services

api = Api("EPG", auth=authenticate_manager)

Url = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=2000,
        pattern=r"^[^\s\x00]+$",
        description="an http:// or https:// URL without spaces",
        examples=["https://epg.example.com/xmltv.xml"],
    ),
]
Period = Annotated[int, Meta(ge=1, le=365, description="days between automatic updates")]
FetchStatus = Literal["pending", "success", "error", "timeout"]
DateText = Annotated[str, Meta(examples=["2024-10-16"])]

JOB_KIND = "epg_update"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Bounds of "any day" that PostgreSQL and Python both represent.
_FIRST_DAY = datetime(1, 1, 2, tzinfo=UTC)
_LAST_DAY = datetime(9999, 12, 30, tzinfo=UTC)
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class EpgFetch(Response):
    epgFetchId: TextId
    epgSourceId: TextId
    created_at: Timestamp
    fetched_at: Timestamp | None
    job_id: TextId | None
    status: FetchStatus
    message: str
    channels: int
    foundPrograms: int
    importedPrograms: int
    deletedPrograms: int
    fetchDuration: float | None
    importDuration: float | None
    # What the worker reports while the fetch is pending; absent afterwards.
    progress: dict[str, Any] | None = None


class EpgSource(Response):
    epgSourceId: TextId
    portalId: TextId
    name: str
    url: str
    period: int
    last_fetch_result: EpgFetch | None
    createdAt: Timestamp
    updatedAt: Timestamp


class EpgSourcePage(Response):
    epgSources: list[EpgSource]
    next: str | None = None


class EpgSourceCreate(Request):
    name: Name
    url: Url
    period: Period = 1


class EpgSourceUpdate(Request):
    """Absent fields keep their value; read-only fields may be sent back unchanged."""

    name: Name | UnsetType = UNSET
    url: Url | UnsetType = UNSET
    period: Period | UnsetType = UNSET
    epgSourceId: str | UnsetType = UNSET
    portalId: str | UnsetType = UNSET
    last_fetch_result: dict[str, Any] | UnsetType | None = UNSET
    createdAt: str | UnsetType = UNSET
    updatedAt: str | UnsetType = UNSET


class EpgJob(Response):
    jobId: TextId


class EpgFetchPage(Response):
    epgFetches: list[EpgFetch]
    next: str | None = None


class EpgFetchQuery(PageQuery):
    epgSourceId: list[BodyId] | None = None
    status: list[FetchStatus] | None = None


class EpgProgram(Response):
    programId: TextId
    epgSourceId: TextId
    epgChannelName: str
    date: DateText
    start: Timestamp
    end: Timestamp | None
    title: str
    language: str | None
    description: str | None
    genre: str | None
    rating: str | None


class EpgProgramPage(Response):
    programs: list[EpgProgram]
    next: str | None = None


class EpgProgramQuery(PageQuery):
    date: DateText | None = None
    epgChannelName: EpgChannelName | None = None


class LinkedChannel(Response):
    channelId: TextId
    name: str
    title: str


class EpgGuideChannel(Response):
    """One channel of a source's current guide, as an operator picks it for a link."""

    # The XMLTV channel id: what a channel's epgChannelName names.
    epgChannelName: str
    # The guide's <display-name>s (at most three), first one first; empty when the
    # guide does not declare the channel (or was imported before they were kept).
    displayName: str | None
    displayNames: list[str]
    # Programmes in the current guide, the first one's start and the last one's
    # end (its start when it has none); null without programmes.
    programs: int
    firstStart: Timestamp | None
    lastEnd: Timestamp | None
    # False for an id only channels link to: the guide neither declares it nor has
    # programmes for it (usually a typo in the link).
    inGuide: bool
    # The portal's channels whose epgSourceName/epgChannelName point here.
    linkedChannels: list[LinkedChannel]


class EpgGuideChannelPage(Response):
    channels: list[EpgGuideChannel]
    next: str | None = None


_FETCH_COLUMNS = (
    "id",
    "epg_source_id",
    "job_id",
    "status",
    "message",
    "channels",
    "found_programs",
    "imported_programs",
    "deleted_programs",
    "fetch_duration",
    "import_duration",
    "progress",
    "created_at",
    "fetched_at",
)
_SOURCE = f"""
SELECT s.id, s.portal_id, s.name, s.url, s.period, s.created_at, s.updated_at,
       {", ".join(f"f.{c} AS f_{c}" for c in _FETCH_COLUMNS)}
FROM epg_sources s LEFT JOIN epg_fetches f ON f.id = s.last_fetch_id
"""
_LIST = _SOURCE + "WHERE s.portal_id = $1 AND s.id > $2 ORDER BY s.id LIMIT $3"
_GET = _SOURCE + "WHERE s.portal_id = $1 AND s.id = $2"
_LOCK = "SELECT * FROM epg_sources WHERE portal_id = $1 AND id = $2 FOR UPDATE"
_SHARE = "SELECT id FROM epg_sources WHERE portal_id = $1 AND id = $2 FOR SHARE"
_EXISTS = "SELECT id FROM epg_sources WHERE portal_id = $1 AND id = $2"
_INSERT = "INSERT INTO epg_sources (id, portal_id, name, url, period) VALUES ($1, $2, $3, $4, $5)"
_UPDATE = """
UPDATE epg_sources SET name = $3, url = $4, period = $5, updated_at = now()
WHERE portal_id = $1 AND id = $2
"""
_DELETE = "DELETE FROM epg_sources WHERE portal_id = $1 AND id = $2"
_RENAME_LINKS = """
UPDATE channels SET epg_source_name = $3, updated_at = now()
WHERE portal_id = $1 AND epg_source_name = $2
"""
_CLEAR_LINKS = """
UPDATE channels SET epg_source_name = NULL, epg_channel_name = NULL, updated_at = now()
WHERE portal_id = $1 AND epg_source_name = $2
"""
_FETCHES = f"""
SELECT {", ".join(f"{c} AS f_{c}" for c in _FETCH_COLUMNS)} FROM epg_fetches
WHERE portal_id = $1 AND id < $2
  AND ($3::bigint[] IS NULL OR epg_source_id = ANY($3))
  AND ($4::text[] IS NULL OR status = ANY($4))
ORDER BY id DESC LIMIT $5
"""
_PROGRAM_COLUMNS = """
SELECT id, epg_source_id, epg_channel_name, start_at, end_at, title, language, description, genre, rating
FROM epg_programs
WHERE epg_source_id = $1 AND portal_id = $2 AND (start_at, id) > ($3, $4)
  AND start_at >= $5 AND start_at < $6
"""
_PROGRAMS = _PROGRAM_COLUMNS + "ORDER BY start_at, id LIMIT $7"
# A page of the guide's channel ids after $2: those the guide declares, those its
# programmes name (a skip scan of the (source, channel, start) index: one probe
# per id, not a pass over every programme) and those the portal's channels link
# to; each with its display names and programme figures.
_GUIDE_CHANNELS = """
WITH RECURSIVE programmed(n) AS (
    (SELECT epg_channel_name FROM epg_programs
     WHERE epg_source_id = $1 AND epg_channel_name > $2 ORDER BY epg_channel_name LIMIT 1)
    UNION ALL
    SELECT (SELECT p.epg_channel_name FROM epg_programs p
            WHERE p.epg_source_id = $1 AND p.epg_channel_name > programmed.n
            ORDER BY p.epg_channel_name LIMIT 1)
    FROM programmed WHERE programmed.n IS NOT NULL
),
page AS (
    SELECT n FROM (
        (SELECT n FROM programmed WHERE n IS NOT NULL LIMIT $3)
        UNION
        (SELECT xmltv_id FROM epg_guide_channels
         WHERE epg_source_id = $1 AND xmltv_id > $2 ORDER BY xmltv_id LIMIT $3)
        UNION
        (SELECT epg_channel_name FROM channels
         WHERE portal_id = $4 AND epg_source_name = $5 AND epg_channel_name > $2
         ORDER BY epg_channel_name LIMIT $3)
    ) AS ids ORDER BY n LIMIT $3
)
SELECT page.n AS xmltv_id,
       (SELECT g.display_names FROM epg_guide_channels g
        WHERE g.epg_source_id = $1 AND g.xmltv_id = page.n ORDER BY g.fetch_id DESC LIMIT 1) AS display_names,
       figures.programs, figures.first_start,
       (SELECT coalesce(p.end_at, p.start_at) FROM epg_programs p
        WHERE p.epg_source_id = $1 AND p.epg_channel_name = page.n
        ORDER BY p.start_at DESC LIMIT 1) AS last_end
FROM page
CROSS JOIN LATERAL (
    SELECT count(*) AS programs, min(p.start_at) AS first_start FROM epg_programs p
    WHERE p.epg_source_id = $1 AND p.epg_channel_name = page.n
) AS figures
ORDER BY page.n
"""
_LINKED = """
SELECT id, name, title, epg_channel_name FROM channels
WHERE portal_id = $1 AND epg_source_name = $2 AND epg_channel_name = ANY($3::text[])
ORDER BY name
"""
_SOURCE_NAME = "SELECT id, name FROM epg_sources WHERE portal_id = $1 AND id = $2"
_CHANNEL_PROGRAMS = _PROGRAM_COLUMNS + "AND epg_channel_name = $8 ORDER BY start_at, id LIMIT $7"


def fetch_out(row: asyncpg.Record) -> EpgFetch | None:
    """The fetch record in the ``f_*`` columns of ``row`` (``None`` when there is none)."""
    if row["f_id"] is None:
        return None
    return EpgFetch(
        epgFetchId=text_id(row["f_id"]),
        epgSourceId=text_id(row["f_epg_source_id"]),
        created_at=iso(row["f_created_at"]),
        fetched_at=iso(row["f_fetched_at"]) if row["f_fetched_at"] is not None else None,
        job_id=opt_text_id(row["f_job_id"]),
        status=row["f_status"],
        message=row["f_message"],
        channels=row["f_channels"],
        foundPrograms=row["f_found_programs"],
        importedPrograms=row["f_imported_programs"],
        deletedPrograms=row["f_deleted_programs"],
        fetchDuration=row["f_fetch_duration"],
        importDuration=row["f_import_duration"],
        progress=row["f_progress"] if row["f_status"] == "pending" else None,
    )


def source_out(row: asyncpg.Record) -> EpgSource:
    return EpgSource(
        epgSourceId=text_id(row["id"]),
        portalId=text_id(row["portal_id"]),
        name=row["name"],
        url=row["url"],
        period=row["period"],
        last_fetch_result=fetch_out(row),
        createdAt=iso(row["created_at"]),
        updatedAt=iso(row["updated_at"]),
    )


async def load_source(conn: asyncpg.Connection, portal_id: int, source_id: int) -> EpgSource:
    return source_out(await fetch_owned(conn, _GET, portal_id, source_id, "id"))


# Actions: what the JSON handlers below and the console call.


async def list_sources(services: Services, actor: Principal, query: PageQuery) -> EpgSourcePage:
    """The portal's EPG sources with the result of each one's last fetch."""
    rows, cursor = await id_page(services, actor.portal_id, "epgSources", _LIST, query)
    return EpgSourcePage(epgSources=[source_out(r) for r in rows], next=cursor)


async def get_source(services: Services, actor: Principal, source_id: int) -> EpgSource:
    async with services.db.acquire() as conn:
        return await load_source(conn, actor.portal_id, source_id)


async def create_source(services: Services, actor: Principal, body: EpgSourceCreate) -> EpgSource:
    """Create an EPG source; the first fetch starts with ``POST /epg-sources/{id}/update``.

    Channels that already name it (``epgSourceName``) are linked from now on.
    """
    actor.require("content")
    _check_url(body.url)
    source_id = ids.new_id()
    async with services.db.acquire() as conn, conn.transaction():
        try:
            await conn.execute(_INSERT, source_id, actor.portal_id, body.name, body.url, body.period)
        except asyncpg.UniqueViolationError:
            raise name_taken() from None
        payload = {
            "epgSourceId": text_id(source_id),
            "name": body.name,
            "url": body.url,
            "period": body.period,
        }
        await operations.record(conn, actor.portal_id, "createEpgSource", actor.actor, payload=payload)
        return await load_source(conn, actor.portal_id, source_id)


async def update_source(
    services: Services, actor: Principal, source_id: int, body: EpgSourceUpdate
) -> EpgSource:
    """Change name, URL or period (no fetch starts); a new name follows into channels."""
    actor.require("content")
    async with services.db.acquire() as conn, conn.transaction():
        row = await fetch_owned(conn, _LOCK, actor.portal_id, source_id, "id")
        check_echo(body, {"epgSourceId": text_id(row["id"]), "portalId": text_id(row["portal_id"])}, {})
        name = row["name"] if body.name is UNSET else body.name
        url = row["url"] if body.url is UNSET else body.url
        period = row["period"] if body.period is UNSET else body.period
        _check_url(url)
        try:
            await conn.execute(_UPDATE, actor.portal_id, source_id, name, url, period)
        except asyncpg.UniqueViolationError:
            raise name_taken() from None
        if name != row["name"]:
            await conn.execute(_RENAME_LINKS, actor.portal_id, row["name"], name)
        payload = {
            "epgSourceId": text_id(source_id),
            "name": name,
            "previousName": row["name"],
            "url": url,
            "period": period,
        }
        await operations.record(conn, actor.portal_id, "updateEpgSource", actor.actor, payload=payload)
        return await load_source(conn, actor.portal_id, source_id)


async def delete_source(services: Services, actor: Principal, source_id: int) -> None:
    """Delete a source, its programmes and fetch history; channels naming it lose the link."""
    actor.require("content")
    async with services.db.acquire() as conn, conn.transaction():
        row = await fetch_owned(conn, _LOCK, actor.portal_id, source_id, "id")
        await conn.execute(_DELETE, actor.portal_id, source_id)
        unlinked = await conn.execute(_CLEAR_LINKS, actor.portal_id, row["name"])
        payload = {
            "epgSourceId": text_id(source_id),
            "name": row["name"],
            "unlinkedChannels": int(unlinked.split()[-1]),
        }
        await operations.record(conn, actor.portal_id, "deleteEpgSource", actor.actor, payload=payload)


async def update_now(services: Services, actor: Principal, source_id: int) -> EpgJob:
    """Queue a fetch now; while one is queued or running, its job id is returned again."""
    actor.require("content")
    async with services.db.acquire() as conn, conn.transaction():
        await fetch_owned(conn, _SHARE, actor.portal_id, source_id, "id")
        job_id = await jobs.enqueue(conn, JOB_KIND, actor.portal_id, source_id)
    return EpgJob(jobId=text_id(job_id))


async def list_fetches(services: Services, actor: Principal, query: EpgFetchQuery) -> EpgFetchPage:
    """Fetch history, newest first, pending fetches included; filter by source or status."""
    after = services.cursors.decode("epgFetches", query.cursor, (int,))
    async with services.db.acquire() as conn:
        sources = await _owned_sources(conn, actor.portal_id, query.epgSourceId)
        rows = await conn.fetch(
            _FETCHES, actor.portal_id, after[0] if after else LAST_ID, sources, query.status, query.limit + 1
        )
    rows, cursor = services.cursors.page(rows, query.limit, "epgFetches", lambda r: (r["f_id"],))
    return EpgFetchPage(epgFetches=[f for f in map(fetch_out, rows) if f is not None], next=cursor)


async def list_programs(
    services: Services, actor: Principal, source_id: int, query: EpgProgramQuery
) -> EpgProgramPage:
    """A source's programmes ordered by start; ``date`` is a UTC day."""
    low, high = _day(query.date)
    start, last_id = _program_cursor(services.cursors.decode("programs", query.cursor, (int, int)), low)
    args: list[Any] = [source_id, actor.portal_id, start, last_id, low, high, query.limit + 1]
    async with services.db.acquire() as conn:
        await fetch_owned(conn, _EXISTS, actor.portal_id, source_id, "id")
        if query.epgChannelName is None:
            rows = await conn.fetch(_PROGRAMS, *args)
        else:
            rows = await conn.fetch(_CHANNEL_PROGRAMS, *args, query.epgChannelName)
    rows, cursor = services.cursors.page(rows, query.limit, "programs", _program_key)
    return EpgProgramPage(programs=[program_out(r) for r in rows], next=cursor)


async def list_guide_channels(
    services: Services, actor: Principal, source_id: int, query: PageQuery
) -> EpgGuideChannelPage:
    """The channels of a source's current guide by XMLTV id, with the portal's links to each."""
    after = services.cursors.decode("epgGuideChannels", query.cursor, (str,))
    async with services.db.acquire() as conn:
        source = await fetch_owned(conn, _SOURCE_NAME, actor.portal_id, source_id, "id")
        args = (after[0] if after else "", query.limit + 1, actor.portal_id, source["name"])
        rows = await conn.fetch(_GUIDE_CHANNELS, source_id, *args)
        page, cursor = services.cursors.page(
            rows, query.limit, "epgGuideChannels", lambda r: (r["xmltv_id"],)
        )
        names = [row["xmltv_id"] for row in page]
        linked = await conn.fetch(_LINKED, actor.portal_id, source["name"], names)
    return EpgGuideChannelPage(channels=_guide_channels(page, linked), next=cursor)


# The JSON API: decode, call the action, encode.


@api.get("/epg-sources", response=EpgSourcePage)
async def handle_list_sources(call: Call[None, PageQuery]) -> EpgSourcePage:
    """The portal's EPG sources with the result of each one's last fetch."""
    return await list_sources(call.services, call.caller, call.query)


@api.get("/epg-sources/{id}", response=EpgSource)
async def handle_get_source(call: Call[None, None]) -> EpgSource:
    """One EPG source."""
    return await get_source(call.services, call.caller, call.path_id())


@api.post("/epg-sources", response=EpgSource, permission="content")
async def handle_create_source(call: Call[EpgSourceCreate, None]) -> EpgSource:
    """Create an EPG source; the first fetch starts with ``POST /epg-sources/{id}/update``."""
    return await create_source(call.services, call.caller, call.body)


@api.put("/epg-sources/{id}", response=EpgSource, permission="content")
async def handle_update_source(call: Call[EpgSourceUpdate, None]) -> EpgSource:
    """Change name, URL or period (no fetch starts); a new name follows into channels."""
    return await update_source(call.services, call.caller, call.path_id(), call.body)


@api.delete("/epg-sources/{id}", permission="content")
async def handle_delete_source(call: Call[None, None]) -> None:
    """Delete a source, its programmes and fetch history; channels naming it lose the link."""
    await delete_source(call.services, call.caller, call.path_id())


@api.post("/epg-sources/{id}/update", response=EpgJob, permission="content")
async def handle_update_now(call: Call[None, None]) -> EpgJob:
    """Queue a fetch now; while one is queued or running, its job id is returned again."""
    return await update_now(call.services, call.caller, call.path_id())


@api.get("/epg-fetches", response=EpgFetchPage)
async def handle_list_fetches(call: Call[None, EpgFetchQuery]) -> EpgFetchPage:
    """Fetch history, newest first, pending fetches included; filter by source or status."""
    return await list_fetches(call.services, call.caller, call.query)


@api.get("/epg-sources/{id}/programs", response=EpgProgramPage)
async def handle_list_programs(call: Call[None, EpgProgramQuery]) -> EpgProgramPage:
    """A source's programmes ordered by start; ``date`` is a UTC day."""
    return await list_programs(call.services, call.caller, call.path_id(), call.query)


@api.get("/epg-sources/{id}/channels", response=EpgGuideChannelPage)
async def handle_list_guide_channels(call: Call[None, PageQuery]) -> EpgGuideChannelPage:
    """The channels of a source's current guide, by XMLTV id: names, programmes, linked channels."""
    return await list_guide_channels(call.services, call.caller, call.path_id(), call.query)


def _guide_channels(
    page: Sequence[asyncpg.Record], linked: Sequence[asyncpg.Record]
) -> list[EpgGuideChannel]:
    links: dict[str, list[LinkedChannel]] = {}
    for row in linked:
        links.setdefault(row["epg_channel_name"], []).append(
            LinkedChannel(channelId=text_id(row["id"]), name=row["name"], title=row["title"])
        )
    return [_guide_channel(row, links.get(row["xmltv_id"], [])) for row in page]


def _guide_channel(row: asyncpg.Record, links: list[LinkedChannel]) -> EpgGuideChannel:
    names = list(row["display_names"] or [])
    return EpgGuideChannel(
        epgChannelName=row["xmltv_id"],
        displayName=names[0] if names else None,
        displayNames=names,
        programs=row["programs"],
        firstStart=iso(row["first_start"]) if row["first_start"] is not None else None,
        lastEnd=iso(row["last_end"]) if row["last_end"] is not None else None,
        inGuide=row["display_names"] is not None or row["programs"] > 0,
        linkedChannels=links,
    )


def program_out(row: asyncpg.Record) -> EpgProgram:
    start: datetime = row["start_at"]
    return EpgProgram(
        programId=text_id(row["id"]),
        epgSourceId=text_id(row["epg_source_id"]),
        epgChannelName=row["epg_channel_name"],
        date=start.astimezone(UTC).date().isoformat(),
        start=iso(start),
        end=iso(row["end_at"]) if row["end_at"] is not None else None,
        title=row["title"],
        language=row["language"],
        description=row["description"],
        genre=row["genre"],
        rating=row["rating"],
    )


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        ok = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok or any(c.isspace() for c in url):
        raise InvalidInput(f"url must be an http:// or https:// URL, got {url!r}", field="url")


async def _owned_sources(
    conn: asyncpg.Connection, portal_id: int, sent: list[str] | None
) -> list[int] | None:
    """The ``epgSourceId`` filter as ids of this portal's sources (404 for any other)."""
    if sent is None:
        return None
    found = []
    for text in sent:
        row = await fetch_owned(conn, _EXISTS, portal_id, decode_id(text, "epgSourceId"), "epgSourceId")
        found.append(row["id"])
    return found


def _day(text: str | None) -> tuple[datetime, datetime]:
    """The UTC day ``YYYY-MM-DD`` as a half-open range (everything when absent)."""
    if text is None:
        return _FIRST_DAY, _LAST_DAY
    try:
        if not _DATE_RE.match(text):
            raise ValueError(text)
        day = date.fromisoformat(text)
        low = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return low, low + timedelta(days=1)
    except (ValueError, OverflowError):
        raise InvalidInput(f"date must be a day written YYYY-MM-DD, got {text!r}", field="date") from None


def _program_cursor(after: tuple[Any, ...] | None, low: datetime) -> tuple[datetime, int]:
    """Where a page of programmes starts: after the cursor's (start, id), else at ``low``."""
    if after is None:
        return low, FIRST_ID
    try:
        return _EPOCH + timedelta(microseconds=after[0]), after[1]
    except OverflowError:
        raise InvalidInput("cursor is not a cursor this list issued", field="cursor") from None


def _program_key(row: asyncpg.Record) -> tuple[int, int]:
    """A programme's place in the list: its start (microseconds since 1970) and id."""
    return _micros(row["start_at"]), row["id"]


def _micros(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(microseconds=1)

"""``/channels``: the portal's TV channels, their logos and EPG links (docs/api.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import asyncpg
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from catena import entitlements, ids, operations
from catena.errors import Conflict, NotFound

from . import _logos, _search
from ._content import FIRST_ID, NamedPageQuery, check_echo, fetch_owned, name_taken
from .auth import authenticate_manager
from .principal import Principal
from .routing import Api, Call
from .schema import NO_NUL, NO_NUL_TEXT, Name, Request, Response, Text200, TextId, Timestamp, iso, text_id
from .services import Services

api = Api("Channels", auth=authenticate_manager)

EpgChannelName = Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL, description=NO_NUL_TEXT)]
LogoUri = Annotated[str, Meta(description="data:image/png;base64,... or data:image/jpeg;base64,...")]
ChannelNumber = Annotated[
    int, Meta(ge=1, le=99_999, description="the channel's number in lists and players (1-99,999)")
]
# Unnumbered channels sort after every numbered one (migration 0600's sort_number).
UNNUMBERED = 100_000
# Where the channel's guide stands: no link; a link to a source that does not
# exist (yet); a source without programmes for this channel; programmes.
EpgStatus = Literal["unlinked", "no_source", "no_programs", "ok"]
# Mounted under the API base by admin_api.app; the logo lives beside the channel.
LOGO_URL = "/tv-management/api/v1/channels/{}/logo"


class Channel(Response):
    channelId: TextId
    portalId: TextId
    name: str
    title: str
    number: int | None
    logoUrl: str | None
    epgSourceName: str | None
    epgChannelName: str | None
    epgStatus: EpgStatus
    packages: list[str]
    createdAt: Timestamp
    updatedAt: Timestamp


class ChannelPage(Response):
    channels: list[Channel]
    next: str | None = None


class ChannelCreate(Request):
    name: Name
    title: Text200
    number: ChannelNumber | None = None
    logo: LogoUri | None = None
    epgSourceName: Name | None = None
    epgChannelName: EpgChannelName | None = None


class ChannelUpdate(Request):
    """Absent fields keep their value; ``null`` clears the logo or the EPG link.

    The read-only fields of the channel object may be sent back unchanged.
    """

    name: str | UnsetType = UNSET
    title: Text200 | UnsetType = UNSET
    number: ChannelNumber | UnsetType | None = UNSET
    logo: LogoUri | UnsetType | None = UNSET
    epgSourceName: Name | UnsetType | None = UNSET
    epgChannelName: EpgChannelName | UnsetType | None = UNSET
    channelId: str | UnsetType = UNSET
    portalId: str | UnsetType = UNSET
    packages: list[str] | UnsetType = UNSET
    logoUrl: str | UnsetType | None = UNSET
    epgStatus: str | UnsetType = UNSET
    createdAt: str | UnsetType = UNSET
    updatedAt: str | UnsetType = UNSET


_SELECT = """
SELECT c.id, c.portal_id, c.name, c.title, c.number, c.sort_number, c.epg_source_name, c.epg_channel_name,
       c.created_at, c.updated_at,
       coalesce((SELECT true FROM channel_logos l WHERE l.channel_id = c.id), false) AS has_logo,
       ARRAY(SELECT p.name FROM channel_packages cp JOIN packages p ON p.id = cp.package_id
             WHERE cp.channel_id = c.id ORDER BY p.name) AS packages,
       CASE WHEN c.epg_source_name IS NULL OR c.epg_channel_name IS NULL THEN 'unlinked'
            ELSE coalesce((SELECT CASE WHEN (SELECT true FROM epg_programs g
                                             WHERE g.epg_source_id = s.id
                                               AND g.epg_channel_name = c.epg_channel_name LIMIT 1)
                                       THEN 'ok' ELSE 'no_programs' END
                           FROM epg_sources s WHERE s.portal_id = c.portal_id AND s.name = c.epg_source_name),
                          'no_source')
       END AS epg_status
FROM channels c
"""
# One statement per page: the package names come from a subquery per row that
# walks the (channel_id) index, never a round trip per channel.  has_logo and
# epg_status are scalar subqueries rather than EXISTS because PostgreSQL's generic
# plan for EXISTS hashes the whole channel_logos table on every execution
# (benchmarks/bench_content_api.py); epg_status costs two index probes per linked
# channel (the source by name, then one programme of the channel).
# Lists are keyed by (sort_number, id) and walk the channels_list index.  The
# cursor's name changed with the key (it was "channels", keyed by id alone), so a
# cursor issued before numbers existed is a 400 rather than a wrong position.
_CURSOR = "channelsByNumber"
_AFTER = "(c.sort_number, c.id) > ($2, $3)"
_ORDER = "ORDER BY c.sort_number, c.id"
_LIST = _SELECT + f"WHERE c.portal_id = $1 AND {_AFTER} {_ORDER} LIMIT $4"
_LIST_NAMED = (
    _SELECT
    + f"""WHERE c.portal_id = $1 AND {_AFTER} AND c.name = ANY($5::text[])
  AND ($6::text IS NULL OR strpos(c.search, lower($6)) > 0)
{_ORDER} LIMIT $4"""
)
# ?q= (admin_api._search): the ids of a page's matches, then the page's columns.
_SEARCH = _search.SearchSql(
    count=_search.count("channels"),
    walk=_SELECT
    + """JOIN (SELECT w.id FROM (SELECT id, sort_number, search FROM channels
                        WHERE portal_id = $1 AND (sort_number, id) > ($2, $3)
                        ORDER BY sort_number, id LIMIT $6) w
      WHERE strpos(w.search, (SELECT lower($4))) > 0 ORDER BY w.sort_number, w.id LIMIT $5) m
  ON m.id = c.id
"""
    + _ORDER,
    edge="""SELECT sort_number, id FROM channels WHERE portal_id = $1 AND (sort_number, id) > ($2, $3)
ORDER BY sort_number, id OFFSET $4 - 1 LIMIT 1""",
    indexed=_search.candidates("channels", "portal_id, sort_number, id, search", "$4")
    + _SELECT
    + """JOIN (SELECT id FROM candidates
      WHERE portal_id = $1 AND (sort_number, id) > ($2, $3) AND strpos(search, (SELECT lower($4))) > 0
      ORDER BY sort_number, id LIMIT $5) m
  ON m.id = c.id
"""
    + _ORDER,
)
_GET = _SELECT + "WHERE c.portal_id = $1 AND c.id = $2"
_LOCK = "SELECT * FROM channels WHERE portal_id = $1 AND id = $2 FOR UPDATE"
_INSERT = """
INSERT INTO channels (id, portal_id, name, title, number, epg_source_name, epg_channel_name)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""
_UPDATE = """
UPDATE channels SET title = $3, number = $4, epg_source_name = $5, epg_channel_name = $6, updated_at = now()
WHERE portal_id = $1 AND id = $2
"""
_NUMBER_HOLDER = "SELECT name FROM channels WHERE portal_id = $1 AND number = $2 AND id <> $3"
_SAVE_LOGO = """
INSERT INTO channel_logos (channel_id, content_type, data, etag) VALUES ($1, $2, $3, $4)
ON CONFLICT (channel_id) DO UPDATE
SET content_type = excluded.content_type, data = excluded.data, etag = excluded.etag, updated_at = now()
"""
_DROP_LOGO = "DELETE FROM channel_logos WHERE channel_id = $1"
_GET_LOGO = """
SELECT l.content_type, l.data, l.etag FROM channel_logos l JOIN channels c ON c.id = l.channel_id
WHERE c.portal_id = $1 AND c.id = $2
"""
_DELETE = "DELETE FROM channels WHERE portal_id = $1 AND id = $2"
# A source of that name, if there is one yet.  FOR SHARE keeps it from being
# deleted or renamed until this change commits, so the rename or delete then sees
# (and carries along, or unlinks) this channel's new link.
_EPG_SOURCE = "SELECT id FROM epg_sources WHERE portal_id = $1 AND name = $2 FOR SHARE"


def channel_out(row: asyncpg.Record) -> Channel:
    channel_id = text_id(row["id"])
    return Channel(
        channelId=channel_id,
        portalId=text_id(row["portal_id"]),
        name=row["name"],
        title=row["title"],
        number=row["number"],
        logoUrl=LOGO_URL.format(channel_id) if row["has_logo"] else None,
        epgSourceName=row["epg_source_name"],
        epgChannelName=row["epg_channel_name"],
        epgStatus=row["epg_status"],
        packages=list(row["packages"]),
        createdAt=iso(row["created_at"]),
        updatedAt=iso(row["updated_at"]),
    )


async def load_channel(conn: asyncpg.Connection, portal_id: int, channel_id: int) -> Channel:
    return channel_out(await fetch_owned(conn, _GET, portal_id, channel_id, "id"))


# Actions: what the JSON handlers below and the console call.


async def list_channels(services: Services, actor: Principal, query: NamedPageQuery) -> ChannelPage:
    """Numbered channels by number, then the rest in creation order; ``name``, ``q`` filter."""
    after = services.cursors.decode(_CURSOR, query.cursor, (int, int)) or (0, FIRST_ID)
    async with services.db.acquire() as conn:
        found = await _page(conn, actor.portal_id, after, query)
    rows, cursor = services.cursors.page(found, query.limit, _CURSOR, _key)
    return ChannelPage(channels=[channel_out(r) for r in rows], next=cursor)


async def _page(
    conn: asyncpg.Connection, portal_id: int, after: tuple[Any, ...], query: NamedPageQuery
) -> list[asyncpg.Record]:
    want = query.limit + 1
    if query.name is not None:
        return list(await conn.fetch(_LIST_NAMED, portal_id, *after, want, query.name, query.q or None))
    if query.q:
        return await _search.search(conn, _SEARCH, portal_id, after, query.q, want)
    return list(await conn.fetch(_LIST, portal_id, *after, want))


def _key(row: asyncpg.Record) -> tuple[int, int]:
    return row["sort_number"], row["id"]


async def get_channel(services: Services, actor: Principal, channel_id: int) -> Channel:
    async with services.db.acquire() as conn:
        return await load_channel(conn, actor.portal_id, channel_id)


async def get_logo(services: Services, actor: Principal, channel_id: int) -> _logos.Logo:
    """The channel's stored logo; 404 naming ``id`` when it has none."""
    async with services.db.acquire() as conn:
        row = await conn.fetchrow(_GET_LOGO, actor.portal_id, channel_id)
    if row is None:
        raise NotFound("this channel has no logo (or there is no such channel)", field="id")
    return _logos.Logo(row["content_type"], row["data"], row["etag"])


async def create_channel(services: Services, actor: Principal, body: ChannelCreate) -> Channel:
    """Create a channel; its name (and number, when given) must be new to the portal."""
    actor.require("content")
    logo = _logos.parse(body.logo) if body.logo is not None else None
    channel_id = ids.new_id()
    async with services.db.acquire() as conn, conn.transaction():
        await _check_number(conn, actor.portal_id, channel_id, body.number)
        await _lock_epg_source(conn, actor.portal_id, body.epgSourceName)
        try:
            await conn.execute(
                _INSERT,
                channel_id,
                actor.portal_id,
                body.name,
                body.title,
                body.number,
                body.epgSourceName,
                body.epgChannelName,
            )
        except asyncpg.UniqueViolationError as exc:
            raise _taken(exc, body.number) from None
        if logo is not None:
            await _save_logo(conn, channel_id, logo)
        payload: dict[str, Any] = {"channelId": text_id(channel_id), "name": body.name, "title": body.title}
        if body.number is not None:
            payload["number"] = body.number
        await operations.record(conn, actor.portal_id, "createChannel", actor.actor, payload=payload)
        return await load_channel(conn, actor.portal_id, channel_id)


async def update_channel(
    services: Services, actor: Principal, channel_id: int, body: ChannelUpdate
) -> Channel:
    """Update title, number, logo and EPG link; the name cannot change."""
    actor.require("content")
    logo = _logos.parse(body.logo) if isinstance(body.logo, str) else body.logo
    async with services.db.acquire() as conn, conn.transaction():
        await fetch_owned(conn, _LOCK, actor.portal_id, channel_id, "id")
        current = await load_channel(conn, actor.portal_id, channel_id)
        _check_read_only(body, current)
        new = _merged(body, current)
        if new.number != current.number:
            await _check_number(conn, actor.portal_id, channel_id, new.number)
        if new.source != current.epgSourceName:
            await _lock_epg_source(conn, actor.portal_id, new.source)
        try:
            await conn.execute(
                _UPDATE, actor.portal_id, channel_id, new.title, new.number, new.source, new.epg_channel
            )
        except asyncpg.UniqueViolationError as exc:
            raise _taken(exc, new.number) from None
        if isinstance(logo, _logos.Logo):
            await _save_logo(conn, channel_id, logo)
        elif logo is None:
            await conn.execute(_DROP_LOGO, channel_id)
        payload = {"channelId": text_id(channel_id), "name": current.name, "fields": _sent(body)}
        await operations.record(conn, actor.portal_id, "updateChannel", actor.actor, payload=payload)
        return await load_channel(conn, actor.portal_id, channel_id)


async def delete_channel(services: Services, actor: Principal, channel_id: int) -> None:
    """Delete a channel; it leaves every package it was in."""
    actor.require("content")
    async with services.db.acquire() as conn, conn.transaction():
        await fetch_owned(conn, _LOCK, actor.portal_id, channel_id, "id")
        current = await load_channel(conn, actor.portal_id, channel_id)
        await conn.execute(_DELETE, actor.portal_id, channel_id)
        payload = {"channelId": current.channelId, "name": current.name, "packageNames": current.packages}
        await operations.record(conn, actor.portal_id, "deleteChannel", actor.actor, payload=payload)
        await entitlements.changed(conn, actor.portal_id, "channel", [channel_id])


# The JSON API: decode, call the action, encode.


@api.get("/channels", response=ChannelPage)
async def handle_list_channels(call: Call[None, NamedPageQuery]) -> ChannelPage:
    """The portal's channels: numbered ones by number, then the rest in creation order.

    ``name`` (repeatable) keeps those names; ``q`` keeps channels whose name or title
    contains it, ignoring case.
    """
    return await list_channels(call.services, call.caller, call.query)


@api.get("/channels/{id}", response=Channel)
async def handle_get_channel(call: Call[None, None]) -> Channel:
    """One channel."""
    return await get_channel(call.services, call.caller, call.path_id())


@api.get(
    "/channels/{id}/logo",
    produces={200: ("The logo image with an ETag", "image/*"), 304: ("Unchanged since If-None-Match", "")},
)
async def handle_get_logo(call: Call[None, None]) -> web.StreamResponse:
    """The channel's logo as an image; ``304`` when ``If-None-Match`` names the current one."""
    logo = await get_logo(call.services, call.caller, call.path_id())
    return _logos.serve(call.request, logo.content_type, logo.data, logo.etag)


@api.post("/channels", response=Channel, permission="content", max_body=_logos.MAX_REQUEST_BYTES)
async def handle_create_channel(call: Call[ChannelCreate, None]) -> Channel:
    """Create a channel; its name must be new to the portal."""
    return await create_channel(call.services, call.caller, call.body)


@api.put("/channels/{id}", response=Channel, permission="content", max_body=_logos.MAX_REQUEST_BYTES)
async def handle_update_channel(call: Call[ChannelUpdate, None]) -> Channel:
    """Update title, logo and EPG link; the name cannot change."""
    return await update_channel(call.services, call.caller, call.path_id(), call.body)


@api.delete("/channels/{id}", permission="content")
async def handle_delete_channel(call: Call[None, None]) -> None:
    """Delete a channel; it leaves every package it was in."""
    await delete_channel(call.services, call.caller, call.path_id())


async def _lock_epg_source(conn: asyncpg.Connection, portal_id: int, name: str | None) -> None:
    """Hold the named source, if it exists, until commit.

    A name no source has yet is accepted (the manual's §3.1 links channels before
    §3.3 creates the source): the channel shows no programmes until a source of
    that name exists, and then links by itself, because every reader joins by name.
    """
    if name is not None:
        await conn.fetchval(_EPG_SOURCE, portal_id, name)


async def _check_number(
    conn: asyncpg.Connection, portal_id: int, channel_id: int, number: int | None
) -> None:
    """409 naming ``number`` when another channel of the portal has it (the index has the last word)."""
    if number is None:
        return
    holder = await conn.fetchval(_NUMBER_HOLDER, portal_id, number, channel_id)
    if holder is not None:
        raise _number_taken(number, holder)


def _number_taken(number: int | None, holder: str | None = None) -> Conflict:
    who = f" by channel {holder!r}" if holder else ""
    return Conflict(f"number {number} is already used{who}", field="number", code="number_taken")


def _taken(exc: asyncpg.UniqueViolationError, number: int | None) -> Conflict:
    if exc.constraint_name == "channels_number":
        return _number_taken(number)
    return name_taken()


async def _save_logo(conn: asyncpg.Connection, channel_id: int, logo: _logos.Logo) -> None:
    await conn.execute(_SAVE_LOGO, channel_id, logo.content_type, logo.data, logo.etag)


def _check_read_only(body: ChannelUpdate, current: Channel) -> None:
    present = {
        "name": current.name,
        "channelId": current.channelId,
        "portalId": current.portalId,
        "packages": current.packages,
    }
    check_echo(
        body,
        present,
        {
            "name": "name cannot be changed after creation; create a new channel and delete this one",
            "packages": "packages is read-only; link channels with POST /channels-packages",
        },
    )


@dataclass(frozen=True, slots=True)
class _Fields:
    title: str
    number: int | None
    source: str | None
    epg_channel: str | None


def _merged(body: ChannelUpdate, current: Channel) -> _Fields:
    def pick(sent: Any, old: Any) -> Any:
        return old if sent is UNSET else sent

    return _Fields(
        title=pick(body.title, current.title),
        number=pick(body.number, current.number),
        source=pick(body.epgSourceName, current.epgSourceName),
        epg_channel=pick(body.epgChannelName, current.epgChannelName),
    )


def _sent(body: ChannelUpdate) -> list[str]:
    fields = ("title", "number", "logo", "epgSourceName", "epgChannelName")
    return [f for f in fields if getattr(body, f) is not UNSET]

"""``/channels``: the portal's TV channels, their logos and EPG links (docs/api.md)."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from catena import entitlements, ids, operations
from catena.errors import InvalidInput, NotFound

from . import _logos
from ._content import NamedPageQuery, check_echo, fetch_owned, name_taken, named_page
from .auth import authenticate_manager
from .principal import Principal
from .routing import Api, Call
from .schema import NO_NUL, NO_NUL_TEXT, Name, Request, Response, Text200, TextId, Timestamp, iso, text_id
from .services import Services

api = Api("Channels", auth=authenticate_manager)

EpgChannelName = Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL, description=NO_NUL_TEXT)]
LogoUri = Annotated[str, Meta(description="data:image/png;base64,... or data:image/jpeg;base64,...")]
# Mounted under the API base by admin_api.app; the logo lives beside the channel.
LOGO_URL = "/tv-management/api/v1/channels/{}/logo"


class Channel(Response):
    channelId: TextId
    portalId: TextId
    name: str
    title: str
    logoUrl: str | None
    epgSourceName: str | None
    epgChannelName: str | None
    packages: list[str]
    createdAt: Timestamp
    updatedAt: Timestamp


class ChannelPage(Response):
    channels: list[Channel]
    next: str | None = None


class ChannelCreate(Request):
    name: Name
    title: Text200
    logo: LogoUri | None = None
    epgSourceName: Name | None = None
    epgChannelName: EpgChannelName | None = None


class ChannelUpdate(Request):
    """Absent fields keep their value; ``null`` clears the logo or the EPG link.

    The read-only fields of the channel object may be sent back unchanged.
    """

    name: str | UnsetType = UNSET
    title: Text200 | UnsetType = UNSET
    logo: LogoUri | UnsetType | None = UNSET
    epgSourceName: Name | UnsetType | None = UNSET
    epgChannelName: EpgChannelName | UnsetType | None = UNSET
    channelId: str | UnsetType = UNSET
    portalId: str | UnsetType = UNSET
    packages: list[str] | UnsetType = UNSET
    logoUrl: str | UnsetType | None = UNSET
    createdAt: str | UnsetType = UNSET
    updatedAt: str | UnsetType = UNSET


_SELECT = """
SELECT c.id, c.portal_id, c.name, c.title, c.epg_source_name, c.epg_channel_name,
       c.created_at, c.updated_at,
       coalesce((SELECT true FROM channel_logos l WHERE l.channel_id = c.id), false) AS has_logo,
       ARRAY(SELECT p.name FROM channel_packages cp JOIN packages p ON p.id = cp.package_id
             WHERE cp.channel_id = c.id ORDER BY p.name) AS packages
FROM channels c
"""
# One statement per page: the package names come from a subquery per row that
# walks the (channel_id) index, never a round trip per channel.  has_logo is a
# scalar subquery rather than EXISTS because PostgreSQL's generic plan for EXISTS
# hashes the whole channel_logos table on every execution (benchmarks/bench_content_api.py).
_LIST = _SELECT + "WHERE c.portal_id = $1 AND c.id > $2 ORDER BY c.id LIMIT $3"
_LIST_NAMED = (
    _SELECT + "WHERE c.portal_id = $1 AND c.id > $2 AND c.name = ANY($4::text[]) ORDER BY c.id LIMIT $3"
)
_GET = _SELECT + "WHERE c.portal_id = $1 AND c.id = $2"
_LOCK = "SELECT * FROM channels WHERE portal_id = $1 AND id = $2 FOR UPDATE"
_INSERT = """
INSERT INTO channels (id, portal_id, name, title, epg_source_name, epg_channel_name)
VALUES ($1, $2, $3, $4, $5, $6)
"""
_UPDATE = """
UPDATE channels SET title = $3, epg_source_name = $4, epg_channel_name = $5, updated_at = now()
WHERE portal_id = $1 AND id = $2
"""
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
# FOR SHARE keeps the source from being deleted or renamed until this change commits.
_EPG_SOURCE = "SELECT id FROM epg_sources WHERE portal_id = $1 AND name = $2 FOR SHARE"


def channel_out(row: asyncpg.Record) -> Channel:
    channel_id = text_id(row["id"])
    return Channel(
        channelId=channel_id,
        portalId=text_id(row["portal_id"]),
        name=row["name"],
        title=row["title"],
        logoUrl=LOGO_URL.format(channel_id) if row["has_logo"] else None,
        epgSourceName=row["epg_source_name"],
        epgChannelName=row["epg_channel_name"],
        packages=list(row["packages"]),
        createdAt=iso(row["created_at"]),
        updatedAt=iso(row["updated_at"]),
    )


async def load_channel(conn: asyncpg.Connection, portal_id: int, channel_id: int) -> Channel:
    return channel_out(await fetch_owned(conn, _GET, portal_id, channel_id, "id"))


# Actions: what the JSON handlers below and the console call.


async def list_channels(services: Services, actor: Principal, query: NamedPageQuery) -> ChannelPage:
    """The portal's channels in creation order; ``name`` (repeatable) filters by name."""
    rows, cursor = await named_page(services, actor.portal_id, query, "channels", _LIST, _LIST_NAMED)
    return ChannelPage(channels=[channel_out(r) for r in rows], next=cursor)


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
    """Create a channel; its name must be new to the portal."""
    actor.require("content")
    logo = _logos.parse(body.logo) if body.logo is not None else None
    channel_id = ids.new_id()
    async with services.db.acquire() as conn, conn.transaction():
        await _require_epg_source(conn, actor.portal_id, body.epgSourceName)
        try:
            await conn.execute(
                _INSERT,
                channel_id,
                actor.portal_id,
                body.name,
                body.title,
                body.epgSourceName,
                body.epgChannelName,
            )
        except asyncpg.UniqueViolationError:
            raise name_taken() from None
        if logo is not None:
            await _save_logo(conn, channel_id, logo)
        payload = {"channelId": text_id(channel_id), "name": body.name, "title": body.title}
        await operations.record(conn, actor.portal_id, "createChannel", actor.actor, payload=payload)
        return await load_channel(conn, actor.portal_id, channel_id)


async def update_channel(
    services: Services, actor: Principal, channel_id: int, body: ChannelUpdate
) -> Channel:
    """Update title, logo and EPG link; the name cannot change."""
    actor.require("content")
    logo = _logos.parse(body.logo) if isinstance(body.logo, str) else body.logo
    async with services.db.acquire() as conn, conn.transaction():
        await fetch_owned(conn, _LOCK, actor.portal_id, channel_id, "id")
        current = await load_channel(conn, actor.portal_id, channel_id)
        _check_read_only(body, current)
        title, source, epg_channel = _merged(body, current)
        if source != current.epgSourceName:
            await _require_epg_source(conn, actor.portal_id, source)
        await conn.execute(_UPDATE, actor.portal_id, channel_id, title, source, epg_channel)
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
    """The portal's channels in creation order; ``name`` (repeatable) filters by name."""
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


async def _require_epg_source(conn: asyncpg.Connection, portal_id: int, name: str | None) -> None:
    if name is not None and await conn.fetchval(_EPG_SOURCE, portal_id, name) is None:
        raise InvalidInput(
            f"no EPG source named {name!r} in this portal; create it first", field="epgSourceName"
        )


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


def _merged(body: ChannelUpdate, current: Channel) -> tuple[str, str | None, str | None]:
    def pick(sent: Any, old: Any) -> Any:
        return old if sent is UNSET else sent

    return (
        pick(body.title, current.title),
        pick(body.epgSourceName, current.epgSourceName),
        pick(body.epgChannelName, current.epgChannelName),
    )


def _sent(body: ChannelUpdate) -> list[str]:
    return [f for f in ("title", "logo", "epgSourceName", "epgChannelName") if getattr(body, f) is not UNSET]

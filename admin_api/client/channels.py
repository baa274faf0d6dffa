"""The subscriber's channels with what is on now and next, a day's programmes, logos."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
import msgspec
from aiohttp import web

from catena.errors import InvalidInput, NotFound

from .. import _logos
from ..routing import Api, Call
from ..schema import Response, TextId, Timestamp, iso, text_id
from . import PREFIX, TAG, caching, catalog, urls
from .auth import Subscriber, authenticate_subscriber
from .forwarded import origin
from .portal import PortalQuery, resolve

api = Api(TAG, prefix=PREFIX, auth=authenticate_subscriber)

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Channel names as the Management API allows them (docs/api.md).
_NAME = re.compile(r"^[a-zA-Z0-9_-]{2,20}$")
# Logo URLs carry the image's version, so caches may keep an answer for a day.
LOGO_CACHE = "public, max-age=86400"


class ProgramOut(Response):
    programId: TextId
    title: str
    start: Timestamp
    end: Timestamp | None
    description: str | None
    genre: str | None
    rating: str | None
    language: str | None
    # Set for programmes that have ended within the portal's archive depth.
    archiveUrl: str | None


class ChannelOut(Response):
    channelId: TextId
    name: str
    title: str
    # The operator's channel number (shown by players); null when it has none.
    number: int | None
    # The package the channel comes with (the first by name when several do).
    group: str
    logo: str | None
    playbackUrl: str
    archiveDays: int
    current: ProgramOut | None
    next: ProgramOut | None


class ChannelList(Response):
    channels: list[ChannelOut]


class ProgramsQuery(msgspec.Struct, kw_only=True):
    date: str | None = None
    tz: str = "UTC"


class ProgramList(Response):
    channel: str
    date: str
    tz: str
    programs: list[ProgramOut]


class Archive:
    """Which programmes may be played from the archive now, and their URLs."""

    def __init__(self, subscriber: Subscriber, name: str, now: datetime) -> None:
        self.subscriber = subscriber
        self.name = name
        self.now = now
        self.oldest = now - timedelta(days=subscriber.settings.archiveDays)

    def url(self, program: catalog.Program) -> str | None:
        end = program.end
        if end is None or end > self.now or program.start < self.oldest:
            return None
        return urls.archive(self.subscriber.settings, self.name, self.subscriber.token, program.start, end)

    def out(self, program: catalog.Program | None) -> ProgramOut | None:
        if program is None:
            return None
        return ProgramOut(
            programId=text_id(program.id),
            title=program.title,
            start=iso(program.start),
            end=iso(program.end) if program.end is not None else None,
            description=program.description,
            genre=program.genre,
            rating=program.rating,
            language=program.language,
            archiveUrl=self.url(program),
        )


@api.get("/channels", response=ChannelList)
async def client_channels(call: Call[None, None]) -> ChannelList:
    """The subscriber's channels, each once, with the programme on now and the next one."""
    subscriber: Subscriber = call.subject
    now = datetime.now(UTC)
    async with call.db.acquire() as conn:
        found = await catalog.channels(conn, subscriber.id, subscriber.portal_id)
        keys = [c.guide for c in found if c.guide is not None]
        airing = await catalog.now_next(conn, keys, now) if keys else {}
    base = origin(call.request)
    return ChannelList(channels=[_channel_out(call, c, airing, base, now) for c in found])


def _channel_out(
    call: Call[Any, Any],
    channel: catalog.Channel,
    airing: dict[catalog.GuideKey, tuple[catalog.Program | None, catalog.Program | None]],
    base: str,
    now: datetime,
) -> ChannelOut:
    subscriber: Subscriber = call.subject
    archive = Archive(subscriber, channel.name, now)
    current, upcoming = airing.get(channel.guide, (None, None)) if channel.guide else (None, None)
    return ChannelOut(
        channelId=text_id(channel.id),
        name=channel.name,
        title=channel.title,
        number=channel.number,
        group=channel.group,
        logo=urls.logo(base, subscriber.portal_id, channel),
        playbackUrl=urls.live(subscriber.settings, channel.name, subscriber.token),
        archiveDays=subscriber.settings.archiveDays,
        current=archive.out(current),
        next=archive.out(upcoming),
    )


@api.get("/channels/{name}/programs", response=ProgramList)
async def client_programs(call: Call[None, ProgramsQuery]) -> ProgramList:
    """A day's programmes of one channel; past ones within the archive depth carry archiveUrl."""
    subscriber: Subscriber = call.subject
    query: ProgramsQuery = call.query
    zone = _zone(query.tz)
    day = _day(query.date, zone)
    start = datetime.combine(day, datetime.min.time(), zone)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), zone)
    name = _channel_name(call)
    async with call.db.acquire() as conn:
        channel = await _entitled(conn, subscriber, name)
        found = await catalog.programs(conn, channel.guide, start, end) if channel.guide else []
    archive = Archive(subscriber, channel.name, datetime.now(UTC))
    programs = [out for out in map(archive.out, found) if out is not None]
    return ProgramList(channel=channel.name, date=day.isoformat(), tz=query.tz, programs=programs)


def _channel_name(call: Call[Any, Any]) -> str:
    """The ``{name}`` of the path; one that no channel can have names nothing (404)."""
    name = call.request.match_info["name"]
    if not _NAME.match(name):
        raise NotFound(f"no channel is called {name[:40]!r}", field="name")
    return name


async def _entitled(conn: asyncpg.Connection, subscriber: Subscriber, name: str) -> catalog.Channel:
    found = await catalog.channels(conn, subscriber.id, subscriber.portal_id, name)
    if not found:
        raise NotFound(f"no channel {name!r} among this subscriber's channels", field="name")
    return found[0]


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            f"tz must be an IANA time zone such as Europe/Moscow, got {name!r}", field="tz"
        ) from None


def _day(text: str | None, zone: ZoneInfo) -> date:
    if text is None:
        return datetime.now(zone).date()
    try:
        if _DATE.match(text):
            return date.fromisoformat(text)
    except ValueError:
        pass
    raise InvalidInput(f"date must be a calendar date as YYYY-MM-DD, got {text!r}", field="date")


@api.get(
    "/channels/{name}/logo",
    auth=None,
    produces={200: ("The logo image (PNG or JPEG)", "image/*"), 304: ("Not modified", "image/*")},
)
async def client_channel_logo(call: Call[None, PortalQuery]) -> web.StreamResponse:
    """A channel's logo, for apps and players (no token; portal by Host or portalId)."""
    name = _channel_name(call)
    async with call.db.acquire() as conn:
        portal = await resolve(conn, call, call.query.portalId)
        row = await conn.fetchrow(_LOGO, portal.id, name)
    if row is None:
        raise NotFound(f"channel {name!r} has no logo", field="name")
    etag = caching.fingerprint([row["etag"]])
    return _logos.serve(call.request, row["content_type"], row["data"], etag, LOGO_CACHE)


_LOGO = """
SELECT l.content_type, l.data, l.etag FROM channel_logos l JOIN channels c ON c.id = l.channel_id
WHERE c.portal_id = $1 AND c.name = $2
"""

"""``playlist.m3u8`` and ``epg.xml``: the subscriber's channels for third-party players.

The playlist is an extended M3U whose ``tvg-id`` values are the ``channel`` ids
of the XMLTV guide, so a player pairs them without configuration; with an
archive, ``catchup="flussonic"`` tells the player to build archive URLs the
Flussonic way from each stream URL.  The guide is streamed in batches of
channels, so neither memory nor a database connection is held for the length
of a slow download.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote

import msgspec
from aiohttp import web
from msgspec import Meta

from catena import ids

from ..routing import Api, Call
from . import PREFIX, TAG, caching, catalog, urls, xmltv
from .auth import Subscriber, authenticate_subscriber
from .forwarded import origin

api = Api(TAG, prefix=PREFIX, auth=authenticate_subscriber)

PLAYLIST_CACHE = "private, max-age=300"
GUIDE_CACHE = "private, max-age=3600"
GUIDE_DAYS, GUIDE_MAX_DAYS = 3, 14
# Channels whose programmes are read with one query while the guide streams.
GUIDE_BATCH = 50


class GuideQuery(msgspec.Struct, kw_only=True):
    # Days of programmes ahead of now.
    days: Annotated[int, Meta(ge=1, le=GUIDE_MAX_DAYS)] = GUIDE_DAYS
    # Days back; by default the portal's archive depth (at most a week).
    pastDays: Annotated[int, Meta(ge=0, le=GUIDE_MAX_DAYS)] | None = None


def _attribute(value: str) -> str:
    # M3U has no escaping: keep attribute values on one line and free of quotes.
    return " ".join(value.replace('"', "'").split())


def _entry(subscriber: Subscriber, channel: catalog.Channel, base: str) -> str:
    settings = subscriber.settings
    attributes = [
        f'tvg-id="{_attribute(channel.name)}"',
        f'tvg-name="{_attribute(channel.title)}"',
    ]
    if channel.number is not None:
        attributes.append(f'tvg-chno="{channel.number}"')
    logo = urls.logo(base, subscriber.portal_id, channel)
    if logo:
        attributes.append(f'tvg-logo="{logo}"')
    attributes.append(f'group-title="{_attribute(channel.group)}"')
    if settings.archiveDays > 0:
        attributes.append(f'catchup="flussonic" catchup-days="{settings.archiveDays}"')
    title = " ".join(channel.title.split())
    stream = urls.live(settings, channel.name, subscriber.token)
    return f"#EXTINF:-1 {' '.join(attributes)},{title}\n{stream}\n"


def playlist_url(base: str, token: str) -> str:
    """Where a player fetches the playlist of the subscriber whose playback token is ``token``."""
    return f"{base}{PREFIX}/playlist.m3u8?token={quote(token)}"


def playlist(subscriber: Subscriber, channels: Sequence[catalog.Channel], base: str) -> bytes:
    guide = f"{base}{PREFIX}/epg.xml?token={quote(subscriber.token)}"
    lines = [f'#EXTM3U url-tvg="{guide}" x-tvg-url="{guide}"\n']
    lines += [_entry(subscriber, channel, base) for channel in channels]
    return "".join(lines).encode()


@api.get(
    "/playlist.m3u8",
    produces={200: ("Extended M3U playlist", "audio/x-mpegurl"), 304: ("Not modified", "audio/x-mpegurl")},
)
async def client_playlist(call: Call[None, None]) -> web.StreamResponse:
    """The subscriber's channels as an extended M3U playlist (token as header or ?token=)."""
    subscriber: Subscriber = call.subject
    async with call.db.acquire() as conn:
        channels = await catalog.channels(conn, subscriber.id, subscriber.portal_id)
    body = playlist(subscriber, channels, origin(call.request))
    etag = caching.fingerprint([body])
    if caching.not_modified(call.request, etag):
        return caching.respond_not_modified(etag, PLAYLIST_CACHE)
    response = web.Response(body=body, content_type="audio/x-mpegurl", charset="utf-8")
    response.headers["Content-Disposition"] = 'inline; filename="playlist.m3u8"'
    return caching.prepare(response, etag, PLAYLIST_CACHE)


class Window:
    """The hours a guide covers: whole hours, so it stays the same document within an hour."""

    def __init__(self, subscriber: Subscriber, query: GuideQuery, now: datetime) -> None:
        hour = now.replace(minute=0, second=0, microsecond=0)
        past = query.pastDays if query.pastDays is not None else min(subscriber.settings.archiveDays, 7)
        self.start = hour - timedelta(days=past)
        self.end = hour + timedelta(days=query.days)
        self.hour = hour


@api.get(
    "/epg.xml",
    produces={200: ("XMLTV guide", "application/xml"), 304: ("Not modified", "application/xml")},
)
async def client_guide(call: Call[None, GuideQuery]) -> web.StreamResponse:
    """The XMLTV guide of the subscriber's channels, streamed (token as header or ?token=)."""
    subscriber: Subscriber = call.subject
    window = Window(subscriber, call.query, datetime.now(UTC))
    async with call.db.acquire() as conn:
        channels = await catalog.channels(conn, subscriber.id, subscriber.portal_id)
        keys = sorted({c.guide for c in channels if c.guide is not None})
        count, newest = await catalog.guide_state(conn, keys, window.start, window.end)
    base = origin(call.request)
    etag = caching.fingerprint([base, window.start, window.end, count, newest, *_identity(channels)])
    modified = _last_modified(channels, newest, window)
    if caching.not_modified(call.request, etag, modified):
        return caching.respond_not_modified(etag, GUIDE_CACHE, modified)
    response = caching.prepare(web.StreamResponse(), etag, GUIDE_CACHE, modified)
    response.content_type, response.charset = "application/xml", "utf-8"
    response.enable_compression()
    await response.prepare(call.request)
    await _stream(call, response, subscriber, channels, window, base)
    return response


def _identity(channels: Sequence[catalog.Channel]) -> list[object]:
    return [(c.name, c.title, c.number, c.logo_etag, c.guide) for c in channels]


def _last_modified(channels: Sequence[catalog.Channel], newest: int, window: Window) -> datetime:
    moments = [window.hour, *(c.updated_at for c in channels)]
    if newest:
        moments.append(datetime.fromtimestamp(ids.timestamp_ms(newest) / 1000, UTC))
    return max(moments)


async def _stream(
    call: Call[Any, Any],
    response: web.StreamResponse,
    subscriber: Subscriber,
    channels: Sequence[catalog.Channel],
    window: Window,
    base: str,
) -> None:
    await response.write(xmltv.head(base))
    portal_id = subscriber.portal_id
    entries = [xmltv.channel(c.name, c.title, urls.logo(base, portal_id, c)) for c in channels]
    await response.write("".join(entries).encode())
    guided = [(c.name, c.guide) for c in channels if c.guide is not None]
    for first in range(0, len(guided), GUIDE_BATCH):
        batch = guided[first : first + GUIDE_BATCH]
        async with call.db.acquire() as conn:
            found = await catalog.guide(conn, sorted({key for _, key in batch}), window.start, window.end)
        parts = [xmltv.programme(name, program) for name, key in batch for program in found.get(key, ())]
        await response.write("".join(parts).encode())
    await response.write(xmltv.tail())
    await response.write_eof()

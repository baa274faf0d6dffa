"""The URLs handed to apps and players: live and archive playback (docs/authgate.md), logos.

``{base}`` is the portal's ``playbackUrlTemplate``: the streaming servers' base
URL.  The player appends nothing; the token travels as ``?token=`` so that
Flussonic forwards it to the auth gateway.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import quote

from catena.portals import PortalSettings

from ..schema import text_id
from . import PREFIX
from .catalog import Channel


def _base(settings: PortalSettings) -> str:
    return settings.playbackUrlTemplate.rstrip("/")


def live(settings: PortalSettings, name: str, token: str) -> str:
    return f"{_base(settings)}/{quote(name)}/index.m3u8?token={quote(token)}"


def archive(settings: PortalSettings, name: str, token: str, start: datetime, end: datetime) -> str:
    """Flussonic DVR playback of ``[start, end)``: ``index-{from}-{duration}.m3u8``."""
    begin = int(start.timestamp())
    duration = max(1, int(end.timestamp()) - begin)
    return f"{_base(settings)}/{quote(name)}/index-{begin}-{duration}.m3u8?token={quote(token)}"


def logo(origin: str, portal_id: int, channel: Channel) -> str | None:
    """The channel's logo through the client API, ``None`` without one.

    ``v`` changes with the image, so apps and players may cache the URL's answer.
    """
    if not channel.logo_etag:
        return None
    version = quote(channel.logo_etag.strip('"'))
    return f"{origin}{PREFIX}/channels/{quote(channel.name)}/logo?portalId={text_id(portal_id)}&v={version}"

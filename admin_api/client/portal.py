"""Which portal a subscriber app talks to: by ``Host``, or by an explicit ``portalId``.

An explicit ``portalId`` wins (apps built for one operator carry it; a shared host
name cannot tell portals apart).  Otherwise the request's ``Host`` must equal a
portal's ``domain``, compared case-insensitively with or without the port.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from catena import ids
from catena.errors import NotFound
from catena.portals import Branding, PortalSettings, load_branding, load_settings

from ..routing import Api, Call
from ..schema import Response, TextId, text_id
from . import PREFIX, TAG
from .forwarded import host, strip_port

api = Api(TAG, prefix=PREFIX)

_BY_ID = "SELECT id, name, branding, settings FROM portals WHERE id = $1"
_BY_DOMAIN = """
SELECT id, name, branding, settings FROM portals
WHERE domain <> '' AND lower(domain) = ANY($1::text[])
ORDER BY length(domain) DESC LIMIT 1
"""


@dataclass(frozen=True, slots=True)
class ClientPortal:
    id: int
    name: str
    branding: Branding
    settings: PortalSettings


class PortalQuery(msgspec.Struct, kw_only=True):
    portalId: str | None = None


class PortalInfo(Response):
    """What an app shows before sign-in: the operator's brand."""

    portalId: TextId
    name: str
    branding: Branding


async def resolve(conn: asyncpg.Connection, call: Call[Any, Any], portal_id: str | None) -> ClientPortal:
    """The portal named by ``portal_id`` or else by the request's host; 404 when none."""
    if portal_id is not None:
        number = ids.decode(portal_id)
        row = await conn.fetchrow(_BY_ID, number) if number is not None else None
        if row is None:
            raise NotFound(f"no portal has the id {portal_id!r}", field="portalId", code="unknown_portal")
        return _portal(row)
    requested = host(call.request)
    row = await conn.fetchrow(_BY_DOMAIN, [requested, strip_port(requested)]) if requested else None
    if row is None:
        raise NotFound(
            f"no portal serves the domain {requested!r}; send portalId to choose one",
            field="Host",
            code="unknown_portal",
        )
    return _portal(row)


def _portal(row: asyncpg.Record) -> ClientPortal:
    return ClientPortal(
        id=row["id"],
        name=row["name"],
        branding=load_branding(row["branding"]),
        settings=load_settings(row["settings"]),
    )


@api.get("/portal", response=PortalInfo)
async def client_portal(call: Call[None, PortalQuery]) -> PortalInfo:
    """The portal's name and branding, for the app's sign-in screen (no token needed)."""
    async with call.db.acquire() as conn:
        portal = await resolve(conn, call, call.query.portalId)
    return PortalInfo(portalId=text_id(portal.id), name=portal.name, branding=portal.branding)

"""``/portal/free-packages/{packageId}``: packages every subscriber may watch (docs/api.md)."""

from __future__ import annotations

import asyncpg

from catena import entitlements, operations
from catena.errors import Conflict, NotFound

from ._content import PACKAGE_REF, fetch_owned
from .auth import authenticate_manager
from .portal import PortalOut, load_portal
from .routing import Api, Call

api = Api("Portal", auth=authenticate_manager)

_ADD = """
INSERT INTO portal_free_packages (portal_id, package_id) VALUES ($1, $2)
ON CONFLICT DO NOTHING
"""
_REMOVE = "DELETE FROM portal_free_packages WHERE portal_id = $1 AND package_id = $2"


@api.post("/portal/free-packages/{packageId}", response=PortalOut, permission="content", status=201)
async def add_free_package(call: Call) -> PortalOut:
    """Make a package free: every subscriber of the portal may watch its channels at once."""
    async with call.db.acquire() as conn, conn.transaction():
        package = await _package(conn, call)
        if await conn.execute(_ADD, call.portal_id, package["id"]) == "INSERT 0 0":
            raise Conflict("the package is already a free package", code="already_free")
        await _record(conn, call, "addFreePackage", package)
        return await load_portal(conn, call.caller)


@api.delete("/portal/free-packages/{packageId}", response=PortalOut, permission="content")
async def remove_free_package(call: Call) -> PortalOut:
    """Stop giving a package to everybody; explicit subscriptions to it stay."""
    async with call.db.acquire() as conn, conn.transaction():
        package = await _package(conn, call)
        if await conn.execute(_REMOVE, call.portal_id, package["id"]) == "DELETE 0":
            raise NotFound("the package is not a free package", field="packageId", code="not_free")
        await _record(conn, call, "removeFreePackage", package)
        return await load_portal(conn, call.caller)


async def _package(conn: asyncpg.Connection, call: Call) -> asyncpg.Record:
    return await fetch_owned(conn, PACKAGE_REF, call.portal_id, call.path_id("packageId"), "packageId")


async def _record(conn: asyncpg.Connection, call: Call, kind: str, package: asyncpg.Record) -> None:
    await operations.record(
        conn,
        call.portal_id,
        kind,
        call.caller.actor,
        package_id=package["id"],
        payload={"packageName": package["name"]},
    )
    await entitlements.changed(conn, call.portal_id, "portal")

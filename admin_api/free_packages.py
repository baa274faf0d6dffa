"""``/portal/free-packages/{packageId}``: packages every subscriber may watch (docs/api.md)."""

from __future__ import annotations

import asyncpg

from catena import entitlements, operations
from catena.errors import Conflict, NotFound

from ._content import PACKAGE_REF, fetch_owned
from .auth import authenticate_manager
from .portal import PortalOut, load_portal
from .principal import Principal
from .routing import Api, Call
from .services import Services

api = Api("Portal", auth=authenticate_manager)

_ADD = """
INSERT INTO portal_free_packages (portal_id, package_id) VALUES ($1, $2)
ON CONFLICT DO NOTHING
"""
_REMOVE = "DELETE FROM portal_free_packages WHERE portal_id = $1 AND package_id = $2"


# Actions: what the JSON handlers below and the console call.


async def add_free_package(services: Services, actor: Principal, package_id: int) -> PortalOut:
    """Make a package free: every subscriber of the portal may watch its channels at once."""
    actor.require("content")
    async with services.db.acquire() as conn, conn.transaction():
        package = await _package(conn, actor, package_id)
        if await conn.execute(_ADD, actor.portal_id, package["id"]) == "INSERT 0 0":
            raise Conflict("the package is already a free package", code="already_free")
        await _record(conn, actor, "addFreePackage", package)
        return await load_portal(conn, actor)


async def remove_free_package(services: Services, actor: Principal, package_id: int) -> PortalOut:
    """Stop giving a package to everybody; explicit subscriptions to it stay.

    Subscribers without a subscription to it lose its channels at once.
    """
    actor.require("content")
    async with services.db.acquire() as conn, conn.transaction():
        package = await _package(conn, actor, package_id)
        if await conn.execute(_REMOVE, actor.portal_id, package["id"]) == "DELETE 0":
            raise NotFound("the package is not a free package", field="packageId", code="not_free")
        await _record(conn, actor, "removeFreePackage", package)
        return await load_portal(conn, actor)


# The JSON API: decode, call the action, encode.


@api.post("/portal/free-packages/{packageId}", response=PortalOut, permission="content", status=201)
async def handle_add_free_package(call: Call[None, None]) -> PortalOut:
    """Make a package free: every subscriber of the portal may watch its channels at once."""
    return await add_free_package(call.services, call.caller, call.path_id("packageId"))


@api.delete("/portal/free-packages/{packageId}", response=PortalOut, permission="content")
async def handle_remove_free_package(call: Call[None, None]) -> PortalOut:
    """Stop giving a package to everybody; explicit subscriptions to it stay."""
    return await remove_free_package(call.services, call.caller, call.path_id("packageId"))


async def _package(conn: asyncpg.Connection, actor: Principal, package_id: int) -> asyncpg.Record:
    return await fetch_owned(conn, PACKAGE_REF, actor.portal_id, package_id, "packageId")


async def _record(conn: asyncpg.Connection, actor: Principal, kind: str, package: asyncpg.Record) -> None:
    await operations.record(
        conn,
        actor.portal_id,
        kind,
        actor.actor,
        package_id=package["id"],
        payload={"packageName": package["name"]},
    )
    await entitlements.changed(conn, actor.portal_id, "portal")

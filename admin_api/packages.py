"""``/packages`` and ``/channels-packages``: channel packages and their composition (docs/api.md)."""

from __future__ import annotations

from typing import Annotated

import asyncpg
import msgspec
from msgspec import UNSET, Meta, UnsetType

from catena import entitlements, ids, operations
from catena.errors import Conflict, NotFound

from ._content import (
    PACKAGE_REF,
    BodyId,
    NamedPageQuery,
    check_echo,
    check_portal,
    decode_id,
    fetch_owned,
    name_taken,
    named_page,
)
from .auth import authenticate_manager
from .routing import Api, Call
from .schema import NO_NUL, NO_NUL_TEXT, Name, Request, Response, TextId, Timestamp, iso, text_id

api = Api("Packages", auth=authenticate_manager)

Description = Annotated[str, Meta(max_length=2000, pattern=NO_NUL, description=NO_NUL_TEXT)]


class Package(Response):
    packageId: TextId
    portalId: TextId
    name: str
    description: str
    channels: list[str]
    createdAt: Timestamp
    updatedAt: Timestamp


class PackagePage(Response):
    packages: list[Package]
    next: str | None = None


class PackageCreate(Request):
    name: Name
    description: Description = ""


class PackageUpdate(Request):
    """Absent fields keep their value; read-only fields may be sent back unchanged."""

    name: Name | UnsetType = UNSET
    description: Description | UnsetType = UNSET
    packageId: str | UnsetType = UNSET
    portalId: str | UnsetType = UNSET
    channels: list[str] | UnsetType = UNSET
    createdAt: str | UnsetType = UNSET
    updatedAt: str | UnsetType = UNSET


class DeleteQuery(msgspec.Struct, kw_only=True):
    force: bool = False


class ChannelPackageLink(Request):
    channelId: BodyId
    packageId: BodyId
    portalId: BodyId | None = None


class ChannelPackage(Response):
    channelId: TextId
    packageId: TextId
    portalId: TextId


_SELECT = """
SELECT p.id, p.portal_id, p.name, p.description, p.created_at, p.updated_at,
       ARRAY(SELECT c.name FROM channel_packages cp JOIN channels c ON c.id = cp.channel_id
             WHERE cp.package_id = p.id ORDER BY c.name) AS channels
FROM packages p
"""
_LIST = _SELECT + "WHERE p.portal_id = $1 AND p.id > $2 ORDER BY p.id LIMIT $3"
_LIST_NAMED = (
    _SELECT + "WHERE p.portal_id = $1 AND p.id > $2 AND p.name = ANY($4::text[]) ORDER BY p.id LIMIT $3"
)
_GET = _SELECT + "WHERE p.portal_id = $1 AND p.id = $2"
_LOCK = "SELECT * FROM packages WHERE portal_id = $1 AND id = $2 FOR UPDATE"
_INSERT = "INSERT INTO packages (id, portal_id, name, description) VALUES ($1, $2, $3, $4)"
_UPDATE = """
UPDATE packages SET name = $3, description = $4, updated_at = now() WHERE portal_id = $1 AND id = $2
"""
_DELETE = "DELETE FROM packages WHERE portal_id = $1 AND id = $2"
_BLOCKERS = """
SELECT (SELECT count(*) FROM subscriptions WHERE package_id = $1) AS subscriptions,
       EXISTS (SELECT 1 FROM portal_free_packages WHERE package_id = $1) AS free
"""
_END_SUBSCRIPTIONS = """
WITH ended AS (DELETE FROM subscriptions WHERE package_id = $1 RETURNING subscriber_id)
SELECT s.id, s.name, s.phone, s.phone_country_code
FROM ended JOIN subscribers s ON s.id = ended.subscriber_id ORDER BY s.id
"""
_UNFREE = "DELETE FROM portal_free_packages WHERE portal_id = $1 AND package_id = $2"
_CHANNEL = "SELECT id, name FROM channels WHERE portal_id = $1 AND id = $2 FOR SHARE"
_LINK = "INSERT INTO channel_packages (package_id, channel_id, portal_id) VALUES ($1, $2, $3)"
_UNLINK = "DELETE FROM channel_packages WHERE package_id = $1 AND channel_id = $2"


def package_out(row: asyncpg.Record) -> Package:
    return Package(
        packageId=text_id(row["id"]),
        portalId=text_id(row["portal_id"]),
        name=row["name"],
        description=row["description"],
        channels=list(row["channels"]),
        createdAt=iso(row["created_at"]),
        updatedAt=iso(row["updated_at"]),
    )


async def load_package(conn: asyncpg.Connection, portal_id: int, package_id: int) -> Package:
    return package_out(await fetch_owned(conn, _GET, portal_id, package_id, "id"))


@api.get("/packages", query=NamedPageQuery, response=PackagePage)
async def list_packages(call: Call) -> PackagePage:
    """The portal's packages in creation order; ``name`` (repeatable) filters by name."""
    rows, cursor = await named_page(call.services, call.portal_id, call.query, "packages", _LIST, _LIST_NAMED)
    return PackagePage(packages=[package_out(r) for r in rows], next=cursor)


@api.get("/packages/{id}", response=Package)
async def get_package(call: Call) -> Package:
    """One package."""
    async with call.db.acquire() as conn:
        return await load_package(conn, call.portal_id, call.path_id())


@api.post("/packages", body=PackageCreate, response=Package, permission="content")
async def create_package(call: Call) -> Package:
    """Create a package; its name must be new to the portal."""
    body: PackageCreate = call.body
    package_id = ids.new_id()
    async with call.db.acquire() as conn, conn.transaction():
        try:
            await conn.execute(_INSERT, package_id, call.portal_id, body.name, body.description)
        except asyncpg.UniqueViolationError:
            raise name_taken() from None
        await operations.record(
            conn,
            call.portal_id,
            "createPackage",
            call.caller.actor,
            package_id=package_id,
            payload={"packageName": body.name, "description": body.description},
        )
        return await load_package(conn, call.portal_id, package_id)


@api.put("/packages/{id}", body=PackageUpdate, response=Package, permission="content")
async def update_package(call: Call) -> Package:
    """Rename a package or change its description."""
    body: PackageUpdate = call.body
    package_id = call.path_id()
    async with call.db.acquire() as conn, conn.transaction():
        await fetch_owned(conn, _LOCK, call.portal_id, package_id, "id")
        current = await load_package(conn, call.portal_id, package_id)
        _check_read_only(body, current)
        name = current.name if body.name is UNSET else body.name
        description = current.description if body.description is UNSET else body.description
        try:
            await conn.execute(_UPDATE, call.portal_id, package_id, name, description)
        except asyncpg.UniqueViolationError:
            raise name_taken() from None
        payload = {"packageName": name, "previousName": current.name, "description": description}
        await operations.record(
            conn, call.portal_id, "updatePackage", call.caller.actor, package_id=package_id, payload=payload
        )
        return await load_package(conn, call.portal_id, package_id)


@api.delete("/packages/{id}", query=DeleteQuery, permission="content")
async def delete_package(call: Call) -> None:
    """Delete a package; refused while subscribed or free unless ``force=true``."""
    force: bool = call.query.force
    package_id = call.path_id()
    async with call.db.acquire() as conn, conn.transaction():
        # The row lock keeps new subscriptions and free-package entries out until commit.
        row = await fetch_owned(conn, _LOCK, call.portal_id, package_id, "id")
        blockers = await conn.fetchrow(_BLOCKERS, package_id)
        if not force:
            _refuse_if_used(blockers["subscriptions"], blockers["free"])
        ended = await _end_subscriptions(conn, call, row)
        if blockers["free"]:
            await _unfree(conn, call, row)
        await conn.execute(_DELETE, call.portal_id, package_id)
        payload = {"packageName": row["name"], "force": force, "endedSubscriptions": len(ended)}
        await operations.record(
            conn, call.portal_id, "deletePackage", call.caller.actor, package_id=package_id, payload=payload
        )
        await entitlements.changed(conn, call.portal_id, "package", [package_id])
        if ended:
            await entitlements.changed(conn, call.portal_id, "subscriber", ended)


def _refuse_if_used(subscriptions: int, free: bool) -> None:
    reasons = []
    if subscriptions:
        reasons.append(f"{subscriptions} subscriber(s) are subscribed to it; cancel the subscriptions first")
    if free:
        reasons.append("it is a free package of the portal; remove it from the free packages first")
    if reasons:
        code = "package_subscribed" if subscriptions else "package_free"
        raise Conflict(
            "the package cannot be deleted: " + "; ".join(reasons) + " (or delete with ?force=true)",
            code=code,
        )


async def _end_subscriptions(conn: asyncpg.Connection, call: Call, package: asyncpg.Record) -> list[int]:
    """End every subscription to ``package``, each with its ``deletePackageSubscriber`` row."""
    ended = await conn.fetch(_END_SUBSCRIPTIONS, package["id"])
    for sub in ended:
        payload = {
            "packageName": package["name"],
            "name": sub["name"],
            "phone": sub["phone"],
            "phoneCountryCode": sub["phone_country_code"],
            "reason": "package deleted",
        }
        await operations.record(
            conn,
            call.portal_id,
            "deletePackageSubscriber",
            call.caller.actor,
            subscriber_id=sub["id"],
            package_id=package["id"],
            payload=payload,
        )
    return [sub["id"] for sub in ended]


async def _unfree(conn: asyncpg.Connection, call: Call, package: asyncpg.Record) -> None:
    await conn.execute(_UNFREE, call.portal_id, package["id"])
    await operations.record(
        conn,
        call.portal_id,
        "removeFreePackage",
        call.caller.actor,
        package_id=package["id"],
        payload={"packageName": package["name"], "reason": "package deleted"},
    )
    await entitlements.changed(conn, call.portal_id, "portal")


def _check_read_only(body: PackageUpdate, current: Package) -> None:
    present = {"packageId": current.packageId, "portalId": current.portalId, "channels": current.channels}
    check_echo(
        body,
        present,
        {
            "channels": "channels is read-only; link channels with POST /channels-packages",
        },
    )


@api.post("/channels-packages", body=ChannelPackageLink, response=ChannelPackage, permission="content")
async def link_channel(call: Call) -> ChannelPackage:
    """Add a channel to a package; every subscriber of the package may watch it at once."""
    body: ChannelPackageLink = call.body
    async with call.db.acquire() as conn, conn.transaction():
        channel, package = await _link_ends(conn, call, body)
        try:
            await conn.execute(_LINK, package["id"], channel["id"], call.portal_id)
        except asyncpg.UniqueViolationError:
            raise Conflict("the channel is already in this package", code="already_linked") from None
        await _record_link(conn, call, "addChannelToPackage", channel, package)
    return ChannelPackage(
        channelId=body.channelId, packageId=body.packageId, portalId=text_id(call.portal_id)
    )


@api.delete("/channels-packages", body=ChannelPackageLink, permission="content")
async def unlink_channel(call: Call) -> None:
    """Remove a channel from a package (the channel itself stays)."""
    body: ChannelPackageLink = call.body
    async with call.db.acquire() as conn, conn.transaction():
        channel, package = await _link_ends(conn, call, body)
        if await conn.execute(_UNLINK, package["id"], channel["id"]) == "DELETE 0":
            raise NotFound("the channel is not in this package", code="not_linked")
        await _record_link(conn, call, "removeChannelFromPackage", channel, package)


async def _link_ends(
    conn: asyncpg.Connection, call: Call, body: ChannelPackageLink
) -> tuple[asyncpg.Record, asyncpg.Record]:
    """The channel and package a link names, both of the caller's portal (else 404)."""
    check_portal(body.portalId, call.portal_id)
    channel_id = decode_id(body.channelId, "channelId")
    package_id = decode_id(body.packageId, "packageId")
    channel = await fetch_owned(conn, _CHANNEL, call.portal_id, channel_id, "channelId")
    package = await fetch_owned(conn, PACKAGE_REF, call.portal_id, package_id, "packageId")
    return channel, package


async def _record_link(
    conn: asyncpg.Connection, call: Call, kind: str, channel: asyncpg.Record, package: asyncpg.Record
) -> None:
    payload = {
        "channelId": text_id(channel["id"]),
        "channelName": channel["name"],
        "packageName": package["name"],
    }
    await operations.record(
        conn, call.portal_id, kind, call.caller.actor, package_id=package["id"], payload=payload
    )
    await entitlements.changed(conn, call.portal_id, "package", [package["id"]])

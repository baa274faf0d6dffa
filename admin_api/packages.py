"""``/packages`` and ``/channels-packages``: channel packages and their composition (docs/api.md)."""

from __future__ import annotations

from typing import Annotated

import asyncpg
import msgspec
from msgspec import UNSET, Meta, UnsetType

from catena import entitlements, ids, operations
from catena.errors import Conflict, NotFound

from . import _search
from ._content import (
    FIRST_ID,
    PACKAGE_REF,
    BodyId,
    NamedPageQuery,
    check_echo,
    check_portal,
    decode_id,
    fetch_owned,
    name_taken,
)
from .auth import authenticate_manager
from .principal import Principal
from .routing import Api, Call
from .schema import NO_NUL, NO_NUL_TEXT, Name, Request, Response, TextId, Timestamp, iso, text_id
from .services import Services

api = Api("Packages", auth=authenticate_manager)

Description = Annotated[str, Meta(max_length=2000, pattern=NO_NUL, description=NO_NUL_TEXT)]


class Package(Response):
    packageId: TextId
    portalId: TextId
    name: str
    description: str
    channels: list[str]
    # How many channels the package holds and how many subscribers hold it
    # explicitly (free packages reach everybody without a subscription), and
    # whether it is one of the portal's free packages: the two things that block
    # its deletion.
    channelCount: int
    subscriberCount: int
    free: bool
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
    channelCount: int | UnsetType = UNSET
    subscriberCount: int | UnsetType = UNSET
    free: bool | UnsetType = UNSET
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


# Counts come from package_subscriber_counts (kept by triggers, migration 0600)
# and from the channel list the row carries anyway.  Scalar subqueries rather
# than EXISTS/LEFT JOIN: see channels._SELECT.
_SELECT = """
SELECT p.id, p.portal_id, p.name, p.description, p.created_at, p.updated_at,
       ARRAY(SELECT c.name FROM channel_packages cp JOIN channels c ON c.id = cp.channel_id
             WHERE cp.package_id = p.id ORDER BY c.name) AS channels,
       coalesce((SELECT n.subscribers FROM package_subscriber_counts n WHERE n.package_id = p.id), 0)
           AS subscriber_count,
       coalesce((SELECT true FROM portal_free_packages f
                 WHERE f.portal_id = p.portal_id AND f.package_id = p.id), false) AS free
FROM packages p
"""
_LIST = _SELECT + "WHERE p.portal_id = $1 AND p.id > $2 ORDER BY p.id LIMIT $3"
_LIST_NAMED = (
    _SELECT
    + """WHERE p.portal_id = $1 AND p.id > $2 AND p.name = ANY($4::text[])
  AND ($5::text IS NULL OR strpos(p.search, lower($5)) > 0)
ORDER BY p.id LIMIT $3"""
)
# ?q= (admin_api._search): the ids of a page's matches, then the page's columns.
_SEARCH = _search.SearchSql(
    count=_search.count("packages"),
    walk=_SELECT
    + """JOIN (SELECT w.id FROM (SELECT id, search FROM packages WHERE portal_id = $1 AND id > $2
                        ORDER BY id LIMIT $5) w
      WHERE strpos(w.search, (SELECT lower($3))) > 0 ORDER BY w.id LIMIT $4) m
  ON m.id = p.id
ORDER BY p.id""",
    edge="SELECT id FROM packages WHERE portal_id = $1 AND id > $2 ORDER BY id OFFSET $3 - 1 LIMIT 1",
    indexed=_search.candidates("packages", "portal_id, id, search", "$3")
    + _SELECT
    + """JOIN (SELECT id FROM candidates
      WHERE portal_id = $1 AND id > $2 AND strpos(search, (SELECT lower($3))) > 0
      ORDER BY id LIMIT $4) m
  ON m.id = p.id
ORDER BY p.id""",
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
    channels = list(row["channels"])
    return Package(
        packageId=text_id(row["id"]),
        portalId=text_id(row["portal_id"]),
        name=row["name"],
        description=row["description"],
        channels=channels,
        channelCount=len(channels),
        subscriberCount=row["subscriber_count"],
        free=row["free"],
        createdAt=iso(row["created_at"]),
        updatedAt=iso(row["updated_at"]),
    )


async def load_package(conn: asyncpg.Connection, portal_id: int, package_id: int) -> Package:
    return package_out(await fetch_owned(conn, _GET, portal_id, package_id, "id"))


# Actions: what the JSON handlers below and the console call.


async def list_packages(services: Services, actor: Principal, query: NamedPageQuery) -> PackagePage:
    """The portal's packages in creation order; ``name`` (repeatable) and ``q`` filter."""
    after = services.cursors.decode("packages", query.cursor, (int,)) or (FIRST_ID,)
    async with services.db.acquire() as conn:
        found = await _page(conn, actor.portal_id, after, query)
    rows, cursor = services.cursors.page(found, query.limit, "packages", lambda r: (r["id"],))
    return PackagePage(packages=[package_out(r) for r in rows], next=cursor)


async def _page(
    conn: asyncpg.Connection, portal_id: int, after: tuple[int, ...], query: NamedPageQuery
) -> list[asyncpg.Record]:
    want = query.limit + 1
    if query.name is not None:
        return list(await conn.fetch(_LIST_NAMED, portal_id, *after, want, query.name, query.q or None))
    if query.q:
        return await _search.search(conn, _SEARCH, portal_id, after, query.q, want)
    return list(await conn.fetch(_LIST, portal_id, *after, want))


async def get_package(services: Services, actor: Principal, package_id: int) -> Package:
    async with services.db.acquire() as conn:
        return await load_package(conn, actor.portal_id, package_id)


async def create_package(services: Services, actor: Principal, body: PackageCreate) -> Package:
    """Create a package; its name must be new to the portal."""
    actor.require("content")
    package_id = ids.new_id()
    async with services.db.acquire() as conn, conn.transaction():
        try:
            await conn.execute(_INSERT, package_id, actor.portal_id, body.name, body.description)
        except asyncpg.UniqueViolationError:
            raise name_taken() from None
        await operations.record(
            conn,
            actor.portal_id,
            "createPackage",
            actor.actor,
            package_id=package_id,
            payload={"packageName": body.name, "description": body.description},
        )
        return await load_package(conn, actor.portal_id, package_id)


async def update_package(
    services: Services, actor: Principal, package_id: int, body: PackageUpdate
) -> Package:
    """Rename a package or change its description."""
    actor.require("content")
    async with services.db.acquire() as conn, conn.transaction():
        await fetch_owned(conn, _LOCK, actor.portal_id, package_id, "id")
        current = await load_package(conn, actor.portal_id, package_id)
        _check_read_only(body, current)
        name = current.name if body.name is UNSET else body.name
        description = current.description if body.description is UNSET else body.description
        try:
            await conn.execute(_UPDATE, actor.portal_id, package_id, name, description)
        except asyncpg.UniqueViolationError:
            raise name_taken() from None
        payload = {"packageName": name, "previousName": current.name, "description": description}
        await operations.record(
            conn, actor.portal_id, "updatePackage", actor.actor, package_id=package_id, payload=payload
        )
        return await load_package(conn, actor.portal_id, package_id)


async def delete_package(services: Services, actor: Principal, package_id: int, query: DeleteQuery) -> None:
    """Delete a package; refused while subscribed or free unless ``force=true``.

    What blocks it is on the package itself (``subscriberCount``, ``free``), so a
    page can say what a forced delete will do before anyone asks for one.
    """
    actor.require("content")
    async with services.db.acquire() as conn, conn.transaction():
        # The row lock keeps new subscriptions and free-package entries out until commit.
        row = await fetch_owned(conn, _LOCK, actor.portal_id, package_id, "id")
        blockers = await conn.fetchrow(_BLOCKERS, package_id)
        if not query.force:
            _refuse_if_used(blockers["subscriptions"], blockers["free"])
        ended = await _end_subscriptions(conn, actor, row)
        if blockers["free"]:
            await _unfree(conn, actor, row)
        await conn.execute(_DELETE, actor.portal_id, package_id)
        payload = {"packageName": row["name"], "force": query.force, "endedSubscriptions": len(ended)}
        await operations.record(
            conn, actor.portal_id, "deletePackage", actor.actor, package_id=package_id, payload=payload
        )
        await entitlements.changed(conn, actor.portal_id, "package", [package_id])
        if ended:
            await entitlements.changed(conn, actor.portal_id, "subscriber", ended)


async def link_channel(services: Services, actor: Principal, body: ChannelPackageLink) -> ChannelPackage:
    """Add a channel to a package; every subscriber of the package may watch it at once."""
    actor.require("content")
    async with services.db.acquire() as conn, conn.transaction():
        channel, package = await _link_ends(conn, actor, body)
        try:
            await conn.execute(_LINK, package["id"], channel["id"], actor.portal_id)
        except asyncpg.UniqueViolationError:
            raise Conflict("the channel is already in this package", code="already_linked") from None
        await _record_link(conn, actor, "addChannelToPackage", channel, package)
    return ChannelPackage(
        channelId=body.channelId, packageId=body.packageId, portalId=text_id(actor.portal_id)
    )


async def unlink_channel(services: Services, actor: Principal, body: ChannelPackageLink) -> None:
    """Remove a channel from a package (the channel itself stays)."""
    actor.require("content")
    async with services.db.acquire() as conn, conn.transaction():
        channel, package = await _link_ends(conn, actor, body)
        if await conn.execute(_UNLINK, package["id"], channel["id"]) == "DELETE 0":
            raise NotFound("the channel is not in this package", code="not_linked")
        await _record_link(conn, actor, "removeChannelFromPackage", channel, package)


# The JSON API: decode, call the action, encode.


@api.get("/packages", response=PackagePage)
async def handle_list_packages(call: Call[None, NamedPageQuery]) -> PackagePage:
    """The portal's packages in creation order; ``name`` (repeatable) filters by name.

    ``q`` keeps packages whose name or description contains it, ignoring case.
    """
    return await list_packages(call.services, call.caller, call.query)


@api.get("/packages/{id}", response=Package)
async def handle_get_package(call: Call[None, None]) -> Package:
    """One package."""
    return await get_package(call.services, call.caller, call.path_id())


@api.post("/packages", response=Package, permission="content")
async def handle_create_package(call: Call[PackageCreate, None]) -> Package:
    """Create a package; its name must be new to the portal."""
    return await create_package(call.services, call.caller, call.body)


@api.put("/packages/{id}", response=Package, permission="content")
async def handle_update_package(call: Call[PackageUpdate, None]) -> Package:
    """Rename a package or change its description."""
    return await update_package(call.services, call.caller, call.path_id(), call.body)


@api.delete("/packages/{id}", permission="content")
async def handle_delete_package(call: Call[None, DeleteQuery]) -> None:
    """Delete a package; refused while subscribed or free unless ``force=true``."""
    await delete_package(call.services, call.caller, call.path_id(), call.query)


@api.post("/channels-packages", response=ChannelPackage, permission="content")
async def handle_link_channel(call: Call[ChannelPackageLink, None]) -> ChannelPackage:
    """Add a channel to a package; every subscriber of the package may watch it at once."""
    return await link_channel(call.services, call.caller, call.body)


@api.delete("/channels-packages", permission="content")
async def handle_unlink_channel(call: Call[ChannelPackageLink, None]) -> None:
    """Remove a channel from a package (the channel itself stays)."""
    await unlink_channel(call.services, call.caller, call.body)


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


async def _end_subscriptions(
    conn: asyncpg.Connection, actor: Principal, package: asyncpg.Record
) -> list[int]:
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
            actor.portal_id,
            "deletePackageSubscriber",
            actor.actor,
            subscriber_id=sub["id"],
            package_id=package["id"],
            payload=payload,
        )
    return [sub["id"] for sub in ended]


async def _unfree(conn: asyncpg.Connection, actor: Principal, package: asyncpg.Record) -> None:
    await conn.execute(_UNFREE, actor.portal_id, package["id"])
    await operations.record(
        conn,
        actor.portal_id,
        "removeFreePackage",
        actor.actor,
        package_id=package["id"],
        payload={"packageName": package["name"], "reason": "package deleted"},
    )
    await entitlements.changed(conn, actor.portal_id, "portal")


def _check_read_only(body: PackageUpdate, current: Package) -> None:
    present = {
        "packageId": current.packageId,
        "portalId": current.portalId,
        "channels": current.channels,
    }
    check_echo(
        body,
        present,
        {
            "channels": "channels is read-only; link channels with POST /channels-packages",
        },
    )


async def _link_ends(
    conn: asyncpg.Connection, actor: Principal, body: ChannelPackageLink
) -> tuple[asyncpg.Record, asyncpg.Record]:
    """The channel and package a link names, both of the caller's portal (else 404)."""
    check_portal(body.portalId, actor.portal_id)
    channel_id = decode_id(body.channelId, "channelId")
    package_id = decode_id(body.packageId, "packageId")
    channel = await fetch_owned(conn, _CHANNEL, actor.portal_id, channel_id, "channelId")
    package = await fetch_owned(conn, PACKAGE_REF, actor.portal_id, package_id, "packageId")
    return channel, package


async def _record_link(
    conn: asyncpg.Connection, actor: Principal, kind: str, channel: asyncpg.Record, package: asyncpg.Record
) -> None:
    payload = {
        "channelId": text_id(channel["id"]),
        "channelName": channel["name"],
        "packageName": package["name"],
    }
    await operations.record(
        conn, actor.portal_id, kind, actor.actor, package_id=package["id"], payload=payload
    )
    await entitlements.changed(conn, actor.portal_id, "package", [package["id"]])

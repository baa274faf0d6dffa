"""``/packages-subscribers``: explicit subscriptions of subscribers to packages (docs/api.md)."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from msgspec import Meta

from catena import entitlements, ids, operations
from catena.errors import Conflict, NotFound

from .auth import authenticate_manager
from .principal import Principal
from .routing import Api, Call
from .schema import Request, Response, TextId, text_id
from .services import Services
from .subscribers import audit

api = Api("Subscriptions", auth=authenticate_manager)

# Not TextId: an id that does not decode names nothing, which is a 404, not a 400.
AnyId = Annotated[str, Meta(max_length=100, examples=["pK19SW3AAAE."])]


class SubscriptionRequest(Request):
    subscriberId: AnyId
    packageId: AnyId
    portalId: AnyId | None = None


class SubscriptionOut(Response):
    subscriberId: TextId
    packageId: TextId
    portalId: TextId


# Touching the subscriber locks its row, so changes to one subscriber queue up.
_TOUCH_SUBSCRIBER = """
UPDATE subscribers SET updated_at = now() WHERE portal_id = $1 AND id = $2
RETURNING id, name, phone_country_code, phone
"""
# KEY SHARE keeps the package from being deleted until this subscription is committed.
_PACKAGE = "SELECT name FROM packages WHERE portal_id = $1 AND id = $2 FOR KEY SHARE"
_INSERT = """
INSERT INTO subscriptions (subscriber_id, package_id, portal_id) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING RETURNING subscriber_id
"""
_DELETE = """
DELETE FROM subscriptions WHERE portal_id = $1 AND subscriber_id = $2 AND package_id = $3
RETURNING subscriber_id
"""
_IS_FREE = "SELECT EXISTS (SELECT 1 FROM portal_free_packages WHERE portal_id = $1 AND package_id = $2)"


# Actions: what the JSON handlers below and the console call.


async def subscribe(services: Services, actor: Principal, body: SubscriptionRequest) -> SubscriptionOut:
    """Subscribe a subscriber to a package: its channels play at once. 409 when already subscribed."""
    actor.require("subscriber")
    subscriber_id, package_id = _ids(body, actor.portal_id)
    async with services.db.acquire() as conn, conn.transaction():
        who, package_name = await _lock_both(conn, actor.portal_id, subscriber_id, package_id)
        if await conn.fetchval(_INSERT, subscriber_id, package_id, actor.portal_id) is None:
            raise Conflict(
                "the subscriber is already subscribed to this package",
                field="packageId",
                code="already_subscribed",
            )
        await _record(conn, actor, "createPackageSubscriber", who, package_id, package_name)
    return SubscriptionOut(
        subscriberId=text_id(subscriber_id), packageId=text_id(package_id), portalId=text_id(actor.portal_id)
    )


async def unsubscribe(services: Services, actor: Principal, body: SubscriptionRequest) -> None:
    """End a subscription: the package's channels stop playing at once (unless free)."""
    actor.require("subscriber")
    subscriber_id, package_id = _ids(body, actor.portal_id)
    async with services.db.acquire() as conn, conn.transaction():
        who, package_name = await _lock_both(conn, actor.portal_id, subscriber_id, package_id)
        if await conn.fetchval(_DELETE, actor.portal_id, subscriber_id, package_id) is None:
            raise await _not_subscribed(conn, actor.portal_id, package_id, package_name)
        await _record(conn, actor, "deletePackageSubscriber", who, package_id, package_name)


# The JSON API: decode, call the action, encode.


@api.post("/packages-subscribers", response=SubscriptionOut, permission="subscriber")
async def handle_subscribe(call: Call[SubscriptionRequest, None]) -> SubscriptionOut:
    """Subscribe a subscriber to a package: its channels play at once. 409 when already subscribed."""
    return await subscribe(call.services, call.caller, call.body)


@api.delete("/packages-subscribers", permission="subscriber")
async def handle_unsubscribe(call: Call[SubscriptionRequest, None]) -> None:
    """End a subscription: the package's channels stop playing at once (unless free)."""
    await unsubscribe(call.services, call.caller, call.body)


def _ids(body: SubscriptionRequest, portal_id: int) -> tuple[int, int]:
    if body.portalId is not None and ids.decode(body.portalId) != portal_id:
        raise NotFound("no such portal", field="portalId")
    subscriber_id, package_id = ids.decode(body.subscriberId), ids.decode(body.packageId)
    if subscriber_id is None:
        raise NotFound("no such subscriber", field="subscriberId")
    if package_id is None:
        raise NotFound("no such package", field="packageId")
    return subscriber_id, package_id


async def _lock_both(
    conn: asyncpg.Connection, portal_id: int, subscriber_id: int, package_id: int
) -> tuple[asyncpg.Record, str]:
    who = await conn.fetchrow(_TOUCH_SUBSCRIBER, portal_id, subscriber_id)
    if who is None:
        raise NotFound("no such subscriber", field="subscriberId")
    package_name = await conn.fetchval(_PACKAGE, portal_id, package_id)
    if package_name is None:
        raise NotFound("no such package", field="packageId")
    return who, package_name


async def _not_subscribed(
    conn: asyncpg.Connection, portal_id: int, package_id: int, package_name: str
) -> NotFound:
    if await conn.fetchval(_IS_FREE, portal_id, package_id):
        return NotFound(
            f"package {package_name!r} is one of the portal's free packages, not an explicit "
            "subscription; every subscriber keeps it until it is removed with "
            f"DELETE /portal/free-packages/{text_id(package_id)}",
            field="packageId",
            code="free_package",
        )
    return NotFound(
        "the subscriber is not subscribed to this package", field="packageId", code="not_subscribed"
    )


async def _record(
    conn: asyncpg.Connection,
    actor: Principal,
    kind: str,
    who: asyncpg.Record,
    package_id: int,
    package_name: str,
) -> None:
    payload = {**audit(who), "packageId": text_id(package_id), "packageName": package_name}
    await operations.record(
        conn,
        actor.portal_id,
        kind,
        actor.actor,
        subscriber_id=who["id"],
        package_id=package_id,
        payload=payload,
    )
    await entitlements.changed(conn, actor.portal_id, "subscriber", [who["id"]])

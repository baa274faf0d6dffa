"""``/subscribers``: the viewers of a portal, their playback tokens and access (docs/api.md)."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
import msgspec
from msgspec import UNSET, Meta, UnsetType

from catena import entitlements, ids, operations
from catena.errors import Conflict, NotFound
from catena.tokens import TokenCodec

from . import keys
from ._filters import Where, decode_ids, fetch_page
from .auth import authenticate_manager
from .routing import Api, Call
from .schema import NO_NUL_TEXT, Request, Response, TextId, Timestamp, iso, text_id

api = Api("Subscribers", auth=authenticate_manager)

CountryCode = Annotated[
    str, Meta(pattern=r"^[0-9]{1,4}$", description="digits only, without '+'", examples=["7"])
]
Phone = Annotated[
    str,
    Meta(
        pattern=r"^[0-9]{1,20}$", description="digits only, without the country code", examples=["9161234567"]
    ),
]
# Something besides spaces, and no NUL (PostgreSQL text cannot hold one).
Name = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00]*[^\x00\s][^\x00]*$",
        description="a name that is not only spaces, without the NUL character (U+0000)",
        examples=["Иван Петров"],
    ),
]
MaxSessions = Annotated[
    int, Meta(ge=1, le=1000, description="concurrent sessions; null means the portal's maxSessions")
]
Reason = Annotated[
    str, Meta(max_length=500, pattern=r"^[^\x00]*$", description=NO_NUL_TEXT, examples=["неоплата"])
]


class SubscriberOut(Response):
    subscriberId: TextId
    portalId: TextId
    name: str
    phoneCountryCode: str
    phone: str
    playback_token: str
    packages: list[TextId]
    disabled: bool
    disabledReason: str | None
    maxSessions: int | None
    createdAt: Timestamp
    updatedAt: Timestamp


class SubscriberList(Response):
    subscribers: list[SubscriberOut]
    next: str | None = None


class SubscriberCreate(Request):
    name: Name
    phoneCountryCode: CountryCode
    phone: Phone
    maxSessions: MaxSessions | None = None


class SubscriberUpdate(Request):
    """Fields absent from the body keep their value; ``maxSessions: null`` restores the portal default."""

    name: Name | UnsetType = UNSET
    phoneCountryCode: CountryCode | UnsetType = UNSET
    phone: Phone | UnsetType = UNSET
    maxSessions: MaxSessions | UnsetType | None = UNSET


class DisableRequest(Request):
    reason: Reason | None = None


class SubscribersQuery(msgspec.Struct, kw_only=True):
    """Exact-match filters, combined with AND."""

    phone: Phone | None = None
    phoneCountryCode: CountryCode | None = None
    packageId: str | None = None
    disabled: bool | None = None
    cursor: str | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100


_COLUMNS = """s.id, s.portal_id, s.name, s.phone_country_code, s.phone, s.disabled, s.disabled_reason,
       s.max_sessions, s.token_version, s.created_at, s.updated_at"""
_PACKAGES = """array(SELECT x.package_id FROM subscriptions x WHERE x.subscriber_id = s.id
             ORDER BY x.created_at, x.package_id) AS packages"""
_GET = f"SELECT {_COLUMNS}, {_PACKAGES} FROM subscribers s WHERE s.portal_id = $1 AND s.id = $2"
_LOCK = f"SELECT {_COLUMNS} FROM subscribers s WHERE s.portal_id = $1 AND s.id = $2 FOR UPDATE"
_LIST = f"SELECT {_COLUMNS}, {_PACKAGES} FROM subscribers s WHERE {{where}} ORDER BY s.id LIMIT {{limit}}"
_INSERT = f"""
INSERT INTO subscribers AS s (id, portal_id, name, phone_country_code, phone, max_sessions)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING {_COLUMNS}, '{{}}'::bigint[] AS packages
"""
_UPDATE = f"""
UPDATE subscribers s SET name = $3, phone_country_code = $4, phone = $5, max_sessions = $6,
       token_version = token_version + $7, updated_at = now()
WHERE s.portal_id = $1 AND s.id = $2
RETURNING {_COLUMNS}, {_PACKAGES}
"""
_SET_DISABLED = f"""
UPDATE subscribers s SET disabled = $3, disabled_reason = $4, updated_at = now()
WHERE s.portal_id = $1 AND s.id = $2 AND s.disabled <> $3
RETURNING {_COLUMNS}, {_PACKAGES}
"""
_RESET_TOKEN = f"""
UPDATE subscribers s SET token_version = token_version + 1, updated_at = now()
WHERE s.portal_id = $1 AND s.id = $2
RETURNING {_COLUMNS}, {_PACKAGES}
"""
_END_SUBSCRIPTIONS = """
DELETE FROM subscriptions x USING packages p
WHERE x.portal_id = $1 AND x.subscriber_id = $2 AND p.id = x.package_id
RETURNING x.package_id, p.name
"""
_DELETE = "DELETE FROM subscribers WHERE portal_id = $1 AND id = $2"


def subscriber_out(row: asyncpg.Record, codec: TokenCodec) -> SubscriberOut:
    return SubscriberOut(
        subscriberId=text_id(row["id"]),
        portalId=text_id(row["portal_id"]),
        name=row["name"],
        phoneCountryCode=row["phone_country_code"],
        phone=row["phone"],
        playback_token=codec.sign(row["id"], row["portal_id"], row["token_version"]),
        packages=[text_id(p) for p in row["packages"]],
        disabled=row["disabled"],
        disabledReason=row["disabled_reason"],
        maxSessions=row["max_sessions"],
        createdAt=iso(row["created_at"]),
        updatedAt=iso(row["updated_at"]),
    )


def audit(row: asyncpg.Record) -> dict[str, Any]:
    """What the operations log keeps about a subscriber: who it was, never its token."""
    return {
        "subscriberId": text_id(row["id"]),
        "name": row["name"],
        "phoneCountryCode": row["phone_country_code"],
        "phone": row["phone"],
    }


def _out(call: Call, row: asyncpg.Record) -> SubscriberOut:
    return subscriber_out(row, call.request.app[keys.TOKENS])


@api.get("/subscribers", query=SubscribersQuery, response=SubscriberList)
async def list_subscribers(call: Call) -> SubscriberList:
    """The portal's subscribers, oldest first; ``phone``/``phoneCountryCode`` find one by number."""
    query: SubscribersQuery = call.query
    rows, cursor = await fetch_page(
        call.services, "subscribers", _LIST, query, lambda after: _list_where(call.portal_id, query, after)
    )
    return SubscriberList(subscribers=[_out(call, r) for r in rows], next=cursor)


def _list_where(portal_id: int, query: SubscribersQuery, after: int | None) -> Where:
    where = Where()
    where.add("s.portal_id = {}", portal_id)
    if after is not None:
        where.add("s.id > {}", after)
    if query.phone is not None:
        where.add("s.phone = {}", query.phone)
    if query.phoneCountryCode is not None:
        where.add("s.phone_country_code = {}", query.phoneCountryCode)
    if query.disabled is not None:
        where.add("s.disabled = {}", query.disabled)
    if query.packageId is not None:
        (package_id,) = decode_ids([query.packageId], "packageId")
        where.add(
            "EXISTS (SELECT 1 FROM subscriptions x WHERE x.subscriber_id = s.id AND x.package_id = {})",
            package_id,
        )
    return where


@api.get("/subscribers/{id}", response=SubscriberOut)
async def get_subscriber(call: Call) -> SubscriberOut:
    """One subscriber, with its explicit packages and current playback token."""
    async with call.db.acquire() as conn:
        return _out(call, _found(await conn.fetchrow(_GET, call.portal_id, call.path_id())))


@api.post("/subscribers", body=SubscriberCreate, response=SubscriberOut, permission="subscriber")
async def create_subscriber(call: Call) -> SubscriberOut:
    """Create a subscriber; the phone number must be new to this portal."""
    body: SubscriberCreate = call.body
    async with call.db.acquire() as conn, conn.transaction():
        try:
            row = await conn.fetchrow(
                _INSERT,
                ids.new_id(),
                call.portal_id,
                body.name,
                body.phoneCountryCode,
                body.phone,
                body.maxSessions,
            )
        except asyncpg.UniqueViolationError:
            raise _phone_taken() from None
        payload = {**audit(row), "maxSessions": body.maxSessions}
        await _record(conn, call, "createSubscriber", row, payload)
        await entitlements.changed(conn, call.portal_id, "subscriber", [row["id"]])
    return _out(call, row)


_COLUMN = {
    "name": "name",
    "phoneCountryCode": "phone_country_code",
    "phone": "phone",
    "maxSessions": "max_sessions",
}


@api.put("/subscribers/{id}", body=SubscriberUpdate, response=SubscriberOut, permission="subscriber")
async def update_subscriber(call: Call) -> SubscriberOut:
    """Update name, phone or maxSessions; a new phone number signs the subscriber out."""
    body: SubscriberUpdate = call.body
    async with call.db.acquire() as conn, conn.transaction():
        current = _found(await conn.fetchrow(_LOCK, call.portal_id, call.path_id()))
        new = _merged(body, current)
        changed = [field for field, value in new.items() if value != current[_COLUMN[field]]]
        if not changed:
            return _out(call, _found(await conn.fetchrow(_GET, call.portal_id, current["id"])))
        rekey = "phone" in changed or "phoneCountryCode" in changed
        try:
            row = await conn.fetchrow(
                _UPDATE,
                call.portal_id,
                current["id"],
                new["name"],
                new["phoneCountryCode"],
                new["phone"],
                new["maxSessions"],
                int(rekey),
            )
        except asyncpg.UniqueViolationError:
            raise _phone_taken() from None
        previous = {field: current[_COLUMN[field]] for field in changed}
        payload = {**audit(row), "fields": changed, "previous": previous}
        await _record(conn, call, "updateSubscriber", row, payload)
        if rekey or "maxSessions" in changed:
            await entitlements.changed(conn, call.portal_id, "subscriber", [row["id"]])
    return _out(call, row)


def _merged(body: SubscriberUpdate, current: asyncpg.Record) -> dict[str, Any]:
    merged = {}
    for field, column in _COLUMN.items():
        sent = getattr(body, field)
        merged[field] = current[column] if sent is UNSET else sent
    return merged


@api.delete("/subscribers/{id}", permission="subscriber")
async def delete_subscriber(call: Call) -> None:
    """Delete a subscriber: its subscriptions end (each logged), its session history stays."""
    async with call.db.acquire() as conn, conn.transaction():
        row = _found(await conn.fetchrow(_LOCK, call.portal_id, call.path_id()))
        ended = await conn.fetch(_END_SUBSCRIPTIONS, call.portal_id, row["id"])
        for package in ended:
            await operations.record(
                conn,
                call.portal_id,
                "deletePackageSubscriber",
                call.caller.actor,
                subscriber_id=row["id"],
                package_id=package["package_id"],
                payload={
                    **audit(row),
                    "packageId": text_id(package["package_id"]),
                    "packageName": package["name"],
                    "reason": "subscriber deleted",
                },
            )
        await conn.execute(_DELETE, call.portal_id, row["id"])
        await _record(conn, call, "deleteSubscriber", row, audit(row))
        await entitlements.changed(conn, call.portal_id, "subscriber", [row["id"]])


@api.post(
    "/subscribers/{id}/disable",
    body=DisableRequest,
    optional_body=True,
    response=SubscriberOut,
    permission="subscriber",
)
async def disable_subscriber(call: Call) -> SubscriberOut:
    """Deny every playback check; subscriptions are kept. 409 when already disabled."""
    body: DisableRequest = call.body
    return await _set_disabled(call, True, body.reason)


@api.post("/subscribers/{id}/enable", response=SubscriberOut, permission="subscriber")
async def enable_subscriber(call: Call) -> SubscriberOut:
    """Allow playback again. 409 when not disabled."""
    return await _set_disabled(call, False, None)


async def _set_disabled(call: Call, disabled: bool, reason: str | None) -> SubscriberOut:
    subscriber_id = call.path_id()
    async with call.db.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(_SET_DISABLED, call.portal_id, subscriber_id, disabled, reason)
        if row is None:
            _found(await conn.fetchrow(_GET, call.portal_id, subscriber_id))
            state = "disabled" if disabled else "enabled"
            raise Conflict(f"the subscriber is already {state}", code=f"already_{state}")
        kind = "disableSubscriber" if disabled else "enableSubscriber"
        payload = {**audit(row), "reason": reason} if disabled else audit(row)
        await _record(conn, call, kind, row, payload)
        await entitlements.changed(conn, call.portal_id, "subscriber", [row["id"]])
    return _out(call, row)


@api.post("/subscribers/{id}/reset_playback_token", response=SubscriberOut, permission="subscriber")
async def reset_playback_token(call: Call) -> SubscriberOut:
    """Issue a new playback token; the gateway refuses the old one from its next check."""
    async with call.db.acquire() as conn, conn.transaction():
        row = _found(await conn.fetchrow(_RESET_TOKEN, call.portal_id, call.path_id()))
        await _record(conn, call, "resetPlaybackToken", row, audit(row))
        await entitlements.changed(conn, call.portal_id, "subscriber", [row["id"]])
    return _out(call, row)


def _found(row: asyncpg.Record | None) -> asyncpg.Record:
    if row is None:
        raise NotFound("no such subscriber", field="id")
    return row


def _phone_taken() -> Conflict:
    return Conflict(
        "a subscriber with this phoneCountryCode and phone already exists in this portal",
        field="phone",
        code="phone_taken",
    )


async def _record(
    conn: asyncpg.Connection, call: Call, kind: str, row: asyncpg.Record, payload: dict[str, Any]
) -> None:
    await operations.record(
        conn, call.portal_id, kind, call.caller.actor, subscriber_id=row["id"], payload=payload
    )

"""``/subscribers``: the viewers of a portal, their playback tokens and access (docs/api.md)."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
import msgspec
from msgspec import UNSET, Meta, UnsetType

from catena import entitlements, ids, operations
from catena.errors import Conflict, NotFound
from catena.tokens import TokenCodec

from . import subscriber_search
from ._content import FIRST_ID
from ._filters import Where, decode_ids, fetch_page
from .auth import authenticate_manager
from .principal import Principal
from .routing import Api, Call
from .schema import NO_NUL, NO_NUL_TEXT, Request, Response, TextId, Timestamp, iso, opt_iso, text_id
from .services import Services

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
Search = Annotated[
    str,
    Meta(
        max_length=100,
        pattern=NO_NUL,
        description="phone digits (with or without the country code; '+', spaces and dashes "
        "ignored) or part of the name (case-insensitive); at most 100 characters",
        examples=["916123"],
    ),
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
    # The latest app sign-in or play-session update (the gateway writes it once per
    # session batch, so it lags playback by up to CATENA_AUTH_PROGRESS_INTERVAL).
    lastActivityAt: Timestamp | None


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
    """Exact-match filters and the ``q`` search, combined with AND."""

    phone: Phone | None = None
    phoneCountryCode: CountryCode | None = None
    packageId: str | None = None
    disabled: bool | None = None
    q: Search | None = None
    cursor: str | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100


_COLUMNS = """s.id, s.portal_id, s.name, s.phone_country_code, s.phone, s.disabled, s.disabled_reason,
       s.max_sessions, s.token_version, s.created_at, s.updated_at, s.last_activity_at"""
_PACKAGES = """array(SELECT x.package_id FROM subscriptions x WHERE x.subscriber_id = s.id
             ORDER BY x.created_at, x.package_id) AS packages"""
_BY_IDS = f"""
SELECT {_COLUMNS}, {_PACKAGES} FROM subscribers s WHERE s.portal_id = $1 AND s.id = ANY($2::bigint[])
ORDER BY s.id
"""
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
        lastActivityAt=opt_iso(row["last_activity_at"]),
    )


def audit(row: asyncpg.Record) -> dict[str, Any]:
    """What the operations log keeps about a subscriber: who it was, never its token."""
    return {
        "subscriberId": text_id(row["id"]),
        "name": row["name"],
        "phoneCountryCode": row["phone_country_code"],
        "phone": row["phone"],
    }


_COLUMN = {
    "name": "name",
    "phoneCountryCode": "phone_country_code",
    "phone": "phone",
    "maxSessions": "max_sessions",
}


# Actions: what the JSON handlers below and the console call.


async def list_subscribers(services: Services, actor: Principal, query: SubscribersQuery) -> SubscriberList:
    """The portal's subscribers, oldest first; ``phone``/``phoneCountryCode`` find one by number.

    ``q`` searches phone digits or names (:mod:`admin_api.subscriber_search`).
    """
    search = subscriber_search.parse(query.q)
    if search is None:
        rows, cursor = await fetch_page(
            services, "subscribers", _LIST, query, lambda after: _list_where(actor.portal_id, query, after)
        )
    else:
        rows, cursor = await _search_page(services, actor.portal_id, query, search)
    return SubscriberList(subscribers=[subscriber_out(r, services.tokens) for r in rows], next=cursor)


async def get_subscriber(services: Services, actor: Principal, subscriber_id: int) -> SubscriberOut:
    """One subscriber, with its explicit packages and current playback token."""
    async with services.db.acquire() as conn:
        row = _found(await conn.fetchrow(_GET, actor.portal_id, subscriber_id))
    return subscriber_out(row, services.tokens)


async def create_subscriber(services: Services, actor: Principal, body: SubscriberCreate) -> SubscriberOut:
    """Create a subscriber; the phone number must be new to this portal."""
    actor.require("subscriber")
    async with services.db.acquire() as conn, conn.transaction():
        try:
            row = await conn.fetchrow(
                _INSERT,
                ids.new_id(),
                actor.portal_id,
                body.name,
                body.phoneCountryCode,
                body.phone,
                body.maxSessions,
            )
        except asyncpg.UniqueViolationError:
            raise _phone_taken() from None
        payload = {**audit(row), "maxSessions": body.maxSessions}
        await _record(conn, actor, "createSubscriber", row, payload)
        await entitlements.changed(conn, actor.portal_id, "subscriber", [row["id"]])
    return subscriber_out(row, services.tokens)


async def update_subscriber(
    services: Services, actor: Principal, subscriber_id: int, body: SubscriberUpdate
) -> SubscriberOut:
    """Update name, phone or maxSessions; a new phone number signs the subscriber out."""
    actor.require("subscriber")
    async with services.db.acquire() as conn, conn.transaction():
        current = _found(await conn.fetchrow(_LOCK, actor.portal_id, subscriber_id))
        new = _merged(body, current)
        changed = [field for field, value in new.items() if value != current[_COLUMN[field]]]
        if not changed:
            row = _found(await conn.fetchrow(_GET, actor.portal_id, current["id"]))
            return subscriber_out(row, services.tokens)
        rekey = "phone" in changed or "phoneCountryCode" in changed
        try:
            row = await conn.fetchrow(
                _UPDATE,
                actor.portal_id,
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
        await _record(conn, actor, "updateSubscriber", row, payload)
        if rekey or "maxSessions" in changed:
            await entitlements.changed(conn, actor.portal_id, "subscriber", [row["id"]])
    return subscriber_out(row, services.tokens)


async def delete_subscriber(services: Services, actor: Principal, subscriber_id: int) -> None:
    """Delete a subscriber: its subscriptions end (each logged), its session history stays."""
    actor.require("subscriber")
    async with services.db.acquire() as conn, conn.transaction():
        row = _found(await conn.fetchrow(_LOCK, actor.portal_id, subscriber_id))
        ended = await conn.fetch(_END_SUBSCRIPTIONS, actor.portal_id, row["id"])
        for package in ended:
            await operations.record(
                conn,
                actor.portal_id,
                "deletePackageSubscriber",
                actor.actor,
                subscriber_id=row["id"],
                package_id=package["package_id"],
                payload={
                    **audit(row),
                    "packageId": text_id(package["package_id"]),
                    "packageName": package["name"],
                    "reason": "subscriber deleted",
                },
            )
        await conn.execute(_DELETE, actor.portal_id, row["id"])
        await _record(conn, actor, "deleteSubscriber", row, audit(row))
        await entitlements.changed(conn, actor.portal_id, "subscriber", [row["id"]])


async def disable_subscriber(
    services: Services, actor: Principal, subscriber_id: int, body: DisableRequest
) -> SubscriberOut:
    """Deny every playback check; subscriptions are kept. 409 when already disabled."""
    actor.require("subscriber")
    return await _set_disabled(services, actor, subscriber_id, True, body.reason)


async def enable_subscriber(services: Services, actor: Principal, subscriber_id: int) -> SubscriberOut:
    """Allow playback again. 409 when not disabled."""
    actor.require("subscriber")
    return await _set_disabled(services, actor, subscriber_id, False, None)


async def reset_playback_token(services: Services, actor: Principal, subscriber_id: int) -> SubscriberOut:
    """Issue a new playback token; the gateway refuses the old one from its next check."""
    actor.require("subscriber")
    async with services.db.acquire() as conn, conn.transaction():
        row = _found(await conn.fetchrow(_RESET_TOKEN, actor.portal_id, subscriber_id))
        await _record(conn, actor, "resetPlaybackToken", row, audit(row))
        await entitlements.changed(conn, actor.portal_id, "subscriber", [row["id"]])
    return subscriber_out(row, services.tokens)


# The JSON API: decode, call the action, encode.


@api.get("/subscribers", response=SubscriberList)
async def handle_list_subscribers(call: Call[None, SubscribersQuery]) -> SubscriberList:
    """The portal's subscribers, oldest first; ``phone``/``phoneCountryCode`` find one by number."""
    return await list_subscribers(call.services, call.caller, call.query)


@api.get("/subscribers/{id}", response=SubscriberOut)
async def handle_get_subscriber(call: Call[None, None]) -> SubscriberOut:
    """One subscriber, with its explicit packages and current playback token."""
    return await get_subscriber(call.services, call.caller, call.path_id())


@api.post("/subscribers", response=SubscriberOut, permission="subscriber")
async def handle_create_subscriber(call: Call[SubscriberCreate, None]) -> SubscriberOut:
    """Create a subscriber; the phone number must be new to this portal."""
    return await create_subscriber(call.services, call.caller, call.body)


@api.put("/subscribers/{id}", response=SubscriberOut, permission="subscriber")
async def handle_update_subscriber(call: Call[SubscriberUpdate, None]) -> SubscriberOut:
    """Update name, phone or maxSessions; a new phone number signs the subscriber out."""
    return await update_subscriber(call.services, call.caller, call.path_id(), call.body)


@api.delete("/subscribers/{id}", permission="subscriber")
async def handle_delete_subscriber(call: Call[None, None]) -> None:
    """Delete a subscriber: its subscriptions end (each logged), its session history stays."""
    await delete_subscriber(call.services, call.caller, call.path_id())


@api.post("/subscribers/{id}/disable", optional_body=True, response=SubscriberOut, permission="subscriber")
async def handle_disable_subscriber(call: Call[DisableRequest, None]) -> SubscriberOut:
    """Deny every playback check; subscriptions are kept. 409 when already disabled."""
    return await disable_subscriber(call.services, call.caller, call.path_id(), call.body)


@api.post("/subscribers/{id}/enable", response=SubscriberOut, permission="subscriber")
async def handle_enable_subscriber(call: Call[None, None]) -> SubscriberOut:
    """Allow playback again. 409 when not disabled."""
    return await enable_subscriber(call.services, call.caller, call.path_id())


@api.post("/subscribers/{id}/reset_playback_token", response=SubscriberOut, permission="subscriber")
async def handle_reset_playback_token(call: Call[None, None]) -> SubscriberOut:
    """Issue a new playback token; the gateway refuses the old one from its next check."""
    return await reset_playback_token(call.services, call.caller, call.path_id())


def _list_where(portal_id: int, query: SubscribersQuery, after: int | None) -> Where:
    where = Where()
    where.add("s.portal_id = {}", portal_id)
    if after is not None:
        where.add("s.id > {}", after)
    _filters(query)(where)
    return where


def _filters(query: SubscribersQuery) -> subscriber_search.Filters:
    """The exact-match filters of ``query`` (400 for a ``packageId`` that is not an id)."""
    package_ids = decode_ids([query.packageId], "packageId") if query.packageId is not None else []

    def add(where: Where) -> None:
        if query.phone is not None:
            where.add("s.phone = {}", query.phone)
        if query.phoneCountryCode is not None:
            where.add("s.phone_country_code = {}", query.phoneCountryCode)
        if query.disabled is not None:
            where.add("s.disabled = {}", query.disabled)
        for package_id in package_ids:
            where.add(
                "EXISTS (SELECT 1 FROM subscriptions x WHERE x.subscriber_id = s.id AND x.package_id = {})",
                package_id,
            )

    return add


async def _search_page(
    services: Services, portal_id: int, query: SubscribersQuery, search: subscriber_search.Search
) -> tuple[list[asyncpg.Record], str | None]:
    after = services.cursors.decode("subscribers", query.cursor, (int,))
    filters = _filters(query)
    start = after[0] if after else FIRST_ID
    async with services.db.acquire() as conn:
        # One snapshot: a row deleted between finding and reading it cannot cut the page short.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            found = await subscriber_search.matching_ids(
                conn, portal_id, start, query.limit + 1, search, filters
            )
            rows = await conn.fetch(_BY_IDS, portal_id, found)
    page, cursor = services.cursors.page(rows, query.limit, "subscribers", lambda r: (r["id"],))
    return list(page), cursor


def _merged(body: SubscriberUpdate, current: asyncpg.Record) -> dict[str, Any]:
    merged = {}
    for field, column in _COLUMN.items():
        sent = getattr(body, field)
        merged[field] = current[column] if sent is UNSET else sent
    return merged


async def _set_disabled(
    services: Services, actor: Principal, subscriber_id: int, disabled: bool, reason: str | None
) -> SubscriberOut:
    async with services.db.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(_SET_DISABLED, actor.portal_id, subscriber_id, disabled, reason)
        if row is None:
            _found(await conn.fetchrow(_GET, actor.portal_id, subscriber_id))
            state = "disabled" if disabled else "enabled"
            raise Conflict(f"the subscriber is already {state}", code=f"already_{state}")
        kind = "disableSubscriber" if disabled else "enableSubscriber"
        payload = {**audit(row), "reason": reason} if disabled else audit(row)
        await _record(conn, actor, kind, row, payload)
        await entitlements.changed(conn, actor.portal_id, "subscriber", [row["id"]])
    return subscriber_out(row, services.tokens)


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
    conn: asyncpg.Connection, actor: Principal, kind: str, row: asyncpg.Record, payload: dict[str, Any]
) -> None:
    await operations.record(
        conn, actor.portal_id, kind, actor.actor, subscriber_id=row["id"], payload=payload
    )

"""``/play-sessions``: who watched what, when and from where (docs/api.md).

The gateway writes these rows; this module reads them and terminates sessions (the
row closed with a reason, the slot freed in Redis, the gateways told through the
entitlement signal, :func:`terminate_play_session`).  A session's id is
made when the session opens, so ``opened_at`` filters also bound the id and only
the monthly partitions concerned are read (see docs/subscribers.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Annotated

import asyncpg
import msgspec
from aiohttp import web
from msgspec import Meta
from redis.exceptions import RedisError

from catena import entitlements, ids, operations
from catena.errors import Conflict, NotFound
from catena.portals import load_settings
from catena.redis import RedisPyCommands, Script, first_error
from catena.redis_keys import KeySpace

from . import csv_export
from ._filters import MAX_ID, Where, add_id_filter, decode_ids, fetch_page, id_at
from .auth import authenticate_manager
from .principal import Principal
from .routing import Api, Call
from .schema import NO_NUL_TEXT, Request, Response, TextId
from .services import Services

api = Api("Play sessions", auth=authenticate_manager)
log = logging.getLogger("admin_api.play_sessions")

# Contract with the gateway: a session's id is made within this long of its opened_at.
ID_SLACK_SECONDS = 86400
UnixSeconds = Annotated[int, Meta(ge=0, le=253402300799, description="Unix seconds", examples=[1714233600])]


class SessionOut(Response):
    sessionId: TextId
    subscriberId: TextId | None
    channelId: TextId | None
    channelName: str
    programId: TextId | None
    portalId: TextId
    openedAt: int
    closedAt: int | None
    updatedAt: int
    active: bool
    bytes: int
    ip: str | None
    userAgent: str | None
    token: str | None
    deviceId: str | None
    # Why it was closed: the operator's reason for a terminated session, else null.
    closeReason: str | None


class TerminateRequest(Request):
    reason: (
        Annotated[
            str,
            Meta(
                max_length=200, pattern=r"^[^\x00]*$", description=NO_NUL_TEXT, examples=["account sharing"]
            ),
        ]
        | None
    ) = None


class SessionList(Response):
    sessions: list[SessionOut]
    next: str | None = None


class SessionsQuery(msgspec.Struct, kw_only=True):
    """Repeated parameters mean OR; different parameters combine with AND."""

    subscriberId: list[str] | None = None
    channelId: list[str] | None = None
    active: bool | None = None
    opened_at_gte: UnixSeconds | None = None
    opened_at_lt: UnixSeconds | None = None
    cursor: str | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100


_COLUMNS = """id, portal_id, subscriber_id, channel_id, channel_name, program_id,
       floor(extract(epoch FROM opened_at))::bigint AS opened_at,
       floor(extract(epoch FROM closed_at))::bigint AS closed_at,
       floor(extract(epoch FROM updated_at))::bigint AS updated_at,
       active, bytes, ip, user_agent, token, device_id, close_reason"""
_LIST = f"SELECT {_COLUMNS} FROM play_sessions WHERE {{where}} ORDER BY id DESC LIMIT {{limit}}"
# A CSV export: every match, newest first, times as whole UTC seconds (ISO 8601 in the file).
_iso, _quoted = csv_export.ISO_UTC.format, csv_export.QUOTED.format
_EXPORT = f"""
SELECT id, subscriber_id, channel_id, {_quoted("channel_name")} AS channel_name, program_id,
       {_iso("opened_at")} AS opened_at, {_iso("closed_at")} AS closed_at, {_iso("updated_at")} AS updated_at,
       active, bytes, {_quoted("ip")} AS ip, {_quoted("user_agent")} AS user_agent,
       {_quoted("token")} AS token, {_quoted("device_id")} AS device_id,
       {_quoted("close_reason")} AS close_reason
FROM play_sessions WHERE {{where}} ORDER BY id DESC
"""
_encode = ids.encode


def session_out(row: asyncpg.Record, portal: str | None = None) -> SessionOut:
    """The session object; ``portal`` is the portal's text id when the caller has it."""
    subscriber, channel, program = row["subscriber_id"], row["channel_id"], row["program_id"]
    return SessionOut(
        sessionId=_encode(row["id"]),
        subscriberId=None if subscriber is None else _encode(subscriber),
        channelId=None if channel is None else _encode(channel),
        channelName=row["channel_name"],
        programId=None if program is None else _encode(program),
        portalId=portal or _encode(row["portal_id"]),
        openedAt=row["opened_at"],
        closedAt=row["closed_at"],
        updatedAt=row["updated_at"],
        active=row["active"],
        bytes=row["bytes"],
        ip=row["ip"],
        userAgent=row["user_agent"],
        token=row["token"],
        deviceId=row["device_id"],
        closeReason=row["close_reason"],
    )


# CSV columns: the JSON object's fields, in its order.
CSV_HEADER = SessionOut.__struct_fields__


def sessions_out(rows: Sequence[asyncpg.Record], portal: str) -> list[SessionOut]:
    """A page of sessions of one portal: each id column encoded in one call."""
    session_ids = ids.encode_many([r["id"] for r in rows])
    subscribers = ids.encode_optional_many([r["subscriber_id"] for r in rows])
    channels = ids.encode_optional_many([r["channel_id"] for r in rows])
    programs = ids.encode_optional_many([r["program_id"] for r in rows])
    out = SessionOut
    return [
        out(sessionId=i, subscriberId=s, channelId=c, channelName=r["channel_name"], programId=p,
            portalId=portal, openedAt=r["opened_at"], closedAt=r["closed_at"], updatedAt=r["updated_at"],
            active=r["active"], bytes=r["bytes"], ip=r["ip"], userAgent=r["user_agent"], token=r["token"],
            deviceId=r["device_id"], closeReason=r["close_reason"])
        for i, s, c, p, r in zip(session_ids, subscribers, channels, programs, rows, strict=True)
    ]  # fmt: skip


def _csv_lines(portal: str) -> csv_export.Convert:
    def convert(rows: list[asyncpg.Record]) -> csv_export.Lines:
        session_ids = ids.encode_many([r["id"] for r in rows])
        subscribers = ids.encode_optional_many([r["subscriber_id"] for r in rows])
        channels = ids.encode_optional_many([r["channel_id"] for r in rows])
        programs = ids.encode_optional_many([r["program_id"] for r in rows])
        return [
            f"{i},{s or ''},{c or ''},{r['channel_name']},{p or ''},{portal},{r['opened_at']},"
            f"{r['closed_at'] or ''},{r['updated_at']},{'true' if r['active'] else 'false'},{r['bytes']},"
            f"{r['ip'] or ''},{r['user_agent'] or ''},{r['token'] or ''},{r['device_id'] or ''},"
            f"{r['close_reason'] or ''}"
            for i, s, c, p, r in zip(session_ids, subscribers, channels, programs, rows, strict=True)
        ]

    return convert


# Actions: what the JSON handlers below and the console call.


async def list_play_sessions(services: Services, actor: Principal, query: SessionsQuery) -> SessionList:
    """Play sessions, newest first."""
    rows, cursor = await fetch_page(
        services, "play-sessions", _LIST, query, lambda before: _where(actor.portal_id, query, before)
    )
    return SessionList(sessions=sessions_out(rows, _encode(actor.portal_id)), next=cursor)


async def export_play_sessions(
    services: Services, actor: Principal, query: SessionsQuery
) -> csv_export.CsvExport:
    """Every play session the filters match, newest first, as CSV; ``cursor`` starts after a page."""
    before = services.cursors.decode("play-sessions", query.cursor, (int,))
    where = _where(actor.portal_id, query, before[0] if before else None)
    batches = csv_export.cursor_batches(
        services, _EXPORT.format(where=where.sql), where.args, _csv_lines(_encode(actor.portal_id))
    )
    return csv_export.CsvExport(csv_export.filename("play-sessions"), CSV_HEADER, batches)


# Closes an open session of the portal; nothing when it is missing or closed already.
_TERMINATE = f"""
UPDATE play_sessions
SET active = false, swept = false, closed_at = greatest(now(), opened_at), terminated_at = now(),
    close_reason = coalesce($3, 'terminated')
WHERE portal_id = $1 AND id = $2 AND active
RETURNING {_COLUMNS}, flussonic_id
"""
_EXISTS = "SELECT 1 FROM play_sessions WHERE portal_id = $1 AND id = $2"
_ONE = f"SELECT {_COLUMNS} FROM play_sessions WHERE portal_id = $1 AND id = $2"
_AUTH_DURATION = "SELECT settings FROM portals WHERE id = $1"

# KEYS: the subscriber's counted, opened and evicted keys (one hash tag, one slot);
# ARGV: session, now (ms), how long to refuse it at least (ms).  The session's slot
# is given back and the session is kept with the evicted ones, which the gateways'
# session script refuses (until its old expiry, or at least the hold).
_FREE_SLOT = Script(
    """
local expiry = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0')
local hold = tonumber(ARGV[2]) + tonumber(ARGV[3])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], 'GT', math.max(expiry, hold), ARGV[1])
local top = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[3], top[2])
return 1
"""
)
# The gateway's default grace (CATENA_AUTH_SESSION_GRACE): a terminated session is
# refused in Redis for at least authDuration plus this.
REFUSE_GRACE_MS = 60_000
# Past this the answer goes out anyway (the gateways free the slot themselves).
REDIS_TIMEOUT = 2.0


async def get_play_session(services: Services, actor: Principal, session_id: int) -> SessionOut:
    """One session of the portal (404 for another portal's)."""
    async with services.db.acquire() as conn:
        row = await conn.fetchrow(_ONE, actor.portal_id, session_id)
    if row is None:
        raise NotFound("no such play session", field="id")
    return session_out(row, _encode(actor.portal_id))


async def terminate_play_session(
    services: Services, actor: Principal, session_id: int, body: TerminateRequest
) -> SessionOut:
    """End an open session: the gateways refuse it from their next check, its slot is freed.

    404 for a session of another portal, 409 for one already closed (nothing changes).
    """
    actor.require("subscriber")
    async with services.db.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(_TERMINATE, actor.portal_id, session_id, body.reason)
        if row is None:
            if await conn.fetchval(_EXISTS, actor.portal_id, session_id) is None:
                raise NotFound("no such play session", field="id")
            raise Conflict("the play session is already closed", code="already_closed")
        subscriber = row["subscriber_id"]
        await operations.record(
            conn,
            actor.portal_id,
            "terminatePlaySession",
            actor.actor,
            subscriber_id=subscriber,
            payload={
                "sessionId": _encode(row["id"]),
                "channelName": row["channel_name"],
                "reason": body.reason,
            },
        )
        subscribers = [] if subscriber is None else [subscriber]
        await entitlements.changed(conn, actor.portal_id, "session", subscribers, [row["flussonic_id"]])
        settings = load_settings(await conn.fetchval(_AUTH_DURATION, actor.portal_id))
    if subscriber is not None:
        await _free_slot(services, subscriber, row["flussonic_id"], settings.authDuration * 1000)
    return session_out(row, _encode(actor.portal_id))


async def _free_slot(services: Services, subscriber_id: int, session: str, auth_ms: int) -> None:
    """Give the session's slot back in Redis now; the gateways do it too when Redis cannot be told."""
    space = KeySpace(services.settings.redis_prefix)
    call = _FREE_SLOT.call(
        space.subscriber_slot(subscriber_id),
        list(space.sessions(subscriber_id)),
        [session, int(time.time() * 1000), auth_ms + REFUSE_GRACE_MS],
    )
    try:
        (reply,) = await _FREE_SLOT.run(RedisPyCommands(services.redis, timeout=REDIS_TIMEOUT), [call])
        first_error([reply])
    except (RedisError, OSError, TimeoutError) as exc:
        # The row is closed and the signal sent: every gateway gives the slot back itself.
        log.warning("terminated session's slot not freed in Redis", extra={"error": str(exc)})


# The JSON API: decode, call the action, encode.


@api.get("/play-sessions", response=SessionList, csv=True, description=csv_export.DESCRIPTION)
async def handle_list_play_sessions(call: Call[None, SessionsQuery]) -> SessionList | web.StreamResponse:
    """Play sessions, newest first."""
    if call.csv:
        export = await export_play_sessions(call.services, call.caller, call.query)
        return await csv_export.stream(call.request, export)
    return await list_play_sessions(call.services, call.caller, call.query)


def _where(portal_id: int, query: SessionsQuery, before: int | None) -> Where:
    where = Where()
    where.add("portal_id = {}", portal_id)
    # Inclusive lower bound: PostgreSQL prunes ranges by bounds, not knowing ids are integers.
    lower, upper = 0, MAX_ID if before is None else before
    if query.opened_at_gte is not None:
        lower = id_at((query.opened_at_gte - ID_SLACK_SECONDS) * 1000)
        where.add("opened_at >= to_timestamp({}::bigint)", query.opened_at_gte)
    if query.opened_at_lt is not None:
        upper = min(upper, id_at((query.opened_at_lt + ID_SLACK_SECONDS) * 1000))
        where.add("opened_at < to_timestamp({}::bigint)", query.opened_at_lt)
    where.add("id >= {} AND id < {}", lower, upper)
    if query.subscriberId:
        add_id_filter(where, "subscriber_id", decode_ids(query.subscriberId, "subscriberId"))
    if query.channelId:
        add_id_filter(where, "channel_id", decode_ids(query.channelId, "channelId"))
    if query.active is not None:
        where.add("active = {}", query.active)
    return where


@api.post("/play-sessions/{id}/terminate", optional_body=True, response=SessionOut, permission="subscriber")
async def handle_terminate_play_session(call: Call[TerminateRequest, None]) -> SessionOut:
    """End an open session: every gateway refuses it from its next check, its slot is freed
    at once. 404 for a session of another portal, 409 for one already closed."""
    return await terminate_play_session(call.services, call.caller, call.path_id(), call.body)

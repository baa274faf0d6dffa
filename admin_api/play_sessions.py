"""``/play-sessions``: who watched what, when and from where (docs/api.md).

The gateway writes these rows; this module only reads them.  A session's id is
made when the session opens, so ``opened_at`` filters also bound the id and only
the monthly partitions concerned are read (see docs/subscribers.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import asyncpg
import msgspec
from aiohttp import web
from msgspec import Meta

from catena import ids

from . import csv_export
from ._filters import MAX_ID, Where, add_id_filter, decode_ids, fetch_page, id_at
from .auth import authenticate_manager
from .principal import Principal
from .routing import Api, Call
from .schema import Response, TextId
from .services import Services

api = Api("Play sessions", auth=authenticate_manager)

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
       active, bytes, ip, user_agent, token, device_id"""
_LIST = f"SELECT {_COLUMNS} FROM play_sessions WHERE {{where}} ORDER BY id DESC LIMIT {{limit}}"
# A CSV export: every match, newest first, times as whole UTC seconds (ISO 8601 in the file).
_iso, _quoted = csv_export.ISO_UTC.format, csv_export.QUOTED.format
_EXPORT = f"""
SELECT id, subscriber_id, channel_id, {_quoted("channel_name")} AS channel_name, program_id,
       {_iso("opened_at")} AS opened_at, {_iso("closed_at")} AS closed_at, {_iso("updated_at")} AS updated_at,
       active, bytes, {_quoted("ip")} AS ip, {_quoted("user_agent")} AS user_agent,
       {_quoted("token")} AS token, {_quoted("device_id")} AS device_id
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
            deviceId=r["device_id"])
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
            f"{r['ip'] or ''},{r['user_agent'] or ''},{r['token'] or ''},{r['device_id'] or ''}"
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

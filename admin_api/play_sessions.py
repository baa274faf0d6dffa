"""``/play-sessions``: who watched what, when and from where (docs/api.md).

The gateway writes these rows; this module only reads them.  A session's id is
made when the session opens, so ``opened_at`` filters also bound the id and only
the monthly partitions concerned are read (see docs/subscribers.md).
"""

from __future__ import annotations

from typing import Annotated

import asyncpg
import msgspec
from msgspec import Meta

from ._filters import MAX_ID, Where, decode_ids, fetch_page, id_at
from .auth import authenticate_manager
from .routing import Api, Call
from .schema import Response, TextId, opt_text_id, text_id

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


def session_out(row: asyncpg.Record) -> SessionOut:
    return SessionOut(
        sessionId=text_id(row["id"]),
        subscriberId=opt_text_id(row["subscriber_id"]),
        channelId=opt_text_id(row["channel_id"]),
        channelName=row["channel_name"],
        programId=opt_text_id(row["program_id"]),
        portalId=text_id(row["portal_id"]),
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


@api.get("/play-sessions", query=SessionsQuery, response=SessionList)
async def list_play_sessions(call: Call) -> SessionList:
    """Play sessions, newest first."""
    query: SessionsQuery = call.query
    rows, cursor = await fetch_page(
        call.services, "play-sessions", _LIST, query, lambda before: _where(call.portal_id, query, before)
    )
    return SessionList(sessions=[session_out(r) for r in rows], next=cursor)


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
        where.add("subscriber_id = ANY({}::bigint[])", decode_ids(query.subscriberId, "subscriberId"))
    if query.channelId:
        where.add("channel_id = ANY({}::bigint[])", decode_ids(query.channelId, "channelId"))
    if query.active is not None:
        where.add("active = {}", query.active)
    return where

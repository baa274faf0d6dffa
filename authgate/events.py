"""``POST /events``: Flussonic's event sink (docs/authgate.md).

The body is a JSON array of events or one event object.  ``play_opened`` and
``play_started`` open the session (if the gateway has not already), ``play_updated``
moves ``updatedAt`` and ``bytes`` on, ``play_closed`` closes it and gives its slot
back to the session limiter.  Other events are ignored.  An event is attributed to
a session this process knows, else through its token, else its ``user_id`` (the
``X-UserId`` the gateway sent), else a session row already in PostgreSQL; one that
cannot be attributed, or lacks ``event``/``id``, is rejected and counted, never an
error for the whole batch.  Redelivered events change nothing: the row merge is
monotonic, and ``event_id`` + ``id`` pairs already seen are counted as duplicates.

The answer is ``200`` with the counts.  It is ``400`` only for a body that is not a
JSON event or array of events, and ``503`` when an event can be attributed only
through PostgreSQL while PostgreSQL is away (so that Flussonic sends it again).
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import msgspec

from catena import ids

from . import responses
from .caches import TwoGenerationCache
from .gate import Gate
from .loader import PG_TIMEOUT, Unavailable
from .query import text, valid_session_id
from .sessions import KnownSession

OPENING = frozenset(("play_opened", "play_started"))
PLAY_EVENTS = frozenset((*OPENING, "play_updated", "play_closed"))
MAX_ERRORS = 20
SEEN_EVENTS = 200_000
# Event times further from the gateway's clock than this are not believed.
MAX_SKEW_MS = 7 * 86400 * 1000

_KNOWN_ROW = """
SELECT m.portal_id, ps.subscriber_id, ps.channel_id, ps.channel_name
FROM play_session_ids m LEFT JOIN play_sessions ps ON ps.id = m.id
WHERE m.flussonic_id = $1
"""

Number = int | float


class Event(msgspec.Struct, kw_only=True):
    """The fields of an event the gateway uses; every other field is ignored."""

    event: str
    id: str
    media: str | None = None
    token: str | None = None
    user_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    query_string: str | None = None
    proto: str | None = None
    server: str | None = None
    bytes: Number | None = None
    closed_at: Number | None = None
    utc_ms: Number | None = None
    event_id: str | int | None = None


class EventError(msgspec.Struct):
    index: int
    message: str


class EventsResult(msgspec.Struct):
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    ignored: int = 0
    errors: list[EventError] = msgspec.field(default_factory=list)


class Rejected(Exception):
    pass


_result_encoder = msgspec.json.Encoder()


class EventSink:
    """Applies deliveries of Flussonic's event sink with the gate's parts."""

    def __init__(self, gate: Gate) -> None:
        self.decider = gate.decider
        self.loader = gate.loader
        self.limiter = gate.limiter
        self.recorder = gate.recorder
        self.sessions = gate.sessions
        self.metrics = gate.metrics
        self.seen: TwoGenerationCache[tuple[str, str], bool] = TwoGenerationCache(SEEN_EVENTS)

    async def ingest(self, body: bytes) -> bytes:
        """The HTTP answer to one delivery."""
        try:
            raw = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            return responses.error(400, "bad_request", f"the body is not JSON: {exc}")
        except RecursionError:
            return responses.error(400, "bad_request", "the body is nested too deeply to be events")
        if isinstance(raw, dict):
            raw = [raw]
        if not isinstance(raw, list):
            return responses.error(400, "bad_request", "expected an event object or an array of events")
        result = EventsResult()
        try:
            for index, item in enumerate(raw):
                await self._one(index, item, result)
        except Unavailable:
            return responses.error(503, "unavailable", "cannot attribute an event while PostgreSQL is away")
        self._count(result)
        return responses.encode(200, _result_encoder.encode(result))

    def _count(self, result: EventsResult) -> None:
        self.metrics.events_accepted += result.accepted
        self.metrics.events_rejected += result.rejected
        self.metrics.events_duplicate += result.duplicates
        self.metrics.events_ignored += result.ignored

    async def _one(self, index: int, item: Any, result: EventsResult) -> None:
        if isinstance(item, dict) and isinstance(item.get("event"), str) and item["event"] not in PLAY_EVENTS:
            result.ignored += 1  # other kinds need no fields of ours to be ignored
            return
        try:
            event = msgspec.convert(item, Event, strict=False)
            seen_key = (str(event.event_id), event.id) if event.event_id is not None else None
            if seen_key is not None and self.seen.get(seen_key):
                result.duplicates += 1
                return
            await self._apply(event)
        except (msgspec.ValidationError, Rejected) as exc:
            result.rejected += 1
            if len(result.errors) < MAX_ERRORS:
                result.errors.append(EventError(index, str(exc)))
            return
        if seen_key is not None:
            self.seen.put(seen_key, True)
        result.accepted += 1

    async def _apply(self, event: Event) -> None:
        key = event.id.encode("utf-8", "replace")
        if not valid_session_id(key):
            raise Rejected("id must be up to 128 printable ASCII characters")
        now_ms = int(time.time() * 1000)
        session = await self._session(event, key, now_ms)
        if event.ip and session.ip is None:
            session.ip = text(event.ip.encode(), 64)
        if event.user_agent and session.user_agent is None:
            session.user_agent = text(event.user_agent.encode(), 1024)
        if event.proto and session.proto is None:
            session.proto = text(event.proto.encode(), 32)
        if event.server:
            session.server = text(event.server.encode(), 256)
        if event.bytes is not None and 0 <= event.bytes < 2**63 and event.bytes > session.bytes:
            session.bytes = int(event.bytes)
        session.updated_ms = max(session.updated_ms, now_ms)
        if event.event == "play_closed":
            self._close(session, event, now_ms)
        self.recorder.touch(session)

    def _close(self, session: KnownSession, event: Event, now_ms: int) -> None:
        if session.closed_ms is None:
            at = event.closed_at or event.utc_ms
            closed = int(at) if at is not None and now_ms - MAX_SKEW_MS < at <= now_ms else now_ms
            session.closed_ms = max(closed, session.opened_ms)
        self.limiter.release(session)

    async def _session(self, event: Event, key: bytes, now_ms: int) -> KnownSession:
        session = self.sessions.get(key)
        if session is not None:
            return session
        portal_id, subscriber_id = await self._attribute(event, key)
        session = KnownSession(key, portal_id, subscriber_id, now_ms)
        session.token = text(event.token.encode(), 4096) if event.token else None
        await self._name_channel(session, event)
        return self.sessions.add(session)

    async def _attribute(self, event: Event, key: bytes) -> tuple[int, int | None]:
        if event.token:
            token = event.token.encode()
            info = self.decider.caches.tokens.get(token) or self.decider.verify(token)
            if info.reason is None:
                return info.portal_id, info.subscriber_id
        subscriber_id = ids.decode(event.user_id) if event.user_id else None
        if subscriber_id is not None:
            portal_id = await self.loader.portal_of(subscriber_id)
            if portal_id is not None:
                return portal_id, subscriber_id
        row = await self._known_row(key)
        if row is None:
            raise Rejected("cannot attribute the event: no valid token or user_id, and no such session")
        return row["portal_id"], row["subscriber_id"]

    async def _known_row(self, key: bytes) -> asyncpg.Record | None:
        pool = self.loader.pool()
        if pool is None or not self.loader.health.pg_up:
            raise Unavailable("PostgreSQL is unreachable")
        try:
            async with pool.acquire(timeout=PG_TIMEOUT) as conn:
                row: asyncpg.Record | None = await conn.fetchrow(_KNOWN_ROW, key.decode("ascii"))
                return row
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            self.loader.health.set_pg(False)
            raise Unavailable("PostgreSQL is unreachable") from None

    async def _name_channel(self, session: KnownSession, event: Event) -> None:
        media = text(event.media.encode(), 256) if event.media else None
        if not media:
            return
        session.channel_name = media
        entry = await self.loader.portal_entry(session.portal_id)
        channel = entry.channels.get(media.encode()) if entry is not None else None
        if channel is not None:
            session.channel_id = channel.id

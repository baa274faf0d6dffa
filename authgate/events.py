"""``POST /events``: Flussonic's event sink (docs/authgate.md).

The body is a JSON array of events or one event object.  ``play_opened`` and
``play_started`` open the session (if the gateway has not already), ``play_updated``
moves ``updatedAt`` and ``bytes`` on, ``play_closed`` closes it and gives its slot
back to the session limiter.  Other events are ignored.

An event changes only the session the gateway admitted under its ``id``: the one
this process holds, else the one Redis counts for the event's subscriber (its
token's, or its ``user_id`` — the ``X-UserId`` the gateway sent), else the session
row already in PostgreSQL.  An event whose token or ``user_id`` names another
portal or subscriber than that session's is rejected and counted
(``events_foreign``), and one for an id the gateway never admitted is rejected:
nothing is closed, re-attributed or released.  An event for a session admitted but
not recorded (a gateway killed before its flush) creates its row — the record
heals itself.  One that lacks ``event``/``id`` is rejected and counted too, never
an error for the whole batch.  Redelivered events change nothing: the row merge is
monotonic, and ``event_id`` + ``id`` pairs already seen are counted as duplicates.

The answer is ``200`` with the counts.  It is ``400`` only for a body that is not a
JSON event or array of events, and ``503`` when an event's session can be found
only through a PostgreSQL or Redis that is away (so that Flussonic sends it again).
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import msgspec

from catena import ids
from catena.redis_keys import KeySpace

from . import responses
from .caches import TwoGenerationCache
from .gate import Gate
from .loader import PG_TIMEOUT, Unavailable
from .query import text, valid_session_id
from .redis_pipe import Pipe
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
    opened_at: Number | None = None
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


class Foreign(Rejected):
    """The event names another portal or subscriber than the session admitted under its id."""


class Claim(msgspec.Struct):
    """Whom an event says its session belongs to (``None``: it does not say)."""

    portal_id: int | None = None
    subscriber_id: int | None = None


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
        self.pipe: Pipe = gate.limiter.pipe
        self.space: KeySpace = gate.limiter.space
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
            if isinstance(exc, Foreign):
                self.metrics.events_foreign += 1
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
        claim = self._claim(event)
        session = self.sessions.get(key)
        if session is not None:
            _check_owner(claim, session.portal_id, session.subscriber_id)
            return session
        portal_id, subscriber_id = await self._admitted(claim, key)
        session = KnownSession(key, portal_id, subscriber_id, now_ms)
        # A session admitted but never recorded (its gateway was killed before the
        # flush): the row the event makes opens when Flussonic says it did.
        if event.opened_at is not None and now_ms - MAX_SKEW_MS < event.opened_at <= now_ms:
            session.opened_ms = int(event.opened_at)
        session.token = text(event.token.encode(), 4096) if event.token else None
        await self._name_channel(session, event)
        return self.sessions.add(session)

    def _claim(self, event: Event) -> Claim:
        """Whom the event's token and ``user_id`` name; rejected when they are invalid or disagree."""
        claim = Claim()
        if event.token:
            token = event.token.encode()
            info = self.decider.caches.tokens.get(token) or self.decider.verify(token)
            if info.reason is not None:
                raise Rejected("the event's token is not valid")
            claim.portal_id, claim.subscriber_id = info.portal_id, info.subscriber_id
        if event.user_id:
            subscriber_id = ids.decode(event.user_id)
            if subscriber_id is None:
                raise Rejected("user_id is not a subscriber id")
            if claim.subscriber_id not in (None, subscriber_id):
                raise Foreign("the event's user_id and token name different subscribers")
            claim.subscriber_id = subscriber_id
        return claim

    async def _admitted(self, claim: Claim, key: bytes) -> tuple[int, int | None]:
        """The portal and subscriber the gateway admitted session ``key`` for.

        Redis counts an admitted session under its subscriber until it closes or
        expires (whichever gateway admitted it, also one killed before its flush);
        PostgreSQL has its row once a batch carried it.  An id found in neither was
        never admitted for anyone the event names: nothing is made of it.
        """
        redis_failed = False
        subscriber_id = claim.subscriber_id
        if subscriber_id is not None:
            counted = await self._counted(subscriber_id, key)
            if counted:
                portal_id = claim.portal_id
                if portal_id is None:
                    portal_id = await self.loader.portal_of(subscriber_id)
                if portal_id is not None:
                    return portal_id, subscriber_id
            redis_failed = counted is None
        row = await self._known_row(key)
        if row is not None:
            _check_owner(claim, row["portal_id"], row["subscriber_id"])
            return row["portal_id"], row["subscriber_id"]
        if redis_failed:
            raise Unavailable("Redis is unreachable")
        raise Rejected("no session was admitted under this id for the event's subscriber")

    async def _counted(self, subscriber_id: int, key: bytes) -> bool | None:
        """Whether Redis counts session ``key`` for the subscriber (``None``: Redis did not answer)."""
        if not self.loader.health.redis_up:
            return None
        counted = self.space.sessions(subscriber_id)[0]
        slot = self.space.subscriber_slot(subscriber_id)
        (reply,) = await self.pipe.run([(slot, ("ZSCORE", counted, key))])
        if isinstance(reply, Exception):
            return None
        return reply is not None

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


def _check_owner(claim: Claim, portal_id: int, subscriber_id: int | None) -> None:
    """Reject an event that names another portal or subscriber than its session's."""
    if claim.portal_id is not None and claim.portal_id != portal_id:
        raise Foreign("the session under this id belongs to another portal")
    if claim.subscriber_id is not None and subscriber_id is not None and claim.subscriber_id != subscriber_id:
        raise Foreign("the session under this id belongs to another subscriber")

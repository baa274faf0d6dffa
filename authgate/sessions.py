"""The play sessions one gateway process knows: what the limiter and the recorder share.

A :class:`KnownSession` is made the first time this process hears of a Flussonic
session (an auth check or an event) and lives until it is closed or has not been
refreshed for ``X-AuthDuration`` + grace.  It carries what the play-session row
needs and what the session limiter knows about the session's slot in Redis.
"""

from __future__ import annotations

from typing import Any

from catena import ids

from .query import opening_details


class KnownSession:
    """One viewing, keyed by Flussonic's session id."""

    __slots__ = (
        "auth_ms",
        "bytes",
        "channel_id",
        "channel_name",
        "closed_ms",
        "counted",
        "device_id",
        "evicted",
        "expires_ms",
        "flussonic_id",
        "grant",
        "ip",
        "key",
        "opened_ms",
        "opening",
        "portal_id",
        "proto",
        "refused_by",
        "refused_until",
        "row_id",
        "server",
        "subscriber_id",
        "token",
        "updated_ms",
        "user_agent",
        "written_ms",
    )

    def __init__(self, key: bytes, portal_id: int, subscriber_id: int | None, now_ms: int) -> None:
        self.key = key
        self.flussonic_id = key.decode("ascii")
        # The row id this process proposes; the first batch to reach PostgreSQL wins
        # (table play_session_ids), so every process writes to the same row.
        self.row_id = ids.new_id()
        self.portal_id = portal_id
        self.subscriber_id = subscriber_id
        self.channel_id: int | None = None
        self.channel_name = ""
        self.opened_ms = now_ms
        self.updated_ms = now_ms
        # When the session's row was last built for a batch (0: never).
        self.written_ms = 0
        self.closed_ms: int | None = None
        self.bytes = 0
        self.ip: str | None = None
        self.user_agent: str | None = None
        self.token: str | None = None
        self.device_id: str | None = None
        self.proto: str | None = None
        self.server: str | None = None
        # The first check's query fields, until the row's text fields are taken from them.
        self.opening: dict[bytes, bytes] | None = None
        # Session limiting: whether Redis counts this session, until when, and
        # the X-AuthDuration in ms that each refresh extends it by.
        self.counted = False
        self.evicted = False
        # The last allowed check, for answering its repeats (decision.Grant).
        self.grant: Any = None
        self.expires_ms = 0
        # Refused for the limit: until when a repeat is refused from memory, and the
        # subscriber entry that refusal read (a new entry may carry a new limit).
        self.refused_until = 0.0
        self.refused_by: Any = None
        self.auth_ms = 0

    def has_unwritten_progress(self) -> bool:
        # Never written means never recorded (a refused session): nothing to carry.
        return 0 < self.written_ms < self.updated_ms

    def row(self) -> tuple[object, ...]:
        """The session as a row of the recorder's batch table (see recorder.COLUMNS)."""
        if self.opening is not None:
            ip, user_agent, token, device, proto = opening_details(self.opening)
            self.opening = None
            self.ip = self.ip or ip
            self.user_agent = self.user_agent or user_agent
            self.token = self.token or token
            self.device_id = self.device_id or device
            self.proto = self.proto or proto
        self.written_ms = self.updated_ms
        return (
            self.flussonic_id,
            self.row_id,
            self.portal_id,
            self.subscriber_id,
            self.channel_id,
            self.channel_name,
            self.opened_ms,
            self.updated_ms,
            self.closed_ms,
            self.bytes,
            self.ip,
            self.user_agent,
            self.token,
            self.device_id,
            self.proto,
            self.server,
        )


class SessionTable:
    """Every session this process knows, with an index by subscriber."""

    __slots__ = ("by_key", "by_subscriber")

    def __init__(self) -> None:
        self.by_key: dict[bytes, KnownSession] = {}
        self.by_subscriber: dict[int, set[bytes]] = {}

    def __len__(self) -> int:
        return len(self.by_key)

    def get(self, key: bytes) -> KnownSession | None:
        return self.by_key.get(key)

    def add(self, session: KnownSession) -> KnownSession:
        old = self.by_key.get(session.key)
        if old is not None:
            self._unindex(old)
        self.by_key[session.key] = session
        if session.subscriber_id is not None:
            self.by_subscriber.setdefault(session.subscriber_id, set()).add(session.key)
        return session

    def remove(self, session: KnownSession) -> None:
        if self.by_key.get(session.key) is session:
            del self.by_key[session.key]
            self._unindex(session)

    def unwritten(self) -> list[KnownSession]:
        """Recorded sessions whose last progress no batch has carried yet (for the final flush)."""
        return [s for s in self.by_key.values() if s.has_unwritten_progress()]

    def live_count(self, subscriber_id: int, now_ms: int) -> int:
        """Sessions of a subscriber this process counts as open (used while Redis is away)."""
        keys = self.by_subscriber.get(subscriber_id, ())
        return sum(1 for key in keys if _live(self.by_key[key], now_ms))

    def expire(self, now_ms: int, keep_ms: int) -> list[KnownSession]:
        """Forget sessions closed or unrefreshed for ``keep_ms``; return them."""
        stale = [
            s
            for s in self.by_key.values()
            if (s.closed_ms is not None or s.expires_ms < now_ms) and s.updated_ms + keep_ms < now_ms
        ]
        for session in stale:
            self.remove(session)
        return stale

    def _unindex(self, session: KnownSession) -> None:
        if session.subscriber_id is None:
            return
        keys = self.by_subscriber.get(session.subscriber_id)
        if keys is not None:
            keys.discard(session.key)
            if not keys:
                del self.by_subscriber[session.subscriber_id]


def _live(session: KnownSession, now_ms: int) -> bool:
    return session.counted and session.closed_ms is None and session.expires_ms >= now_ms

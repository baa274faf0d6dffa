"""``/auth`` when memory is not enough: load what is missing, admit the session.

The server first asks :meth:`authgate.decision.Decider.decide`; only when that
returns ``None`` does it run :meth:`Gate.check` in a task.  The check loads the
entries (``loader``), decides again with them, and admits the session in Redis
(``session_limiter``) when it is new to this process or its portal evicts.
"""

from __future__ import annotations

import time

from . import responses
from .caches import PortalEntry, SubscriberEntry, TokenInfo
from .decision import Decider, Fields, Grant, device_id, field, text, token_from_qs
from .loader import Loader, Unavailable
from .metrics import Metrics
from .recorder import Recorder
from .session_limiter import OK, SessionLimiter
from .sessions import KnownSession, SessionTable

MAX_TEXT = 1024


class Gate:
    def __init__(
        self, decider: Decider, loader: Loader, limiter: SessionLimiter, recorder: Recorder,
        sessions: SessionTable, metrics: Metrics,
    ) -> None:
        self.decider = decider
        self.loader = loader
        self.limiter = limiter
        self.recorder = recorder
        self.sessions = sessions
        self.metrics = metrics

    async def check(self, fields: Fields, now: float) -> bytes:
        head = self.decider.prelude(fields, now)
        if isinstance(head, bytes):
            return head
        name, key, info = head
        try:
            sub, entry = await self.loader.ensure(info)
        except Unavailable:
            self.metrics.unavailable += 1
            return responses.UNAVAILABLE
        answer = self.decider.evaluate(fields, name, key, info, sub, entry, now)
        if answer is not None:
            return answer
        return await self._admit(fields, name, key, info, sub, entry, now)

    async def _admit(
        self, fields: Fields, name: bytes, key: bytes, info: TokenInfo,
        sub: SubscriberEntry, entry: PortalEntry, now: float,
    ) -> bytes:
        now_ms = int(now * 1000)
        session = self._session(fields, name, key, sub, entry, now_ms)
        code = await self.limiter.admit(session, sub.limit, entry.evict, entry.auth_duration * 1000)
        if code != OK:
            return self.decider.refuse("session_limit", entry)
        self.decider.touch(session, fields, int(time.time() * 1000))
        if not entry.evict:
            session.grant = Grant(fields, info, sub, entry)
        return self.decider.allow(sub, entry, fields, now)

    def _session(
        self, fields: Fields, name: bytes, key: bytes, sub: SubscriberEntry, entry: PortalEntry, now_ms: int
    ) -> KnownSession:
        """The session this check belongs to, made (with what the row needs) if new here."""
        session = self.sessions.get(key)
        if session is not None and session.subscriber_id == sub.id and session.closed_ms is None:
            return session
        session = KnownSession(key, sub.portal_id, sub.id, now_ms)
        channel = entry.channels[name]
        session.channel_id = channel.id
        session.channel_name = channel.name
        session.ip = text(field(fields, b"ip"), 64)
        session.user_agent = text(field(fields, b"user_agent"), MAX_TEXT)
        session.token = text(field(fields, b"token") or token_from_qs(fields), 4096)
        session.device_id = text(device_id(fields), 256)
        session.proto = text(field(fields, b"proto"), 32)
        return self.sessions.add(session)

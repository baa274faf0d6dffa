"""``/auth`` when memory is not enough: load what is missing, admit the session.

The server first asks :meth:`authgate.decision.Decider.decide`.  It answers most
checks itself; when only the session limit is left it returns an
:class:`~authgate.decision.Admission`, which :meth:`Gate.admit` turns into a future
answer resolved when the batched Redis call returns (no task per check); when
entries are missing it returns ``None`` and :meth:`Gate.check` loads them first.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial

from . import responses
from .decision import Admission, Decider, Grant
from .loader import Loader, Unavailable
from .metrics import Metrics
from .query import Fields
from .recorder import Recorder
from .session_limiter import FULL, OK, UNAVAILABLE, SessionLimiter
from .sessions import KnownSession, SessionTable

# The longest session age (Flussonic's ``duration``, seconds) believed: 7 days.
MAX_AGE = 7 * 86400


class Gate:
    def __init__(
        self,
        decider: Decider,
        loader: Loader,
        limiter: SessionLimiter,
        recorder: Recorder,
        sessions: SessionTable,
        metrics: Metrics,
    ) -> None:
        self.decider = decider
        self.loader = loader
        self.limiter = limiter
        self.recorder = recorder
        self.sessions = sessions
        self.metrics = metrics

    async def check(self, fields: Fields, now: float) -> bytes:
        """The full check: load the entries memory lacks, decide, admit."""
        head = self.decider.prelude(fields, now)
        if isinstance(head, bytes):
            return head
        name, key, info = head
        found = self.decider.cached(info)
        try:
            sub, entry = found if found is not None else await self.loader.ensure(info)
        except Unavailable:
            self.metrics.unavailable += 1
            return responses.UNAVAILABLE
        answer = self.decider.evaluate(fields, name, key, info, sub, entry, now)
        if isinstance(answer, bytes):
            return answer
        return await self.admit(answer)

    def admit(self, admission: Admission) -> asyncio.Future[bytes]:
        """The answer once the session is counted (or refused) in Redis."""
        session = self._session(admission)
        entry = admission.entry
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        # Never allowed here yet (new, or refused so far): its row opens when admitted.
        first = not session.counted and session.written_ms == 0 and session.key not in self.recorder.pending
        self.limiter.enqueue(
            session,
            admission.sub.limit,
            entry.evict,
            entry.auth_duration * 1000,
            partial(self._admitted, admission, session, answer, first),
            admission.fields.get(b"request_type") == b"update_session",
        )
        return answer

    def _admitted(
        self,
        admission: Admission,
        session: KnownSession,
        answer: asyncio.Future[bytes],
        first: bool,
        code: int,
    ) -> None:
        if answer.done():
            return
        if code == UNAVAILABLE:
            # Redis cannot count this subscriber's sessions right now (its counts are
            # being rebuilt, or its part of the cluster is away): do not guess.
            self.metrics.unavailable += 1
            answer.set_result(responses.UNAVAILABLE)
            return
        if code == FULL:
            refusal = self.decider.refused_for_limit(session, admission.sub, admission.entry, admission.now)
            answer.set_result(refusal)
            return
        if code != OK:
            answer.set_result(self.decider.refuse("session_limit", admission.entry))
            return
        now_ms = int(time.time() * 1000)
        if first:
            # The row opens now, when Redis counted the session, not when the check
            # arrived: a check can wait for Redis (or be refused and retried) while
            # another session of the subscriber closes and frees the slot, and a row
            # opened at the arrival would overlap that one's.  A re-check of a session
            # new here (admitted by a gateway that died before writing it) opened when
            # Flussonic says it did.
            session.opened_ms = now_ms
            if admission.fields.get(b"request_type") == b"update_session":
                session.opened_ms -= _age_ms(admission.fields)
        self.decider.touch(session, admission.fields, now_ms)
        if not admission.entry.evict:
            session.grant = Grant(admission.fields, admission.info, admission.sub, admission.entry)
        answer.set_result(self.decider.allow(admission.sub, admission.entry, admission.fields, admission.now))

    def _session(self, admission: Admission) -> KnownSession:
        """The session this check belongs to, made (with what the row needs) if new here."""
        sub, key = admission.sub, admission.key
        session = self.sessions.get(key)
        if session is not None and session.subscriber_id == sub.id and session.closed_ms is None:
            return session
        fields = admission.fields
        session = KnownSession(key, sub.portal_id, sub.id, int(admission.now * 1000))
        if fields.get(b"request_type") == b"update_session":
            session.opened_ms -= _age_ms(fields)
        channel = admission.entry.channels[admission.name]
        session.channel_id = channel.id
        session.channel_name = channel.name
        # The row's text fields are decoded when the batch is written, off the request path.
        session.opening = fields
        return self.sessions.add(session)


def _age_ms(fields: dict[bytes, bytes]) -> int:
    """The session's age a re-check reports (``duration``, whole seconds), in ms; 0 if none.

    A re-check of a session this process does not know may be the first this
    gateway hears of it (another process admitted it, or was killed before writing
    its row): the row it makes opens when the session did.  The merge keeps the
    earliest ``opened_at``, so an older row is not moved.
    """
    duration = fields.get(b"duration")
    if duration is None or not duration.isdigit() or len(duration) > 7:
        return 0
    return min(int(duration), MAX_AGE) * 1000

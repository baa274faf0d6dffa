"""The playback decision, in process and without I/O (docs/authgate.md).

:meth:`Decider.decide` answers a check from the in-process caches alone, or returns
``None`` when it needs something only I/O can give (an entry to load, a session to
admit in Redis); :mod:`authgate.gate` then does that I/O and calls
:meth:`Decider.evaluate` with what it loaded.  Checks happen in this order: the
request's own fields (``bad_request``, ``no_token``), the token (``bad_token``,
``portal_mismatch`` with the ``portal`` parameter), the subscriber
(``unknown_subscriber``, ``portal_mismatch``, ``token_revoked``,
``subscriber_disabled``), the channel (``unknown_channel``,
``channel_not_in_packages``), and last the session limit (``session_limit``).

This is the gateway's hottest code: attribute reads, dict lookups and pre-encoded
answers only.  Parsing the query into one dict is the fastest parse measured here
(``split``/``partition`` beat regular expressions and per-key ``find``).
"""

from __future__ import annotations

import time

from catena import ids
from catena.tokens import TokenCodec, TokenError

from . import responses
from .caches import Caches, PortalEntry, SubscriberEntry, TokenInfo
from .metrics import Metrics
from .query import Fields, archive_requested, field, token_from_qs, valid_session_id
from .recorder import Recorder
from .sessions import KnownSession, SessionTable

MAX_TOKEN = 4096
MAX_BYTES_DIGITS = 19
# Seconds a session refused for the limit is refused again from memory.
LIMIT_MEMO = 1.0


class Grant:
    """What an allowed check read, kept on its session so that a repeat can be answered at once."""

    __slots__ = ("entry", "expires_at", "hint", "name", "state", "sub", "token")

    def __init__(self, fields: Fields, info: TokenInfo, sub: SubscriberEntry, entry: PortalEntry) -> None:
        self.token = fields.get(b"token")
        self.name = fields.get(b"name")
        self.hint = fields.get(b"portal")
        self.expires_at = info.expires_at
        self.state = info.state
        self.sub = sub
        self.entry = entry


class Admission:
    """A check allowed in every respect but the session limit: its session must be admitted."""

    __slots__ = ("entry", "fields", "info", "key", "name", "now", "sub")

    def __init__(
        self,
        fields: Fields,
        name: bytes,
        key: bytes,
        info: TokenInfo,
        sub: SubscriberEntry,
        entry: PortalEntry,
        now: float,
    ) -> None:
        self.fields = fields
        self.name = name
        self.key = key
        self.info = info
        self.sub = sub
        self.entry = entry
        self.now = now


class Decider:
    """The in-process decision over the caches, the session table and the pending batch."""

    def __init__(
        self,
        caches: Caches,
        sessions: SessionTable,
        recorder: Recorder,
        codec: TokenCodec,
        metrics: Metrics,
        *,
        deny_duration: int,
        grace: float,
        stale_limit: float,
        progress: float = 0.0,
    ) -> None:
        self.caches = caches
        self.sessions = sessions
        self.recorder = recorder
        self.codec = codec
        self.metrics = metrics
        self.deny = responses.denials(deny_duration)
        self.deny_duration = deny_duration
        self.grace_ms = int(grace * 1000)
        # A counted session is refreshed in Redis once less than authDuration plus
        # half the grace is left, so a check every authDuration keeps it alive.
        self.slack_ms = self.grace_ms // 2
        self.stale_limit = stale_limit
        self.progress_ms = int(progress * 1000)
        # True while Redis answers and the entitlement listener is connected:
        # in-process entries are then kept right by signals and never go stale.
        # Otherwise an entry answers for `stale_limit` after the later of its load
        # and the moment trust was lost.
        self.trusting = True
        self.trust_lost_at = 0.0
        # Sessions whose Redis expiry should be extended (session_limiter sends them).
        self.refresh: dict[bytes, KnownSession] = {}
        # (subscriber id, session key) pairs whose slot should be given back.
        self.releases: list[tuple[int, bytes]] = []
        # When this process last gave back a slot of a subscriber (pruned after LIMIT_MEMO).
        self.released_at: dict[int, float] = {}
        # Sessions an operator terminated: key → (portal id, when in ms).  Refused for
        # the portal's authDuration plus the grace after that (see `terminate`).
        self.terminated: dict[bytes, tuple[int, int]] = {}

    # ------------------------------------------------------------ the check

    def decide(self, fields: Fields, now: float) -> bytes | Admission | None:
        """The answer from memory alone; an :class:`Admission` when only the session limit
        remains to be asked of Redis; ``None`` when entries must be loaded first."""
        session = self.sessions.by_key.get(fields.get(b"session_id"))  # type: ignore[arg-type]
        if session is not None and session.grant is not None:
            answer = self.regrant(session, session.grant, fields, now)
            if answer is not None:
                return answer
        head = self.prelude(fields, now)
        if isinstance(head, bytes):
            return head
        name, key, info = head
        found = self.cached(info)
        if found is None:
            return None
        return self.evaluate(fields, name, key, info, found[0], found[1], now)

    def cached(self, info: TokenInfo) -> tuple[SubscriberEntry, PortalEntry] | None:
        """The token's subscriber and portal entries, if memory holds usable ones."""
        sub = info.sub
        if sub is None or sub.dead:
            sub = info.sub = self.caches.subscribers.get(info.subscriber_id)
            if sub is None:
                return None
        state = info.state
        entry = state.entry
        if entry is None or sub.generation != state.generation:
            return None
        if not self.trusting and not (self.usable(sub.checked_at) and self.usable(entry.checked_at)):
            return None
        return sub, entry

    def prelude(self, fields: Fields, now: float) -> bytes | tuple[bytes, bytes, TokenInfo]:
        """Checks that need no entry: the request's fields and the token."""
        name = field(fields, b"name")
        if not name:
            return self.refuse_request("name is required", "name")
        key = field(fields, b"session_id")
        if key is None or not valid_session_id(key):
            return self.refuse_request("session_id is required: up to 128 printable characters", "session_id")
        token = field(fields, b"token") or token_from_qs(fields)
        if not token:
            return self.refuse("no_token")
        info = self.caches.tokens.get(token)
        if info is None:
            info = self.verify(token)
        if info.reason is not None:
            return self.refuse(info.reason)
        if info.expires_at is not None and info.expires_at < now:
            return self.refuse("token_revoked")
        hint = fields.get(b"portal")
        if hint is not None and ids.decode(hint.decode("latin-1")) != info.portal_id:
            return self.refuse("portal_mismatch")
        return name, key, info

    def evaluate(
        self,
        fields: Fields,
        name: bytes,
        key: bytes,
        info: TokenInfo,
        sub: SubscriberEntry,
        entry: PortalEntry,
        now: float,
    ) -> bytes | Admission:
        """The decision once the entries are at hand, or what to admit."""
        if not sub.exists:
            return self.refuse_session("unknown_subscriber", entry, fields, key, None)
        if sub.portal_id != info.portal_id:
            return self.refuse_session("portal_mismatch", entry, fields, key, None)
        if sub.token_version != info.version:
            return self.refuse_session("token_revoked", entry, fields, key, sub)
        if sub.disabled:
            return self.refuse_session("subscriber_disabled", entry, fields, key, sub)
        channel = entry.channels.get(name)
        if channel is None:
            return self.refuse_session("unknown_channel", entry, fields, key, sub)
        if channel.packages.isdisjoint(sub.packages) and channel.packages.isdisjoint(entry.free):
            return self.refuse_session("channel_not_in_packages", entry, fields, key, sub)
        if sub.allow_for is not entry:
            sub.prepare(entry)
        session = self.sessions.by_key.get(key)
        now_ms = int(now * 1000)
        if (
            session is None
            or not session.counted
            or session.subscriber_id != sub.id
            or session.closed_ms is not None
            or entry.evict
            or session.expires_ms <= now_ms
        ):
            if session is not None and session.refused_by is sub and session.refused_until > now:
                return self.refuse("session_limit", entry)
            if key in self.terminated and self.still_terminated(key, info.portal_id, entry, now_ms):
                return self.refuse_session("session_terminated", entry, fields, key, sub)
            return Admission(fields, name, key, info, sub, entry, now)
        self.keep(session, fields, now_ms)
        session.grant = Grant(fields, info, sub, entry)
        return self.allow(sub, entry, fields, now)

    def regrant(self, session: KnownSession, grant: Grant, fields: Fields, now: float) -> bytes | None:
        """The answer of a re-check that repeats an allowed one, when nothing it read has changed.

        Same token, stream and portal parameter; the same subscriber and portal entries,
        still current (entries are replaced, never changed, so identity is enough); the
        session still counted.  Anything else takes the full path.
        """
        sub = grant.sub
        if (
            fields.get(b"token") != grant.token
            or fields.get(b"name") != grant.name
            or fields.get(b"portal") != grant.hint
            or sub.dead
            or not self.trusting
            or sub.generation != grant.state.generation
            or grant.state.entry is not grant.entry
            or not session.counted
            or session.closed_ms is not None
            or (grant.expires_at is not None and grant.expires_at < now)
        ):
            return None
        now_ms = int(now * 1000)
        if session.expires_ms <= now_ms:
            return None
        self.keep(session, fields, now_ms)
        return self.allow(sub, grant.entry, fields, now)

    def keep(self, session: KnownSession, fields: Fields, now_ms: int) -> None:
        """Record the check and, when due, queue the session's refresh in Redis."""
        self.touch(session, fields, now_ms)
        if session.expires_ms - now_ms < session.auth_ms + self.slack_ms:
            self.refresh[session.key] = session

    # ------------------------------------------------------------ answers

    def allow(self, sub: SubscriberEntry, entry: PortalEntry, fields: Fields, now: float) -> bytes:
        self.metrics.allowed += 1
        if b"dvr" in fields or b"media_request" in fields:
            if archive_requested(fields):
                closed = int(now)
                return responses.allow_archive(sub.allow, closed - entry.archive_days * 86400, closed)
        return sub.allow

    def refuse(self, reason: str, entry: PortalEntry | None = None) -> bytes:
        self.metrics.deny(reason)
        return (entry.deny if entry is not None else self.deny)[reason]

    def refuse_request(self, message: str, name: str) -> bytes:
        self.metrics.deny("bad_request")
        return responses.deny("bad_request", self.deny_duration, message, name)

    def refuse_session(
        self, reason: str, entry: PortalEntry, fields: Fields, key: bytes, sub: SubscriberEntry | None
    ) -> bytes:
        """Deny, and end the session if it was playing: its slot is given back, its row closed."""
        if sub is not None:
            session = self.sessions.by_key.get(key)
            if session is not None and session.closed_ms is None and session.subscriber_id == sub.id:
                session.closed_ms = int(time.time() * 1000)
                session.counted = False
                session.grant = None
                self.recorder.touch(session)
            if session is not None or fields.get(b"request_type") == b"update_session":
                self.release(sub.id, key)
        return self.refuse(reason, entry)

    def refused_for_limit(
        self, session: KnownSession, sub: SubscriberEntry, entry: PortalEntry, now: float
    ) -> bytes:
        """Refuse ``session`` (Redis found the limit reached) and remember it for a moment.

        Players retry a refused session at once and often; for ``LIMIT_MEMO``
        seconds a repeat is refused from memory instead of asking Redis again,
        unless this process gives back a slot of the subscriber or its entry
        changes.  A slot freed at another process is seen when the moment ends —
        within the second every other change is held to.
        """
        # A slot this process gave back may not have reached Redis yet (queued, or in
        # a flush under way): keep asking Redis until the release has surely landed.
        if time.monotonic() - self.released_at.get(sub.id, -LIMIT_MEMO) >= LIMIT_MEMO:
            session.refused_until = now + LIMIT_MEMO
            session.refused_by = sub
        return self.refuse("session_limit", entry)

    def terminate(self, portal_id: int, subscriber_ids: list[int], keys: list[str], at_ms: int) -> None:
        """Sessions an operator terminated (an entitlement signal): refuse them from now on.

        A session held here is closed at once (no grant answers it again) and its slot
        given back; one not held here is refused when it turns up.
        """
        for name in keys:
            key = name.encode("ascii", "replace")
            known = self.terminated.get(key)
            if known is None or known[1] < at_ms:
                self.terminated[key] = (portal_id, at_ms)
            session = self.sessions.by_key.get(key)
            if session is None or session.portal_id != portal_id:
                continue
            if session.closed_ms is None:
                session.closed_ms = max(int(time.time() * 1000), session.opened_ms)
                self.recorder.touch(session)
            session.grant = None
            session.evicted = True
            if session.subscriber_id is not None:
                session.counted = False
                self.release(session.subscriber_id, key)

    def still_terminated(self, key: bytes, portal_id: int, entry: PortalEntry, now_ms: int) -> bool:
        """Whether ``key`` was terminated in this portal less than authDuration + grace ago."""
        portal, at_ms = self.terminated[key]
        return portal == portal_id and now_ms < at_ms + entry.auth_duration * 1000 + self.grace_ms

    def forget_terminated(self, now_ms: int) -> None:
        """Forget terminations older than any portal's authDuration (a day) plus the grace."""
        horizon = now_ms - 86_400_000 - self.grace_ms
        for key in [k for k, (_, at_ms) in self.terminated.items() if at_ms < horizon]:
            del self.terminated[key]

    def forget_old_releases(self) -> None:
        horizon = time.monotonic() - LIMIT_MEMO
        for subscriber_id in [i for i, at in self.released_at.items() if at < horizon]:
            del self.released_at[subscriber_id]

    def release(self, subscriber_id: int, key: bytes) -> None:
        """Give a slot back in Redis (with the next flush); the subscriber's refusals are forgotten."""
        self.releases.append((subscriber_id, key))
        self.released_at[subscriber_id] = time.monotonic()
        by_key = self.sessions.by_key
        for other in self.sessions.by_subscriber.get(subscriber_id, ()):
            refused = by_key.get(other)
            if refused is not None:
                refused.refused_until = 0.0

    # ------------------------------------------------------------ helpers

    def touch(self, session: KnownSession, fields: Fields, now_ms: int) -> None:
        """Record that the session is still playing (and how much it has sent)."""
        session.updated_ms = now_ms
        sent = fields.get(b"bytes")
        if sent is not None and sent.isdigit() and len(sent) <= MAX_BYTES_DIGITS:
            count = int(sent)
            if count > session.bytes:
                session.bytes = count
        # Progress alone waits for the progress interval; a session never written
        # (just opened) goes out with the next batch.
        if now_ms - session.written_ms >= self.progress_ms:
            self.recorder.pending[session.key] = session

    def usable(self, checked_at: float) -> bool:
        """Whether an entry loaded at ``checked_at`` may still answer."""
        if self.trusting:
            return True
        return time.monotonic() - max(checked_at, self.trust_lost_at) <= self.stale_limit

    def set_trusting(self, trusting: bool) -> None:
        if self.trusting and not trusting:
            self.trust_lost_at = time.monotonic()
        self.trusting = trusting

    def verify(self, token: bytes) -> TokenInfo:
        """Verify a token once and cache the outcome, good or bad."""
        self.metrics.token_misses += 1
        info: TokenInfo
        if len(token) > MAX_TOKEN:
            info = TokenInfo(0, 0, 0, None, "bad_token")
        else:
            try:
                claims = self.codec.verify(token.decode("latin-1"))
            except TokenError:
                info = TokenInfo(0, 0, 0, None, "bad_token")
            else:
                state = self.caches.portal(claims.portal_id)
                info = TokenInfo(
                    claims.subscriber_id, claims.portal_id, claims.version, claims.expires_at, None, state
                )
        self.caches.tokens.put(token, info)
        return info

"""Concurrent-session limits, counted per subscriber in Redis across every gateway.

Per subscriber three keys sharing its hash tag (:mod:`catena.redis_keys`):
``{prefix}:lim:{s:<id>}`` (sorted set: session → expiry in ms), ``…:o`` (hash:
session → opened at, to find the oldest) and ``…:x`` (sorted set: evicted session →
until when it is refused).  One Lua script admits, refreshes and releases sessions
atomically, every key it touches passed in ``KEYS``: on a Redis Cluster one call per
hash slot, elsewhere one call per batch.

* an evicted session is refused (``EVICTED``) until its old expiry;
* a counted session has its expiry moved to now + ``X-AuthDuration`` + grace;
* a new one is counted if the subscriber is under the limit; otherwise the
  ``deny_new`` policy refuses it (``FULL``) and ``evict_oldest`` evicts the
  sessions opened first until it fits;
* a session whose expiry passed no longer counts.

Admissions wait for Redis (batched: every admission queued during one turn of the
event loop goes out at once, on the gateway's own connections whose replies are
handled as they arrive, :mod:`authgate.redis_pipe`).  Sessions this process has
already counted are answered from memory and refreshed lazily, in one batch per
``refresh_interval``, once less than ``X-AuthDuration`` plus half the grace is left
(:class:`authgate.decision.Decider`).  Portals with ``evict_oldest`` admit on every
check instead, because another process may have evicted the session.

**Counts that may be incomplete.**  Each hash slot has a ready marker holding the
``run_id`` of the server on which its counts were last rebuilt.  A server that
restarted empty or from an old snapshot, or a replica promoted after its primary
died (replication is asynchronous: the primary's last writes may be lost), has
another ``run_id``, so the script finds the slot *not ready*: it refuses to decide
admissions there (``NOT_READY``) but still takes refreshes (which re-count sessions
gateways already hold) and releases.  Then (:meth:`SessionLimiter.recover`) every
gateway re-counts the sessions it holds, one of them (holding ``…:lim:lock``) also
re-counts the sessions PostgreSQL shows open, waits ``SETTLE`` seconds for every
gateway to have re-counted, and marks the slots ready on the server that now serves
them (:mod:`authgate.recovery`).  Until then admissions of those slots are
``UNAVAILABLE`` (503, at once: the rebuild takes seconds): never an admission from
counts that may be missing sessions.

While Redis as a whole is unreachable (or hung: no answer within the deadline),
new sessions are ``UNAVAILABLE`` for ``local_after`` seconds (a failover is over by
then), then each process counts the sessions it knows itself; re-checks of sessions
already playing are answered and counted here all along.  Those sessions are counted
in Redis again as soon as it answers.  When only part of a cluster is unreachable,
admissions of the subscribers it holds are ``UNAVAILABLE`` until it is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any

import asyncpg

from catena.redis import RUN_ID, Script
from catena.redis_keys import KeySpace

from .decision import Decider
from .health import Health
from .metrics import Metrics
from .recovery import CountRecovery, Readiness
from .redis_pipe import Pipe, Reply
from .sessions import KnownSession, SessionTable

log = logging.getLogger("authgate.session_limiter")

NOT_READY, OK, FULL, EVICTED, UNAVAILABLE = 0, 1, 2, 3, 4
# Items per script call: a call must run well within the connection's deadline.
ITEMS_PER_CALL = 500
# Admission calls out at once; past that, admissions gather for the next call.
IN_FLIGHT = 2
# Subscribers whose key names are kept built.
KEYS_CACHED = 100_000

# KEYS: four per item — the slot's marker, counted, opened, evicted.  ARGV: now (ms),
# this server's run_id, then the items in one argument: six space-separated words
# each — session, expiry, limit, evict (0/1), opened at, op (session ids never hold
# spaces).  Ops: 'a' admit, 'f' refresh (a session this gateway holds), 'r' release.
_ADMIT = Script(
    """
local now = tonumber(ARGV[1])
local below = '(' .. ARGV[1]
local words = {}
for word in string.gmatch(ARGV[3], '%S+') do words[#words + 1] = word end
local out = {}
for i = 1, #words / 6 do
  local k, w = 4 * (i - 1), 6 * (i - 1)
  local ready = redis.call('GET', KEYS[k + 1]) == ARGV[2]
  local counted, opened, evicted = KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  local sid, expiry, limit = words[w + 1], tonumber(words[w + 2]), tonumber(words[w + 3])
  local evict, op = words[w + 4] == '1', words[w + 6]
  if op == 'a' and not ready then
    out[i] = {0}
  else
    local gone = redis.call('ZRANGEBYSCORE', counted, '-inf', below)
    local changed = #gone > 0
    if changed then
      redis.call('ZREMRANGEBYSCORE', counted, '-inf', below)
      redis.call('HDEL', opened, unpack(gone))
    end
    redis.call('ZREMRANGEBYSCORE', evicted, '-inf', below)
    local result
    if op == 'r' then
      changed = true
      redis.call('ZREM', counted, sid)
      redis.call('HDEL', opened, sid)
      result = {1}
    elseif redis.call('ZSCORE', evicted, sid) then
      result = {3}
    elseif redis.call('ZSCORE', counted, sid) or not ready then
      -- A refresh where the counts are being rebuilt: the session was admitted
      -- before, and counting it again is what the rebuild needs.
      redis.call('ZADD', counted, expiry, sid)
      redis.call('HSETNX', opened, sid, words[w + 5])
      changed = true
      result = {1}
    else
      local n = redis.call('ZCARD', counted)
      if limit < 1 or (n >= limit and not evict) then
        result = {2}
      else
        changed = true
        result = {1}
        if n >= limit then
          local all = redis.call('HGETALL', opened)
          local order = {}
          for j = 1, #all, 2 do order[#order + 1] = {all[j], tonumber(all[j + 1])} end
          table.sort(order, function(x, y)
            if x[2] == y[2] then return x[1] < y[1] end
            return x[2] < y[2]
          end)
          local m = 1
          while n >= limit and m <= #order do
            local victim = order[m][1]
            local until_ms = redis.call('ZSCORE', counted, victim)
            if until_ms then
              redis.call('ZREM', counted, victim)
              redis.call('ZADD', evicted, until_ms, victim)
              n = n - 1
              result[#result + 1] = victim
            end
            redis.call('HDEL', opened, victim)
            m = m + 1
          end
        end
        redis.call('ZADD', counted, expiry, sid)
        redis.call('HSET', opened, sid, words[w + 5])
      end
    end
    -- The keys live as long as their latest expiry (a refusal changes nothing).
    if changed then
      local top = redis.call('ZRANGE', counted, -1, -1, 'WITHSCORES')
      if top[2] then
        redis.call('PEXPIREAT', counted, top[2])
        redis.call('PEXPIREAT', opened, top[2])
      else
        redis.call('DEL', opened)
      end
      top = redis.call('ZRANGE', evicted, -1, -1, 'WITHSCORES')
      if top[2] then redis.call('PEXPIREAT', evicted, top[2]) end
    end
    out[i] = result
  end
end
return out
"""
)


ADMIT, REFRESH, RELEASE = "a", "f", "r"


Done = Callable[[int], None]


def _ignore(code: int) -> None:
    pass


class _Item:
    """One session to send to the script: admit, refresh (both 'count it') or release."""

    __slots__ = ("auth_ms", "code", "done", "evict", "expiry", "limit", "op", "renewal", "session")

    def __init__(self, session: KnownSession, limit: int, evict: bool, auth_ms: int, op: str) -> None:
        self.session = session
        self.limit = limit
        self.evict = evict
        self.auth_ms = auth_ms
        self.op = op
        self.expiry = 0
        self.code = OK
        # An admission whose check says the session is already playing (elsewhere).
        self.renewal = False
        # What to tell once the code is known (admissions: the gate's answer).
        self.done: Done = _ignore


class SessionLimiter:
    """Admits, refreshes and releases sessions; keeps the session table in step."""

    def __init__(
        self,
        pipe: Pipe,
        prefix: str,
        sessions: SessionTable,
        decider: Decider,
        health: Health,
        metrics: Metrics,
        *,
        grace: float,
        local_after: float = 0.0,
        on_evicted: Callable[[KnownSession], None],
        restore: Callable[[set[int]], Awaitable[bool]],
        rebuilt: Callable[[], None] = lambda: None,
    ) -> None:
        self.pipe = pipe
        self.space = KeySpace(prefix)
        # The worker's part of a recovery: what PostgreSQL knows (see Worker.restore).
        self.recovery = CountRecovery(
            pipe,
            self.space,
            metrics,
            grace_ms=int(grace * 1000),
            clock=self.clock,
            recount_own=self.recount_own,
            restore=restore,
            rebuilt=rebuilt,
        )
        self.sessions = sessions
        self.decider = decider
        self.health = health
        self.metrics = metrics
        self.grace_ms = int(grace * 1000)
        self.local_after = local_after
        # Key names are built once per subscriber seen lately (a few microseconds each).
        self._keys_of = lru_cache(maxsize=KEYS_CACHED)(self._script_keys)
        self._pending: list[_Item] = []
        self._scheduled = False
        self._in_flight = 0
        # The last limit and policy seen per subscriber (refreshes carry them).
        self.limits: dict[int, tuple[int, bool]] = {}
        self._on_evicted = on_evicted

    def clock(self) -> float:
        return time.time()

    # ------------------------------------------------------------ admission

    async def connect(self) -> bool:
        """Open the connections (when that fails, the next call tries again)."""
        self.pipe.ensure_connected()
        return await self.pipe.wait_connected()

    async def admit(self, session: KnownSession, limit: int, evict: bool, auth_ms: int) -> int:
        """Count ``session`` against ``limit``: ``OK``, ``FULL``, ``EVICTED`` or ``UNAVAILABLE``."""
        counted: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.enqueue(session, limit, evict, auth_ms, counted.set_result)
        return await counted

    def enqueue(
        self, session: KnownSession, limit: int, evict: bool, auth_ms: int, done: Done, renewal: bool = False
    ) -> None:
        """:meth:`admit` for the request path: ``done(code)`` is called when it is known.

        ``renewal``: the check says it re-checks a session already playing (one this
        process may not know: the balancer sent the re-check here).
        """
        assert session.subscriber_id is not None
        self.limits[session.subscriber_id] = (limit, evict)
        if not self.health.redis_up:
            done(self.without_redis(session, limit, evict, auth_ms, renewal))
            return
        item = _Item(session, limit, evict, auth_ms, ADMIT)
        item.done = done
        item.renewal = renewal
        self._pending.append(item)
        self._schedule()

    def _schedule(self) -> None:
        # At the end of this turn of the loop, everything queued during it goes at once.
        if not self._scheduled and self._pending and self._in_flight < IN_FLIGHT:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._send_pending)

    def _send_pending(self) -> None:
        self._scheduled = False
        chunk, self._pending = self._pending[:ITEMS_PER_CALL], self._pending[ITEMS_PER_CALL:]
        if not chunk:
            return
        if not self.health.redis_up:
            self._finish(chunk, [None] * len(chunk))
            return
        self._in_flight += 1
        self.metrics.admission_batches += 1
        self._send(chunk, lambda results: self._admitted(chunk, results))

    def _admitted(self, chunk: list[_Item], results: list[Any]) -> None:
        self._in_flight -= 1
        if any(_not_ready(result) for result in results):
            # Those items are UNAVAILABLE (503): waiting for the rebuild (seconds) would
            # hold the answers longer than Flussonic should wait.
            self.recover()
        self._finish(chunk, results)
        self._schedule()

    def _finish(self, chunk: list[_Item], results: list[Any]) -> None:
        self._settle(chunk, results)
        for item in chunk:
            try:
                item.done(item.code)
            except Exception:
                log.exception("admission callback failed")

    async def _run(self, batch: list[_Item]) -> None:
        for start in range(0, len(batch), ITEMS_PER_CALL):
            chunk = batch[start : start + ITEMS_PER_CALL]
            self._settle(chunk, await self._call(chunk))

    async def _call(self, chunk: list[_Item]) -> list[Any]:
        """The script's result for each item of ``chunk`` (an exception where Redis failed)."""
        replied: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._send(chunk, replied.set_result)
        return await replied

    def _send(self, chunk: list[_Item], callback: Callable[[list[Any]], None]) -> None:
        """Send the script for ``chunk``; ``callback`` gets one result per item."""
        now_ms = int(self.clock() * 1000)
        groups = self._groups(chunk)
        results: list[Any] = [None] * len(chunk)
        left = [len(groups)]

        def spread(reply: Reply, indexes: list[int]) -> None:
            for position, index in enumerate(indexes):
                results[index] = reply if isinstance(reply, Exception) else reply[position]
            left[0] -= 1
            if not left[0]:
                callback(results)

        for slot, indexes in groups.items():
            keys, words = self._pack(chunk, indexes, now_ms)
            args = ("EVALSHA", _ADMIT.sha, len(keys), *keys, now_ms, RUN_ID, b" ".join(words))
            self.metrics.redis_round_trips += 1
            self.pipe.call(args, self._replied(slot, args, indexes, spread), slot)
        self.metrics.admissions += len(chunk)

    def _replied(
        self, slot: int, args: tuple[Any, ...], indexes: list[int], spread: Callable[[Reply, list[int]], None]
    ) -> Callable[[Reply], None]:
        def replied(reply: Reply) -> None:
            # A Redis that restarted (or flushed its scripts) has forgotten the script.
            if _noscript(reply):
                self.pipe.call(("EVAL", _ADMIT.body, *args[2:]), lambda again: spread(again, indexes), slot)
            else:
                spread(reply, indexes)

        return replied

    def _groups(self, chunk: list[_Item]) -> dict[int, list[int]]:
        if not self.pipe.clustered:
            return {0: list(range(len(chunk)))}
        groups: dict[int, list[int]] = {}
        slot_of = self.space.subscriber_slot
        for index, item in enumerate(chunk):
            assert item.session.subscriber_id is not None
            groups.setdefault(slot_of(item.session.subscriber_id), []).append(index)
        return groups

    def _pack(self, chunk: list[_Item], indexes: list[int], now_ms: int) -> tuple[list[Any], list[bytes]]:
        keys: list[Any] = []
        words = []
        keys_of = self._keys_of
        for index in indexes:
            item = chunk[index]
            session = item.session
            subscriber_id = session.subscriber_id
            assert subscriber_id is not None
            item.expiry = now_ms + item.auth_ms + self.grace_ms
            keys += keys_of(subscriber_id)
            words.append(
                b"%s %d %d %d %d %s"
                % (
                    session.key,
                    item.expiry,
                    item.limit,
                    1 if item.evict else 0,
                    session.opened_ms,
                    item.op.encode(),
                )
            )
        return keys, words

    def _script_keys(self, subscriber_id: int) -> tuple[bytes, bytes, bytes, bytes]:
        """The subscriber's slot marker and session keys, in the script's order."""
        space = self.space
        marker = space.marker(space.subscriber_slot(subscriber_id)).encode()
        return (marker, *space.sessions(subscriber_id))

    def _settle(self, chunk: list[_Item], results: list[Any]) -> None:
        now_ms = int(self.clock() * 1000)
        for item, result in zip(chunk, results, strict=True):
            if result is None or isinstance(result, Exception):
                item.code = self._failed(item, result)
            elif _not_ready(result):
                item.code = self._fallback(item, UNAVAILABLE)
            else:
                item.code = self._apply(item, result, now_ms)

    def _failed(self, item: _Item, error: Exception | None) -> int:
        """An item Redis could not take: mark Redis down, or (one part of a cluster) give up on it."""
        if error is not None and not self.pipe.clustered:
            if self.health.redis_up:
                log.warning("session limiter: Redis failed", extra={"error": str(error)})
            self.health.set_redis(False)
        if error is None or not self.pipe.clustered or not self.health.redis_up:
            return self._fallback(item, None)
        return self._fallback(item, UNAVAILABLE)

    def _fallback(self, item: _Item, admission: int | None) -> int:
        """What an item that Redis did not decide becomes: ``admission`` for admissions
        (``None``: count it here), and refreshes and releases wait for the next flush."""
        if item.op == RELEASE:
            assert item.session.subscriber_id is not None
            self.decider.releases.append((item.session.subscriber_id, item.session.key))
            return OK
        if item.op == REFRESH:
            self.decider.refresh[item.session.key] = item.session
            return OK
        if admission is not None and not item.renewal:
            self.metrics.unavailable_admissions += 1
            return admission
        return self.without_redis(item.session, item.limit, item.evict, item.auth_ms, item.renewal)

    def without_redis(
        self, session: KnownSession, limit: int, evict: bool, auth_ms: int, renewal: bool = False
    ) -> int:
        """An admission while Redis cannot count: ``UNAVAILABLE`` for the first
        ``local_after`` seconds of the outage (a failover is over by then), then counted
        here.  A session already held, here or (says its check) elsewhere, is counted here."""
        if renewal:
            # Held elsewhere (it counted there when it opened): this process has no
            # better count to refuse it by — its knowledge of the subscriber's other
            # sessions may be stale (closed through another gateway).
            return self.hold_locally(session, auth_ms)
        held = session.counted and session.closed_ms is None and session.expires_ms >= self.clock() * 1000
        if held:
            return self.admit_locally(session, limit, evict, auth_ms)
        if self.health.redis_lost_for() < self.local_after:
            self.metrics.unavailable_admissions += 1
            return UNAVAILABLE
        return self.admit_locally(session, limit, evict, auth_ms)

    def _apply(self, item: _Item, result: list[Any], now_ms: int) -> int:
        session = item.session
        code = int(result[0])
        if item.op == RELEASE:
            return code
        session.counted = code == OK
        session.evicted = code == EVICTED
        if code == OK:
            session.expires_ms = item.expiry
            session.auth_ms = item.auth_ms
        for victim in result[1:]:
            self._evict(session, victim, now_ms)
        return code

    def _evict(self, winner: KnownSession, victim_key: bytes, now_ms: int) -> None:
        self.metrics.evictions += 1
        victim = self.sessions.get(victim_key)
        if victim is None:
            victim = KnownSession(victim_key, winner.portal_id, winner.subscriber_id, now_ms)
            self.sessions.add(victim)
        victim.counted = False
        victim.evicted = True
        if victim.closed_ms is None:
            victim.closed_ms = now_ms
        self._on_evicted(victim)

    def admit_locally(self, session: KnownSession, limit: int, evict: bool, auth_ms: int) -> int:
        """Admission from this process's own knowledge, while Redis cannot be asked."""
        self.metrics.local_admissions += 1
        if session.evicted:
            return EVICTED
        now_ms = int(self.clock() * 1000)
        assert session.subscriber_id is not None
        if not (session.counted and session.expires_ms >= now_ms):
            if limit < 1:
                return FULL
            if not self._make_room(session.subscriber_id, limit, evict, session, now_ms):
                return FULL
        session.counted = True
        session.expires_ms = now_ms + auth_ms + self.grace_ms
        session.auth_ms = auth_ms
        # Counted here only: admit it in Redis as soon as Redis answers.
        self.decider.refresh[session.key] = session
        return OK

    def hold_locally(self, session: KnownSession, auth_ms: int) -> int:
        """Count a session already playing here, without a limit check; Redis gets it later."""
        self.metrics.local_admissions += 1
        if session.evicted:
            return EVICTED
        session.counted = True
        session.expires_ms = int(self.clock() * 1000) + auth_ms + self.grace_ms
        session.auth_ms = auth_ms
        self.decider.refresh[session.key] = session
        return OK

    def _make_room(
        self, subscriber_id: int, limit: int, evict: bool, newcomer: KnownSession, now_ms: int
    ) -> bool:
        live = [
            s
            for s in (self.sessions.by_key[k] for k in self.sessions.by_subscriber.get(subscriber_id, ()))
            if s is not newcomer and s.counted and s.closed_ms is None and s.expires_ms >= now_ms
        ]
        if len(live) < limit:
            return True
        if not evict:
            return False
        live.sort(key=lambda s: (s.opened_ms, s.key))
        for victim in live[: len(live) - limit + 1]:
            self._evict(newcomer, victim.key, now_ms)
        return True

    # ------------------------------------------------------------ refresh

    async def run(self, interval: float) -> None:
        """Send due refreshes and releases every ``interval`` until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception:
                log.exception("session refresh failed; will retry")

    async def flush(self) -> None:
        decider = self.decider
        decider.forget_old_releases()
        if not self.health.redis_up or not (decider.refresh or decider.releases):
            return
        refresh, decider.refresh = decider.refresh, {}
        releases, decider.releases = decider.releases, []
        batch = [
            self._refresh_item(s)
            for s in refresh.values()
            if s.subscriber_id is not None and s.closed_ms is None
        ]
        batch += [self._release_item(subscriber_id, key) for subscriber_id, key in releases]
        await self._run(batch)
        self.metrics.refreshes += len(batch)

    def _refresh_item(self, session: KnownSession) -> _Item:
        assert session.subscriber_id is not None
        limit, evict = self.limits.get(session.subscriber_id, (1, False))
        return _Item(session, limit, evict, session.auth_ms, REFRESH)

    def _release_item(self, subscriber_id: int, key: bytes) -> _Item:
        session = self.sessions.get(key) or KnownSession(key, 0, subscriber_id, 0)
        if session.subscriber_id != subscriber_id:
            session = KnownSession(key, 0, subscriber_id, 0)
        return _Item(session, 0, False, 0, RELEASE)

    def release(self, session: KnownSession) -> None:
        """Give the session's slot back (it closed)."""
        if session.subscriber_id is not None:
            session.counted = False
            self.decider.release(session.subscriber_id, session.key)

    # ------------------------------------------------------------ ready markers and recovery

    async def check(self) -> Readiness:
        """Whether the ready markers name the servers that answer (one slot per range)."""
        return await self.recovery.check()

    def recover(self) -> asyncio.Future[bool]:
        """Rebuild the counts of slots not ready (:mod:`authgate.recovery`); ``True`` when ready."""
        return self.recovery.recover()

    async def recount(self, pool: asyncpg.Pool, slots: set[int]) -> bool:
        return await self.recovery.recount(pool, slots)

    async def stop(self) -> None:
        await self.recovery.stop()

    async def recount_own(self) -> None:
        """Count again, in Redis, every session this process holds (once per recovery)."""
        for session in self.sessions.by_key.values():
            if session.counted and session.closed_ms is None:
                self.decider.refresh[session.key] = session
        await self.flush()


def _not_ready(result: Any) -> bool:
    return isinstance(result, list) and result[0] == NOT_READY


def _noscript(reply: Reply) -> bool:
    return isinstance(reply, Exception) and str(reply).startswith("NOSCRIPT")

"""Concurrent-session limits, counted per subscriber in Redis across every gateway.

Per subscriber three keys: ``{prefix}:lim:{id}`` (sorted set: session → expiry in
ms), ``…:o`` (hash: session → opened at, to find the oldest) and ``…:x`` (sorted
set: evicted session → until when it is refused).  One Lua script admits, refreshes
and releases any number of sessions atomically:

* an evicted session is refused (``EVICTED``) until its old expiry;
* a counted session has its expiry moved to now + ``X-AuthDuration`` + grace;
* a new one is counted if the subscriber is under the limit; otherwise the
  ``deny_new`` policy refuses it (``FULL``) and ``evict_oldest`` evicts the
  sessions opened first until it fits;
* a session whose expiry passed no longer counts.

Admissions wait for Redis (batched: every admission queued during one turn of the
event loop goes in one script call, over a connection of the limiter's own whose
replies are handled as they arrive, :mod:`authgate.redis_pipe`).  Sessions this process has already counted
are answered from memory and refreshed lazily, in one script call per
``refresh_interval``, once less than ``X-AuthDuration`` plus half the grace is left
(:class:`authgate.decision.Decider`).  Portals with ``evict_oldest`` admit on every
check instead, because another process may have evicted the session.

Redis may come back empty (restart, ``FLUSHALL``).  The script then answers
"not ready" until one gateway, holding ``…:lim:lock``, has re-counted the sessions
PostgreSQL shows active and set ``…:lim:ready``.  While Redis is unreachable, each
process counts the sessions it knows itself; those sessions are admitted in Redis
again as soon as it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from catena.portals import PortalSettings, load_settings
from catena.redis import Keys

from .decision import Decider
from .health import Health
from .metrics import Metrics
from .redis_pipe import RedisPipe, Reply
from .sessions import KnownSession, SessionTable

log = logging.getLogger("authgate.session_limiter")

NOT_READY, OK, FULL, EVICTED = 0, 1, 2, 3
ITEMS_PER_CALL = 2000
# Admission calls out at once; past that, admissions gather for the next call.
IN_FLIGHT = 2
RECOVERY_WAIT = 5.0
LOCK_TTL_MS = 60_000

# ARGV: now (ms), the subscribers' key prefix, then the items in one argument: seven
# space-separated words each — subscriber, session, expiry, limit, evict (0/1),
# opened at, op (session ids never hold spaces).  One argument keeps the client's
# work per call constant; the key names are therefore built here, which ties a
# batch to one Redis node (no Redis Cluster).
_ADMIT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local now = tonumber(ARGV[1])
local below = '(' .. ARGV[1]
local words = {}
for word in string.gmatch(ARGV[3], '%S+') do words[#words + 1] = word end
local out = {}
for i = 1, #words / 7 do
  local w = 7 * (i - 1)
  local counted = ARGV[2] .. words[w + 1]
  local opened, evicted = counted .. ':o', counted .. ':x'
  local sid, expiry, limit = words[w + 2], tonumber(words[w + 3]), tonumber(words[w + 4])
  local evict, op = words[w + 5] == '1', words[w + 7]
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
  elseif redis.call('ZSCORE', counted, sid) then
    redis.call('ZADD', counted, expiry, sid)
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
        local k = 1
        while n >= limit and k <= #order do
          local victim = order[k][1]
          local until_ms = redis.call('ZSCORE', counted, victim)
          if until_ms then
            redis.call('ZREM', counted, victim)
            redis.call('ZADD', evicted, until_ms, victim)
            n = n - 1
            result[#result + 1] = victim
          end
          redis.call('HDEL', opened, victim)
          k = k + 1
        end
      end
      redis.call('ZADD', counted, expiry, sid)
      redis.call('HSET', opened, sid, words[w + 6])
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
return out
"""

_ACTIVE_SESSIONS = """
SELECT portal_id, subscriber_id, flussonic_id,
       (extract(epoch FROM opened_at) * 1000)::bigint AS opened_ms,
       (extract(epoch FROM updated_at) * 1000)::bigint AS updated_ms
FROM play_sessions
WHERE active AND subscriber_id IS NOT NULL AND updated_at > now() - make_interval(secs => $1)
"""


ADMIT, REFRESH, RELEASE = "a", "f", "r"


Done = Callable[[int], None]


def _ignore(code: int) -> None:
    pass


class _Item:
    """One session to send to the script: admit, refresh (both 'count it') or release."""

    __slots__ = ("auth_ms", "code", "done", "evict", "expiry", "limit", "op", "session")

    def __init__(self, session: KnownSession, limit: int, evict: bool, auth_ms: int, op: str) -> None:
        self.session = session
        self.limit = limit
        self.evict = evict
        self.auth_ms = auth_ms
        self.op = op
        self.expiry = 0
        self.code = OK
        # What to tell once the code is known (admissions: the gate's answer).
        self.done: Done = _ignore


class SessionLimiter:
    """Admits, refreshes and releases sessions; keeps the session table in step."""

    def __init__(
        self,
        client: aioredis.Redis,
        pipe: RedisPipe,
        prefix: str,
        sessions: SessionTable,
        decider: Decider,
        health: Health,
        metrics: Metrics,
        *,
        grace: float,
        on_evicted: Callable[[KnownSession], None],
        recover: Callable[[], Awaitable[bool]],
    ) -> None:
        self.redis = client
        # The worker's recovery of an empty Redis (see Worker.recover_redis).
        self._recover_hook = recover
        self.keys = Keys(prefix)
        self.ready_key = self.keys.key("lim", "ready")
        # Subscriber ids go to the script as text: Lua numbers lose 64-bit ids.
        self.key_prefix = self.keys.key("lim", "")
        self.lock_key = self.keys.key("lim", "lock")
        self.sessions = sessions
        self.decider = decider
        self.health = health
        self.metrics = metrics
        self.grace_ms = int(grace * 1000)
        self.pipe = pipe
        self._sha = hashlib.sha1(_ADMIT.encode()).hexdigest()
        self._pending: list[_Item] = []
        self._scheduled = False
        self._in_flight = 0
        self._retries: set[asyncio.Future[None]] = set()
        self._recovery: asyncio.Future[bool] | None = None
        self._ready_seen: bytes | None = None
        self._on_evicted = on_evicted
        # Policy of each subscriber's sessions, kept for refreshes: (limit, evict).
        self.limits: dict[int, tuple[int, bool]] = {}

    def clock(self) -> float:
        """Now, in Unix seconds (the script is told the time rather than reading Redis's)."""
        return time.time()

    # ------------------------------------------------------------ admission

    async def connect(self) -> bool:
        """Open the script's connection (when it fails, the next call tries again)."""
        self.pipe.ensure_connected()
        return await self.pipe.wait_connected()

    async def admit(self, session: KnownSession, limit: int, evict: bool, auth_ms: int) -> int:
        """Count ``session`` against ``limit``: ``OK``, ``FULL`` or ``EVICTED``."""
        counted: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.enqueue(session, limit, evict, auth_ms, counted.set_result)
        return await counted

    def enqueue(self, session: KnownSession, limit: int, evict: bool, auth_ms: int, done: Done) -> None:
        """:meth:`admit` for the request path: ``done(code)`` is called when it is known."""
        assert session.subscriber_id is not None
        self.limits[session.subscriber_id] = (limit, evict)
        if not self.health.redis_up:
            done(self.admit_locally(session, limit, evict, auth_ms))
            return
        item = _Item(session, limit, evict, auth_ms, ADMIT)
        item.done = done
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
            self._finish(chunk, None)
            return
        self._in_flight += 1
        self.metrics.admission_batches += 1
        self._send(chunk, partial(self._admitted, chunk))

    def _admitted(self, chunk: list[_Item], reply: Reply) -> None:
        self._in_flight -= 1
        if reply == NOT_READY:
            retry = asyncio.ensure_future(self._after_recovery(chunk))
            self._retries.add(retry)
            retry.add_done_callback(self._retries.discard)
        else:
            self._finish(chunk, reply)
        self._schedule()

    async def _after_recovery(self, chunk: list[_Item]) -> None:
        reply: Reply = NOT_READY
        if await self.recover():
            reply = await self._call(chunk)
        self._finish(chunk, reply)

    def _finish(self, chunk: list[_Item], reply: Reply) -> None:
        self._settle(chunk, self._results(reply))
        for item in chunk:
            try:
                item.done(item.code)
            except Exception:
                log.exception("admission callback failed")

    async def _run(self, batch: list[_Item], retry: bool) -> None:
        for start in range(0, len(batch), ITEMS_PER_CALL):
            chunk = batch[start : start + ITEMS_PER_CALL]
            results = self._results(await self._call(chunk))
            if results == NOT_READY and retry and await self.recover():
                results = self._results(await self._call(chunk))
            self._settle(chunk, results)

    async def _call(self, chunk: list[_Item]) -> Reply:
        """The script's reply for ``chunk`` (an exception when Redis failed)."""
        replied: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._send(chunk, replied.set_result)
        return await replied

    def _send(self, chunk: list[_Item], callback: Callable[[Reply], None]) -> None:
        """Send the script for ``chunk``; ``callback`` gets its reply."""
        now_ms = int(self.clock() * 1000)
        words = []
        for item in chunk:
            session = item.session
            assert session.subscriber_id is not None
            item.expiry = now_ms + item.auth_ms + self.grace_ms
            words.append(
                b"%d %s %d %d %d %d %s"
                % (
                    session.subscriber_id,
                    session.key,
                    item.expiry,
                    item.limit,
                    1 if item.evict else 0,
                    session.opened_ms,
                    item.op.encode(),
                )
            )
        self.metrics.redis_round_trips += 1
        self.metrics.admissions += len(chunk)
        tail = (1, self.ready_key, now_ms, self.key_prefix, b" ".join(words))

        def replied(reply: Reply) -> None:
            # A Redis that restarted (or flushed its scripts) has forgotten the script.
            if isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT"):
                self.pipe.call(("EVAL", _ADMIT, *tail), callback)
            else:
                callback(reply)

        self.pipe.call(("EVALSHA", self._sha, *tail), replied)

    def _results(self, reply: Reply) -> Any:
        """The script's results, or ``None`` when Redis failed (it is then marked down)."""
        if isinstance(reply, Exception):
            log.warning("session limiter: Redis failed", extra={"error": str(reply)})
            self.health.set_redis(False)
            return None
        return reply

    def _settle(self, chunk: list[_Item], results: Any) -> None:
        now_ms = int(self.clock() * 1000)
        for index, item in enumerate(chunk):
            if results is None or results == NOT_READY:
                code = self._fallback(item)
            else:
                code = self._apply(item, results[index], now_ms)
            item.code = code

    def _fallback(self, item: _Item) -> int:
        if item.op == RELEASE:
            return OK
        if item.op == REFRESH:
            # A refresh that could not be sent: try again with the next one.
            self.decider.refresh[item.session.key] = item.session
            return OK
        return self.admit_locally(item.session, item.limit, item.evict, item.auth_ms)

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
            self.pipe.expire()
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
        await self._run(batch, retry=True)
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

    # ------------------------------------------------------------ recovery

    async def ready(self) -> bool | None:
        """Whether Redis holds the session counts (``None``: Redis failed).

        The marker's value changes with every recovery; a process that sees it change
        counts its own sessions again, in case they were admitted after PostgreSQL
        was read for the re-count.
        """
        try:
            self.metrics.redis_round_trips += 1
            value = await self.redis.get(self.ready_key)
        except (RedisError, OSError):
            return None
        marker = value.encode() if isinstance(value, str) else value
        if marker is not None and marker != self._ready_seen:
            if self._ready_seen is not None:
                self._requeue_local()
            self._ready_seen = marker
        return marker is not None

    def recover(self) -> asyncio.Future[bool]:
        """Run the worker's recovery of an empty Redis once, whoever asks; ``True`` when ready."""
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.ensure_future(self._recover_hook())
        return self._recovery

    async def take_lock(self) -> str | None:
        """The recovery lock's token if this process got it."""
        token = secrets.token_hex(8)
        got = await self.redis.set(self.lock_key, token, nx=True, px=LOCK_TTL_MS)
        return token if got else None

    async def mark_ready(self, token: str) -> None:
        await self.redis.set(self.ready_key, f"{time.time_ns()}-{token}")
        if (await self.redis.get(self.lock_key)) == token.encode():
            await self.redis.delete(self.lock_key)
        self._requeue_local()

    async def wait_ready(self) -> bool:
        deadline = time.monotonic() + RECOVERY_WAIT
        while time.monotonic() < deadline:
            if await self.redis.exists(self.ready_key):
                self._requeue_local()
                return True
            await asyncio.sleep(0.05)
        return False

    def _requeue_local(self) -> None:
        # Sessions this process counted may have been admitted after PostgreSQL
        # was read: count them again with the next refresh.
        for session in self.sessions.by_key.values():
            if session.counted and session.closed_ms is None:
                self.decider.refresh[session.key] = session

    async def recount(self, pool: asyncpg.Pool) -> None:
        """Count into Redis every session PostgreSQL shows active and not yet expired."""
        try:
            async with pool.acquire(timeout=2.0) as conn:
                rows = await conn.fetch(_ACTIVE_SESSIONS, 86400.0 + self.grace_ms / 1000, timeout=10.0)
                portals = await conn.fetch("SELECT id, settings FROM portals")
            settings = {r["id"]: r["settings"] for r in portals}
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("cannot re-count sessions from PostgreSQL", extra={"error": str(exc)})
            return
        await self._write_counts(rows, {pid: _settings(raw) for pid, raw in settings.items()})
        log.info("session counts rebuilt from PostgreSQL", extra={"sessions": len(rows)})

    async def _write_counts(self, rows: list[asyncpg.Record], settings: dict[int, PortalSettings]) -> None:
        now_ms = int(self.clock() * 1000)
        latest: dict[int, int] = {}
        pipe = self.redis.pipeline(transaction=False)
        for row in rows:
            portal = settings.get(row["portal_id"]) or PortalSettings()
            expiry = row["updated_ms"] + portal.authDuration * 1000 + self.grace_ms
            if expiry <= now_ms:
                continue
            base = self.keys.key("lim", row["subscriber_id"])
            pipe.zadd(base, {row["flussonic_id"]: expiry})
            pipe.hset(base + ":o", row["flussonic_id"], row["opened_ms"])
            latest[row["subscriber_id"]] = max(expiry, latest.get(row["subscriber_id"], 0))
        for subscriber_id, expiry in latest.items():
            base = self.keys.key("lim", subscriber_id)
            pipe.pexpireat(base, expiry)
            pipe.pexpireat(base + ":o", expiry)
        self.metrics.redis_round_trips += 1
        await pipe.execute()


def _settings(raw: Any) -> PortalSettings:
    with contextlib.suppress(Exception):
        return load_settings(raw if isinstance(raw, dict) else None)
    return PortalSettings()

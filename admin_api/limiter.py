"""Sign-in limits that hold under parallel requests, and bcrypt that cannot starve the API.

Every guess (a password, an SMS code, a code request) takes a slot *before* it is
checked: a Redis script per counter either refuses it (the counter is full) or
counts it, atomically, and a guess refused by one counter gives back the slots it
took in the others.  So the guess that would cross a limit is refused, however many
arrive at once; what must not count (a successful sign-in, a request the cooldown
refused) gives its slot back afterwards.  One key per script call, so that it works
on a Redis Cluster and behind Sentinel as on a single server.

While Redis is unreachable the same counts are kept in this process's memory: a
limit then holds per admin_api process instead of per deployment (one warning when
that starts, one line when Redis is back).  Sign-in never stops because Redis did.

Password checks (bcrypt, a quarter second of CPU at cost 12) run in a thread pool
of their own, ``CATENA_BCRYPT_CONCURRENCY`` at a time, with no database connection
held; past ``BCRYPT_QUEUE`` waiting checks a sign-in is answered 503 at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from catena import passwords
from catena import redis as catena_redis
from catena.errors import ServiceUnavailable, TooManyRequests
from catena.redis_keys import KeySpace
from catena.settings import BaseSettings

log = logging.getLogger("admin_api.limiter")

# KEYS[1]: a counter; ARGV: its limit and window (seconds).  Refuses with {1, seconds
# left} when the counter is full, or counts the attempt and answers {0, 0}.  One key
# per call, so that it runs on a Redis Cluster too (a script's keys must share a slot).
_TAKE = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count >= tonumber(ARGV[1]) then
  local ttl = redis.call('TTL', KEYS[1])
  if ttl < 0 then
    redis.call('EXPIRE', KEYS[1], ARGV[2])
    ttl = tonumber(ARGV[2])
  end
  return {1, ttl}
end
if redis.call('INCR', KEYS[1]) == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return {0, 0}
"""
# KEYS[1]: a counter to give one attempt back to (never below zero, keeping its expiry).
_GIVE_BACK = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then
  redis.call('DECR', KEYS[1])
end
return 0
"""
_REDIS_DOWN = (RedisError, OSError, TimeoutError)
# The limiter's own Redis connections, and how long it waits to connect or for an
# answer before the per-process counts take over.
REDIS_CONNECTIONS = 20
REDIS_TIMEOUT = 5.0
# Entries the per-process fallback keeps before it drops the oldest.
LOCAL_MAX_ENTRIES = 100_000
# Password checks that may wait for a bcrypt thread before sign-ins are refused.
BCRYPT_QUEUE = 200


@dataclass(frozen=True, slots=True)
class Slot:
    """One counter an attempt counts in: at most ``limit`` per ``window`` seconds."""

    key: str
    limit: int
    window: int
    message: str


@dataclass(frozen=True, slots=True)
class Taken:
    """An attempt counted in ``slots``, in this process's memory when ``local``."""

    slots: tuple[Slot, ...]
    local: bool


class LocalCounts:
    """Fixed-window counters in this process's memory, for while Redis is away."""

    def __init__(self, max_entries: int = LOCAL_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._counts: dict[str, tuple[int, float]] = {}

    def take(self, slots: Sequence[Slot]) -> tuple[int, int]:
        """Like the Redis script: ``(index of the full slot, seconds left)`` or ``(0, 0)``."""
        now = time.monotonic()
        for index, slot in enumerate(slots, 1):
            count, expires = self._current(slot.key, now)
            if count >= slot.limit:
                return index, max(1, int(expires - now))
        for slot in slots:
            count, expires = self._current(slot.key, now)
            self._counts[slot.key] = (count + 1, expires if count else now + slot.window)
        self._trim(now)
        return 0, 0

    def give_back(self, slots: Sequence[Slot]) -> None:
        now = time.monotonic()
        for slot in slots:
            count, expires = self._current(slot.key, now)
            if count > 0:
                self._counts[slot.key] = (count - 1, expires)

    def clear(self, slot: Slot) -> None:
        self._counts.pop(slot.key, None)

    def _current(self, key: str, now: float) -> tuple[int, float]:
        count, expires = self._counts.get(key, (0, 0.0))
        return (count, expires) if expires > now else (0, 0.0)

    def _trim(self, now: float) -> None:
        if len(self._counts) <= self.max_entries:
            return
        self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
        while len(self._counts) > self.max_entries:
            del self._counts[next(iter(self._counts))]


class Limiter:
    """Takes, gives back and clears attempt slots in Redis, or in memory while it is away."""

    @classmethod
    def connect(cls, settings: BaseSettings) -> Limiter:
        """A limiter with a Redis client of its own, in the settings' Redis mode."""
        client = catena_redis.connect(
            settings,
            max_connections=REDIS_CONNECTIONS,
            socket_connect_timeout=REDIS_TIMEOUT,
            socket_timeout=REDIS_TIMEOUT,
        )
        return cls(client, settings.redis_prefix)

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.keys = KeySpace(prefix)
        self.local = LocalCounts()
        self._take = client.register_script(_TAKE)
        self._give_back = client.register_script(_GIVE_BACK)
        # redis-py fails a command at once when all its connections are busy; under a
        # burst that would count in the per-process fallback and let twice the limit
        # through.  Calls wait here for a connection instead.
        self._calls = asyncio.Semaphore(REDIS_CONNECTIONS)
        self._initializing = asyncio.Lock()
        self._ready = False
        self.redis_lost = False

    def slot(self, limit: int, window: float, message: str, *parts: object) -> Slot:
        return Slot(self.keys.key(*parts), limit, int(window), message)

    async def take(self, *slots: Slot) -> Taken:
        """Count one attempt in every slot, or raise 429 naming the first full one (counting nothing)."""
        try:
            taken = await self._take_in_redis(slots)
            self._redis_works()
            return taken
        except _REDIS_DOWN as exc:
            self._redis_failed(exc)
        full, left = self.local.take(slots)
        if full:
            raise TooManyRequests(slots[full - 1].message, retry_after=left)
        return Taken(slots, local=True)

    async def _take_in_redis(self, slots: Sequence[Slot]) -> Taken:
        """Each counter in turn (each is atomic); a full one gives back those counted before it."""
        await self._initialized()
        counted: list[Slot] = []
        for slot in slots:
            async with self._calls:
                full, left = await self._take(keys=[slot.key], args=[slot.limit, slot.window])
            if full:
                if counted:
                    await self.give_back(Taken(tuple(counted), local=False))
                raise TooManyRequests(slot.message, retry_after=max(1, int(left)))
            counted.append(slot)
        return Taken(tuple(slots), local=False)

    async def give_back(self, taken: Taken, *only: Slot) -> None:
        """Un-count an attempt (in ``only`` of its slots, or all) that turned out not to be one."""
        slots = only or taken.slots
        if taken.local:
            self.local.give_back(slots)
            return
        try:
            for slot in slots:
                async with self._calls:
                    await self._give_back(keys=[slot.key])
        except _REDIS_DOWN as exc:
            self._redis_failed(exc)  # the count expires with its window

    async def clear(self, slot: Slot) -> None:
        """Forget every attempt of a slot (an email's failures after a successful login)."""
        try:
            async with self._calls:
                await self.client.delete(slot.key)
        except _REDIS_DOWN as exc:
            self._redis_failed(exc)
        self.local.clear(slot)

    async def _initialized(self) -> None:
        # redis-py's cluster client, used by many coroutines before it has read the
        # slot map, fails some of them (AttributeError on a half-made connection):
        # the first call reads it, the others wait.
        if self._ready or not isinstance(self.client, aioredis.RedisCluster):
            return
        async with self._initializing:
            if not self._ready:
                await self.client.initialize()
                self._ready = True

    async def close(self) -> None:
        await self.client.aclose()

    def _redis_failed(self, exc: BaseException) -> None:
        if not self.redis_lost:
            self.redis_lost = True
            log.warning(
                "sign-in limits fall back to per-process counts: Redis unavailable",
                extra={"error": f"{type(exc).__name__}: {exc}"},
            )

    def _redis_works(self) -> None:
        if self.redis_lost:
            self.redis_lost = False
            log.info("sign-in limits counted in Redis again")


class PasswordChecker:
    """bcrypt off the event loop, a few at a time, with a bounded queue."""

    def __init__(self, concurrency: int, queue: int = BCRYPT_QUEUE) -> None:
        self.executor = ThreadPoolExecutor(concurrency, thread_name_prefix="bcrypt")
        self.queue = queue
        self.waiting = 0

    async def matches(self, password: str, hashes: Sequence[str]) -> list[bool]:
        """Which of ``hashes`` ``password`` matches; with none, one check against a dummy
        hash, so that an unknown email costs the time of a wrong password."""
        if self.waiting >= self.queue:
            raise Busy("too many sign-ins at once; try again in a few seconds", code="sign_in_busy")
        self.waiting += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.executor, _check, password, tuple(hashes))
        finally:
            self.waiting -= 1

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class Busy(ServiceUnavailable):
    """The password checks are saturated; the client may retry in a moment."""

    retry_after = 2


@functools.cache
def _dummy_hash() -> str:
    return passwords.hash_sync("not a real password", 12)


def _check(password: str, hashes: tuple[str, ...]) -> list[bool]:
    if not hashes:
        passwords.verify_sync(password, _dummy_hash())
        return []
    return [passwords.verify_sync(password, hashed) for hashed in hashes]


LIMITER = web.AppKey("limiter", Limiter)
PASSWORDS = web.AppKey("passwords", PasswordChecker)

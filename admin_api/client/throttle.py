"""Sliding-hour counters in Redis that slow down abuse of the sign-in endpoints.

These limits are a second line: what stops guessing a code (attempts per code,
expiry, the cooldown between codes) is enforced in PostgreSQL.  So when Redis is
unreachable the counters are skipped with a warning in the log, and subscribers
can still sign in.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from catena.errors import TooManyRequests
from catena.redis import KeySpace, count_in_window

log = logging.getLogger("admin_api.client.throttle")


class Counter:
    """Events of one kind per subject within ``window`` seconds, at most ``limit``."""

    def __init__(
        self, client: aioredis.Redis, keys: KeySpace, kind: str, limit: int, window: float, message: str
    ) -> None:
        self.client = client
        self.keys = keys
        self.kind = kind
        self.limit = limit
        self.window = int(window)
        self.message = message

    def _key(self, subject: str) -> str:
        return self.keys.client_counter(self.kind, subject)

    async def add(self, subject: str) -> None:
        """Count one event."""
        await self._count(subject)

    async def hit(self, subject: str) -> None:
        """Count one event; 429 when this one is over the limit."""
        counted = await self._count(subject)
        if counted is not None and counted[0] > self.limit:
            raise TooManyRequests(self.message, retry_after=max(1, counted[1]))

    async def _count(self, subject: str) -> tuple[int, int] | None:
        try:
            return await count_in_window(self.client, self._key(subject), self.window)
        except (RedisError, OSError) as exc:
            log.warning("client throttling unavailable", extra={"kind": self.kind, "error": str(exc)})
            return None

    async def check(self, subject: str) -> None:
        """429 when the limit is already reached, without counting."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.get(self._key(subject))
                pipe.ttl(self._key(subject))
                count, ttl = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("client throttling unavailable", extra={"kind": self.kind, "error": str(exc)})
            return
        if int(count or 0) >= self.limit:
            raise TooManyRequests(self.message, retry_after=max(1, int(ttl)))

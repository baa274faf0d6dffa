"""The Redis client every service uses, and its key namespace."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import RedisError


def connect(url: str, **kwargs: object) -> aioredis.Redis:
    """A client for ``url`` (``redis://``, ``rediss://`` or ``unix://``); connects lazily."""
    options: dict[str, object] = {"socket_connect_timeout": 2.0, "socket_timeout": 5.0}
    options.update(kwargs)
    return aioredis.Redis.from_url(url, **options)  # type: ignore[arg-type]


async def ping(client: aioredis.Redis) -> bool:
    """Whether Redis answers PING."""
    try:
        return bool(await client.ping())
    except (RedisError, OSError, TimeoutError):
        return False


class Keys:
    """Builds namespaced Redis key names: ``Keys("catena").key("sub", 42)`` → ``catena:sub:42``."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def key(self, *parts: object) -> str:
        return ":".join((self.prefix, *map(str, parts)))


async def count_in_window(client: aioredis.Redis, key: str, window: int) -> tuple[int, int]:
    """Count one event under ``key`` in a fixed window of ``window`` seconds.

    Returns the count so far (this event included) and the seconds left in the
    window.  The window starts at the first event (``SET NX EX``), which works on
    every Redis from 2.6.12 on, unlike ``EXPIRE ... NX`` (7.0).
    """
    async with client.pipeline(transaction=True) as pipe:
        pipe.set(key, 0, ex=window, nx=True)
        pipe.incr(key)
        pipe.ttl(key)
        _, count, ttl = await pipe.execute()
    return int(count), int(ttl)

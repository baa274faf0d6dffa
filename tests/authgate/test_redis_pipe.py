"""The limiter's own Redis connection: replies in order, errors as values, credentials, losses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from authgate.redis_pipe import RedisPipe, RedisTimeout

from .conftest import PrivateRedis


class Replies:
    """Collects what the callbacks of a pipe are given, in the order given."""

    def __init__(self) -> None:
        self.got: list[Any] = []
        self.arrived = asyncio.Event()
        self.expected = 0

    def __call__(self, reply: Any) -> None:
        self.got.append(reply)
        if len(self.got) >= self.expected:
            self.arrived.set()

    async def wait(self, count: int) -> list[Any]:
        self.expected = count
        if len(self.got) < count:
            await asyncio.wait_for(self.arrived.wait(), 5.0)
        return self.got


@pytest.fixture
async def pipe(redis_url: str) -> AsyncIterator[RedisPipe]:
    connected = RedisPipe(redis_url)
    connected.ensure_connected()
    assert await connected.wait_connected()
    yield connected
    connected.close()


async def test_pipelined_commands_get_their_own_replies_in_order(
    pipe: RedisPipe, redis: aioredis.Redis, redis_prefix: str
) -> None:
    replies = Replies()
    key = f"{redis_prefix}:pipe:counter"
    for _ in range(100):
        pipe.call(("INCR", key), replies)
    pipe.call(("GET", key), replies)
    assert await replies.wait(101) == [*range(1, 101), b"100"]
    assert await redis.get(key) == b"100"


async def test_an_error_reply_is_handed_over_not_raised(pipe: RedisPipe, redis_prefix: str) -> None:
    replies = Replies()
    key = f"{redis_prefix}:pipe:text"
    pipe.call(("SET", key, "not a number"), replies)
    pipe.call(("INCR", key), replies)
    pipe.call(("GET", key), replies)
    ok, failed, value = await replies.wait(3)
    assert ok == b"OK" and value == b"not a number"
    assert isinstance(failed, ResponseError) and "not an integer" in str(failed)


async def test_password_and_database_of_the_url_are_used(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path, password="s3cret-pass")
    server.start()
    pipe = RedisPipe(f"redis://:s3cret-pass@127.0.0.1:{server.port}/3")
    reader = aioredis.Redis(port=server.port, password="s3cret-pass", db=3)
    try:
        pipe.ensure_connected()
        assert await pipe.wait_connected()
        replies = Replies()
        pipe.call(("SET", "written-by-the-pipe", "yes"), replies)
        assert await replies.wait(1) == [b"OK"]
        assert await reader.get("written-by-the-pipe") == b"yes"
        assert await reader.execute_command("SELECT", 0) and await reader.get("written-by-the-pipe") is None
    finally:
        pipe.close()
        await reader.aclose()
        server.stop()


async def test_a_wrong_password_closes_the_connection(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path, password="right-pass")
    server.start()
    pipe = RedisPipe(f"redis://:wrong-pass@127.0.0.1:{server.port}/0")
    try:
        pipe.ensure_connected()
        await pipe.wait_connected()
        replies = Replies()
        pipe.call(("PING",), replies)
        (reply,) = await replies.wait(1)
        assert isinstance(reply, ResponseError | RedisConnectionError)
        await asyncio.sleep(0.1)
        assert not pipe.connected
    finally:
        pipe.close()
        server.stop()


async def test_commands_waiting_when_redis_stops_fail_and_the_pipe_reconnects(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path)
    server.start()
    pipe = RedisPipe(server.url, deadline=30.0)
    try:
        pipe.ensure_connected()
        assert await pipe.wait_connected()
        replies = Replies()
        pipe.call(("BLPOP", "never-pushed", 0), replies)  # waits until the server goes
        server.stop()
        (lost,) = await replies.wait(1)
        assert isinstance(lost, RedisConnectionError)
        refused = Replies()
        pipe.call(("PING",), refused)  # not connected: fails at once, starts reconnecting
        assert isinstance((await refused.wait(1))[0], RedisConnectionError)

        server.start()
        pipe.ensure_connected()
        assert await pipe.wait_connected()
        again = Replies()
        pipe.call(("PING",), again)
        assert await again.wait(1) == [b"PONG"]
    finally:
        pipe.close()
        server.stop()


async def test_an_overdue_reply_closes_the_connection(redis_url: str) -> None:
    pipe = RedisPipe(redis_url, deadline=0.2)
    pipe.ensure_connected()
    assert await pipe.wait_connected()
    replies = Replies()
    started = asyncio.get_running_loop().time()
    pipe.call(("BLPOP", "catena-test-never-pushed", 5), replies)
    (reply,) = await replies.wait(1)
    assert isinstance(reply, RedisTimeout)
    assert asyncio.get_running_loop().time() - started < 1.0
    assert not pipe.connected
    pipe.close()


async def test_a_failing_callback_does_not_cost_the_replies_behind_it(pipe: RedisPipe) -> None:
    def broken(reply: Any) -> None:
        raise RuntimeError("a callback that fails")

    replies = Replies()
    pipe.call(("PING",), broken)
    pipe.call(("ECHO", "after"), replies)
    assert await replies.wait(1) == [b"after"]
    assert pipe.connected

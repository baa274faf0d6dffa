"""The attempt counters behind every sign-in limit, in Redis and in memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest
import redis.asyncio as aioredis

from admin_api.limiter import Limiter, LocalCounts, Slot
from catena.embedded import LocalCluster
from catena.errors import TooManyRequests
from catena.redis_keys import key_slot
from catena.settings import AdminSettings, load


@pytest.fixture
async def limiter(redis_url: str, redis_prefix: str, redis: aioredis.Redis) -> AsyncIterator[Limiter]:
    made = Limiter.connect(load(AdminSettings, environ={}, redis_url=redis_url, redis_prefix=redis_prefix))
    yield made
    await made.close()


async def counted(client: aioredis.Redis, key: str) -> int:
    """The counter at ``key``, which must exist."""
    value = await client.get(key)
    assert value is not None, key
    return int(value)


async def test_a_full_slot_refuses_without_counting_in_the_others(
    limiter: Limiter, redis: aioredis.Redis
) -> None:
    small = limiter.slot(2, 60, "small is full", "t", "small")
    large = limiter.slot(10, 60, "large is full", "t", "large")
    await limiter.take(small, large)
    await limiter.take(small, large)
    with pytest.raises(TooManyRequests) as refused:
        await limiter.take(small, large)
    assert refused.value.message == "small is full" and 1 <= refused.value.retry_after <= 60
    assert await counted(redis, large.key) == 2
    assert 0 < await redis.ttl(small.key) <= 60


async def test_parallel_takes_never_pass_the_limit(limiter: Limiter, redis: aioredis.Redis) -> None:
    slot = limiter.slot(7, 60, "full", "t", "parallel")
    results = await asyncio.gather(*(limiter.take(slot) for _ in range(100)), return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 7
    assert await counted(redis, slot.key) == 7


async def test_giving_back_frees_a_slot_and_never_goes_below_zero(
    limiter: Limiter, redis: aioredis.Redis
) -> None:
    slot = limiter.slot(1, 60, "full", "t", "give")
    taken = await limiter.take(slot)
    await limiter.give_back(taken)
    await limiter.give_back(taken)
    assert await counted(redis, slot.key) == 0
    await limiter.take(slot)


async def test_redis_down_counts_in_memory() -> None:
    limiter = Limiter.connect(load(AdminSettings, environ={}, redis_url="redis://127.0.0.1:1/0"))
    slot = limiter.slot(2, 60, "full", "t", "down")
    try:
        first = await limiter.take(slot)
        await limiter.take(slot)
        with pytest.raises(TooManyRequests):
            await limiter.take(slot)
        assert first.local and limiter.redis_lost
        await limiter.give_back(first)
        await limiter.take(slot)
    finally:
        await limiter.close()


def test_local_counts_expire_with_their_window(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("admin_api.limiter.time.monotonic", lambda: now[0])
    counts = LocalCounts()
    slot = Slot("k", 1, 10, "full")
    assert counts.take([slot]) == (0, 0)
    assert counts.take([slot]) == (1, 10)
    now[0] += 10.5
    assert counts.take([slot]) == (0, 0)


def test_local_counts_stay_bounded() -> None:
    counts = LocalCounts(max_entries=100)
    for n in range(1000):
        counts.take([Slot(f"k{n}", 5, 60, "full")])
    assert len(counts._counts) == 100


async def test_on_a_redis_cluster_each_counter_holds_and_a_refusal_takes_nothing(
    redis_cluster: LocalCluster, redis_prefix: str
) -> None:
    settings = load(AdminSettings, environ={}, redis_mode="cluster", redis_url=redis_cluster.url)
    limiter = Limiter.connect(msgspec.structs.replace(settings, redis_prefix=redis_prefix + "-cluster"))
    try:
        email = limiter.slot(3, 60, "email full", "login-fail", "email", "a@b.c")
        address = limiter.slot(100, 60, "address full", "login-fail", "ip", "203.0.113.9")
        assert key_slot(email.key) != key_slot(address.key)
        results = await asyncio.gather(
            *(limiter.take(email, address) for _ in range(40)), return_exceptions=True
        )
        assert sum(not isinstance(r, BaseException) for r in results) == 3
        assert not limiter.redis_lost
        # The refused attempts gave back what they had taken from the address.
        other = limiter.slot(100, 60, "full", "login-fail", "email", "other@b.c")
        taken = await limiter.take(other, address)
        assert await counted(limiter.client, address.key) == 4
        await limiter.give_back(taken, address)
        assert await counted(limiter.client, address.key) == 3
    finally:
        await limiter.close()

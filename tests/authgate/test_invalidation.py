"""Every change that takes playback away is denied at every gateway process within a second.

Each case warms both gateways (allowed, so the entries sit in their in-process
caches and in Redis), makes the change exactly as a Management API handler does
(SQL plus ``entitlements.changed`` in one transaction), and then checks both
gateways until they deny, for at most one second.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from authgate.caches import Caches, TokenInfo
from authgate.health import Health
from authgate.listener import Listener
from authgate.loader import Loader
from authgate.metrics import Metrics
from catena import entitlements
from catena import redis as catena_redis
from catena.entitlement_map import EntitlementMap
from catena.redis_keys import key_slot

from .conftest import MODES, Gateway, Launcher, Portal, PrivateRedis, Sub, World, eventually

pytestmark = pytest.mark.slow
# The gateways of this module run against a single Redis, a cluster and a sentinel group.
REDIS_MODES = MODES

DEADLINE = 1.0


async def warm(gateways: list[Gateway], sub: Sub, channel: str = "sport") -> None:
    for gateway in gateways:
        for _ in range(2):
            answer = await gateway.auth(sub, channel, session=f"s-{sub.id}")
            assert answer.status == 200, answer


async def denied_everywhere(gateways: list[Gateway], sub: Sub, reason: str, channel: str = "sport") -> float:
    """Seconds until every gateway denies with ``reason`` (fails past the deadline)."""
    started = time.monotonic()
    pending = list(gateways)
    while pending:
        pending = [g for g in pending if (await g.auth(sub, channel, session=f"s-{sub.id}")).reason != reason]
        elapsed = time.monotonic() - started
        assert not pending or elapsed < DEADLINE, f"still allowed after {elapsed:.2f} s at {pending}"
    return time.monotonic() - started


@pytest.fixture
async def portal(world: World) -> Portal:
    portal = await world.portal()
    await world.package(portal, "basic")
    await world.package(portal, "free", free=True)
    await world.channel(portal, "sport", ["basic"])
    await world.channel(portal, "open", ["free"])
    return portal


Change = Callable[[World, Portal, Sub], Awaitable[None]]


async def delete_subscription(world: World, portal: Portal, sub: Sub) -> None:
    await world.change(
        portal, "subscriber", [sub.id], "DELETE FROM subscriptions WHERE subscriber_id = $1", sub.id
    )


async def disable(world: World, portal: Portal, sub: Sub) -> None:
    await world.change(
        portal, "subscriber", [sub.id], "UPDATE subscribers SET disabled = true WHERE id = $1", sub.id
    )


async def unlink_channel(world: World, portal: Portal, sub: Sub) -> None:
    await world.change(
        portal,
        "package",
        [portal.packages["basic"]],
        "DELETE FROM channel_packages WHERE package_id = $1 AND channel_id = $2",
        portal.packages["basic"],
        portal.channels["sport"],
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (delete_subscription, "channel_not_in_packages"),
        (disable, "subscriber_disabled"),
        (unlink_channel, "channel_not_in_packages"),
    ],
)
async def test_change_is_denied_everywhere_within_a_second(
    world: World, gateways: list[Gateway], portal: Portal, change: Change, reason: str
) -> None:
    sub = await world.subscriber(portal, ["basic"])
    await warm(gateways, sub)
    await change(world, portal, sub)
    await denied_everywhere(gateways, sub, reason)


async def test_token_reset_revokes_the_old_token_everywhere(
    world: World, gateways: list[Gateway], portal: Portal
) -> None:
    sub = await world.subscriber(portal, ["basic"])
    await warm(gateways, sub)
    old = Sub(sub.id, sub.portal_id, sub.token, sub.text_id)
    await world.reset_token(sub)
    await denied_everywhere(gateways, old, "token_revoked")
    for gateway in gateways:
        assert (await gateway.auth(sub, "sport", session="new-token")).status == 200


async def test_free_package_removed_is_denied_everywhere(
    world: World, gateways: list[Gateway], portal: Portal
) -> None:
    sub = await world.subscriber(portal, [])
    await warm(gateways, sub, "open")
    await world.change(
        portal, "portal", [], "DELETE FROM portal_free_packages WHERE portal_id = $1", portal.id
    )
    await denied_everywhere(gateways, sub, "channel_not_in_packages", "open")


async def test_grants_take_effect_everywhere_too(
    world: World,
    gateways: list[Gateway],
    portal: Portal,
) -> None:
    sub = await world.subscriber(portal, [])
    for gateway in gateways:
        assert (await gateway.auth(sub, "sport")).reason == "channel_not_in_packages"
    await world.change(
        portal,
        "subscriber",
        [sub.id],
        "INSERT INTO subscriptions (subscriber_id, package_id, portal_id) VALUES ($1, $2, $3)",
        sub.id,
        portal.packages["basic"],
        portal.id,
    )
    started = time.monotonic()
    for gateway in gateways:
        while (await gateway.auth(sub, "sport")).status != 200:
            assert time.monotonic() - started < DEADLINE


async def test_workers_of_one_gateway_all_apply_signals(
    world: World,
    launcher: Launcher,
    portal: Portal,
) -> None:
    gateway = await launcher.start(workers=2)
    sub = await world.subscriber(portal, ["basic"])
    # Fresh connections land on either worker (SO_REUSEPORT); warm both.
    for _ in range(20):
        assert (await gateway.auth(sub, "sport", session="w")).status == 200
        await gateway.stop_session()

    async def both_workers_answered() -> list[str]:
        _, _, text = await gateway.request("GET", "/metrics")
        lines = [line for line in text.decode().splitlines() if line.startswith("authgate_checks_total{")]
        return lines if len(lines) == 2 and all(not line.endswith(" 0") for line in lines) else []

    assert await eventually(both_workers_answered, timeout=5.0)
    await disable(world, portal, sub)
    started = time.monotonic()
    for _ in range(20):
        while (await gateway.auth(sub, "sport", session="w")).reason != "subscriber_disabled":
            assert time.monotonic() - started < DEADLINE
        await gateway.stop_session()
    await gateway.stop()


async def test_flushing_redis_never_gives_a_wrong_answer(
    world: World, launcher: Launcher, portal: Portal, tmp_path: Path
) -> None:
    # The run's single server may be shared: flush a private one.  The run's cluster
    # and sentinel group are its own: flush them (every primary).
    private = PrivateRedis(tmp_path) if launcher.mode == "single" else None
    if private is not None:
        private.start()
    overrides: dict[str, Any] = {"redis_url": private.url} if private is not None else {}
    gateways = [await launcher.start(**overrides) for _ in range(2)]
    allowed = await world.subscriber(portal, ["basic"])
    refused = await world.subscriber(portal, [])
    await warm(gateways, allowed)
    client = catena_redis.connect(private.url) if private is not None else launcher.backend.client()
    try:
        await flush_everything(client)
        for gateway in gateways:
            for _ in range(3):
                assert (await gateway.auth(allowed, "sport", session=f"s-{allowed.id}")).status == 200
                assert (await gateway.auth(refused, "sport")).reason == "channel_not_in_packages"
        # A change made right after the flush is still seen everywhere.
        await delete_subscription(world, portal, allowed)
        await denied_everywhere(gateways, allowed, "channel_not_in_packages")
        await flush_everything(client)
        for gateway in gateways:
            await gateway.stop_session()
            assert (await gateway.auth(allowed, "sport")).reason == "channel_not_in_packages"
    finally:
        await client.aclose()
        for gateway in gateways:
            await gateway.stop()
        if private is not None:
            private.stop()


async def flush_everything(client: aioredis.Redis) -> None:
    """FLUSHALL on the server, or on every primary of a cluster."""
    if isinstance(client, aioredis.RedisCluster):
        await client.flushall(target_nodes=aioredis.RedisCluster.PRIMARIES)
    else:
        await client.flushall()


# ---------------------------------------------------------------- one process's parts, interleaved


class Process:
    """A gateway process's caches, loader and listener on the test's Redis and database."""

    def __init__(self, redis: aioredis.Redis, prefix: str, pool: asyncpg.Pool) -> None:
        self.caches, health = Caches(100), Health(lambda trusting: None)
        health.set_redis(True)
        health.set_pg(True)
        self.emap = EntitlementMap(redis, prefix)
        self.loader = Loader(
            self.caches, self.emap, lambda: pool, health, Metrics(), deny_duration=10, usable=lambda _: True
        )

        async def unused() -> asyncpg.Connection:
            raise OSError("the test applies signals itself")

        self.listener = Listener(unused, self.caches, self.emap, health, Metrics(), lambda: pool)

    async def token_version(self, sub: Sub, version: int) -> int:
        """The token version of the subscriber entry a check with this token loads."""
        info = TokenInfo(sub.id, sub.portal_id, version, None, None, self.caches.portal(sub.portal_id))
        entry, _ = await self.loader.ensure(info)
        return entry.token_version


async def test_a_load_between_a_signal_and_its_tombstone_is_not_served_from_redis(
    world: World, redis: aioredis.Redis, redis_prefix: str, pool: asyncpg.Pool
) -> None:
    # A process applies a signal in memory at once and tombstones the Redis keys a
    # moment later (its listener's Redis task).  A check loading the subscriber in
    # between read the entry the signal had just dropped - another gateway wrote it
    # into Redis - and, no signal arriving during the load, cached it for good: here
    # a reset token refused (token_revoked) until the portal's next signal; with a
    # disable, the subscriber allowed.  Seen as test_limit_is_per_subscriber_not_per_token
    # answering token_revoked.
    portal = await world.portal()
    await world.package(portal, "basic")
    await world.channel(portal, "sport", ["basic"])
    sub = await world.subscriber(portal, ["basic"])
    first, second = Process(redis, redis_prefix, pool), Process(redis, redis_prefix, pool)
    await ready(redis, first.emap, sub)
    assert await first.token_version(sub, 1) == 1  # the entry is in Redis now
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE subscribers SET token_version = 2 WHERE id = $1", sub.id)
        version = await entitlements.changed(conn, portal.id, "subscriber", [sub.id])
    second.listener.apply(portal.id, "subscriber", [sub.id], version)  # its notification, tombstones queued
    assert await second.token_version(sub, 2) == 2
    cached = second.caches.subscribers.get(sub.id)
    assert cached is not None and cached.token_version == 2


async def ready(redis: aioredis.Redis, emap: EntitlementMap, sub: Sub) -> None:
    """Mark the slots of the subscriber's and portal's entries ready on this server, as a
    gateway's count recovery leaves them (entries are trusted only then)."""
    run_id = (await redis.info("server"))["run_id"]
    keys = [emap.keys.subscriber(sub.id), emap.keys.portal(sub.portal_id)]
    keys += [emap.keys.seen(sub.portal_id), emap.keys.floor(sub.portal_id)]
    for key in keys:
        await redis.set(emap.space.marker(key_slot(key)), run_id)

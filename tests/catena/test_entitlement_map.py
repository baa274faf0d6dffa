"""The entitlement map in Redis: format, version guards, floors, rebuild (catena/entitlement_map.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from catena import entitlement_map, entitlements, ids
from catena import redis as catena_redis
from catena.entitlement_map import (
    ABSENT,
    INVALID,
    PORTAL,
    SUBSCRIBER,
    EntitlementMap,
    PortalRecord,
    SubscriberRecord,
)
from catena.redis import MODES
from tests.conftest import delete_prefixed
from tests.redis_servers import RedisBackend

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=MODES)
async def backend(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[RedisBackend]:
    """The map in each Redis mode: the run's server, cluster and sentinel group."""
    if request.param == "cluster":
        yield RedisBackend.cluster(request.getfixturevalue("redis_cluster"))
    elif request.param == "sentinel":
        yield RedisBackend.sentinel(request.getfixturevalue("redis_sentinel"))
    else:
        yield RedisBackend.single(redis_url)


@pytest.fixture
async def emap(backend: RedisBackend, redis_prefix: str) -> AsyncIterator[EntitlementMap]:
    """The map, every slot ready (as the gateways leave them), none of this run's keys."""
    client = backend.client()
    await delete_prefixed(client, redis_prefix)
    emap = EntitlementMap(client, redis_prefix)
    await catena_redis.mark_ready(emap.commands, emap.space)
    yield emap
    await client.aclose()


async def make_portal(pool: asyncpg.Pool, free: bool = True) -> tuple[int, int, int, int]:
    """A portal with a channel in a package and a subscriber of it: (portal, package, channel, sub)."""
    portal, package, channel, sub = (ids.new_id() for _ in range(4))
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO portals (id, name, domain, api_key, settings) VALUES ($1, $2, '', $3, $4)",
            portal,
            f"p{portal}",
            f"k{portal}",
            {"authDuration": 60, "maxSessions": 3},
        )
        await conn.execute(
            "INSERT INTO packages (id, portal_id, name) VALUES ($1, $2, 'basic')", package, portal
        )
        await conn.execute(
            "INSERT INTO channels (id, portal_id, name, title) VALUES ($1, $2, 'sport', 'S')", channel, portal
        )
        await conn.execute("INSERT INTO channel_packages VALUES ($1, $2, $3)", package, channel, portal)
        if free:
            await conn.execute(
                "INSERT INTO portal_free_packages (portal_id, package_id) VALUES ($1, $2)", portal, package
            )
        await conn.execute(
            "INSERT INTO subscribers (id, portal_id, name, phone_country_code, phone, "
            "max_sessions) VALUES ($1, $2, 'v', '7', '1', 5)",
            sub,
            portal,
        )
        await conn.execute("INSERT INTO subscriptions VALUES ($1, $2, $3)", sub, package, portal)
        await entitlements.changed(conn, portal, "portal")
    return portal, package, channel, sub


def test_encode_and_decode_round_trip() -> None:
    record = SubscriberRecord(7, 2, False, None, [1, 2])
    entry = entitlement_map.decode(entitlement_map.encode(42, record))
    assert entry is not None and (entry.version, entry.tag, entry.record) == (42, SUBSCRIBER, record)
    absent = entitlement_map.decode(entitlement_map.encode(3, None))
    assert absent is not None and (absent.version, absent.tag, absent.record) == (3, ABSENT, None)
    for garbage in (None, b"", b"x:s", b"12", b"12:s\xff\xff", b"12:?"):
        assert entitlement_map.decode(garbage) is None


async def test_loads_read_what_postgres_holds(pool: asyncpg.Pool) -> None:
    portal, package, channel, sub = await make_portal(pool)
    async with pool.acquire() as conn:
        version, record = await entitlement_map.load_subscriber(conn, sub, portal)
        assert version == 1 and record == SubscriberRecord(portal, 1, False, 5, [package])
        version, gone = await entitlement_map.load_subscriber(conn, ids.new_id(), portal)
        assert version == 1 and gone is None
        version, portal_record = await entitlement_map.load_portal(conn, portal)
    assert portal_record is not None
    settings = (portal_record.auth_duration, portal_record.max_sessions, portal_record.policy)
    assert settings == (60, 3, "deny_new")
    assert portal_record.free_packages == [package]
    assert [(c.id, c.name, c.packages) for c in portal_record.channels] == [(channel, "sport", [package])]


async def test_put_never_replaces_a_newer_version(emap: EntitlementMap) -> None:
    key = emap.keys.subscriber(1)
    old, new = SubscriberRecord(9, 1, False, None, []), SubscriberRecord(9, 2, True, None, [])
    assert await emap.put([(key, 5, entitlement_map.encode(5, new))]) == 1
    assert await emap.put([(key, 4, entitlement_map.encode(4, old))]) == 0
    ((entry, _, _),) = await emap.read([(1, 9, True, False)])
    assert entry is not None and entry.record == new


async def test_invalidate_leaves_tombstones_and_raises_the_floor_on_gaps(emap: EntitlementMap) -> None:
    key = emap.keys.subscriber(1)
    await emap.put([(key, 1, entitlement_map.encode(1, SubscriberRecord(9, 1, False, None, [])))])
    assert not await emap.invalidate(9, 1, [key], portal_wide=False)  # first version: no gap
    assert not await emap.invalidate(9, 2, [key], portal_wide=False)
    ((entry, _, floor),) = await emap.read([(1, 9, True, False)])
    assert entry is None and floor == 0  # a tombstone reads as missing
    (raw,) = await emap.commands.run([(emap.space.subscriber_slot(1), ("GET", key))])
    tombstone = entitlement_map.decode(raw)
    assert tombstone is not None and (tombstone.version, tombstone.tag) == (2, INVALID)
    # A slow builder that read version 1 cannot bring the old data back.
    assert await emap.put([(key, 1, entitlement_map.encode(1, SubscriberRecord(9, 1, False, None, [])))]) == 0
    assert await emap.invalidate(9, 5, [], portal_wide=False)  # 3 and 4 never reached Redis
    ((_, _, floor),) = await emap.read([(1, 9, False, False)])
    assert floor == 5


async def test_sync_names_the_portals_redis_fell_behind_on(emap: EntitlementMap) -> None:
    await emap.invalidate(1, 3, [], portal_wide=False)
    assert await emap.sync({1: 3, 2: 4}) == [2]
    assert await emap.sync({1: 4, 2: 4}) == [1]
    results = await emap.read([(0, 1, False, False), (0, 2, False, False)])
    assert [floor for _, _, floor in results] == [4, 4]


async def test_rebuild_writes_every_portal_and_subscriber(pool: asyncpg.Pool, emap: EntitlementMap) -> None:
    portal, _, _, sub = await make_portal(pool)
    other, _, _, other_sub = await make_portal(pool, free=False)
    async with pool.acquire() as conn:
        stats = await entitlement_map.rebuild(conn, emap)
    assert (stats.portals, stats.subscribers) == (2, 2)
    for portal_id, sub_id in ((portal, sub), (other, other_sub)):
        ((entry, portal_entry, _),) = await emap.read([(sub_id, portal_id, True, True)])
        assert entry is not None and entry.tag == SUBSCRIBER and entry.version == 1
        assert portal_entry is not None and portal_entry.tag == PORTAL
        assert isinstance(portal_entry.record, PortalRecord)


async def test_refill_writes_the_named_subscribers_again(pool: asyncpg.Pool, emap: EntitlementMap) -> None:
    portal, _, _, sub = await make_portal(pool)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE subscribers SET disabled = true WHERE id = $1", sub)
        await entitlements.changed(conn, portal, "subscriber", [sub])
    async with pool.acquire() as conn:
        stats = await entitlement_map.refill(conn, emap, portal, [sub], whole=False)
    assert stats.subscribers == 1
    ((entry, _, _),) = await emap.read([(sub, portal, True, False)])
    assert entry is not None and entry.version == 2
    assert isinstance(entry.record, SubscriberRecord) and entry.record.disabled


async def test_entries_from_before_a_slot_was_rebuilt_read_as_missing(emap: EntitlementMap) -> None:
    # What a replica promoted after its primary died holds: markers naming the old
    # primary, and entries written there, some of whose later tombstones may be lost.
    key = emap.keys.subscriber(1)
    slot, portal_slot = emap.space.subscriber_slot(1), emap.space.portal_slot(9)
    old_primary = [(s, ("SET", emap.space.marker(s), "0ld0ld0ld-primary")) for s in (slot, portal_slot)]
    await emap.commands.run(old_primary)
    await emap.put([(key, 5, entitlement_map.encode(5, SubscriberRecord(9, 1, False, None, [])))])
    ((entry, _, floor),) = await emap.read([(1, 9, True, False)])
    assert entry is None and floor == entitlement_map.UNTRUSTED  # not ready on this server
    await catena_redis.mark_ready(emap.commands, emap.space, [slot, portal_slot])
    ((entry, _, floor),) = await emap.read([(1, 9, True, False)])
    assert entry is None and floor == 0  # ready, but the entry was written before
    await emap.put([(key, 5, entitlement_map.encode(5, SubscriberRecord(9, 1, False, None, [])))])
    ((entry, _, _),) = await emap.read([(1, 9, True, False)])
    assert entry is not None and entry.version == 5


async def test_cache_rebuild_command(
    pool: asyncpg.Pool, database_url: str, backend: RedisBackend, redis_prefix: str, emap: EntitlementMap
) -> None:
    portal, _, _, sub = await make_portal(pool)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATENA_")}
    env.update(backend.env, CATENA_DATABASE_URL=database_url, CATENA_REDIS_PREFIX=redis_prefix)
    catena = str(Path(sys.executable).parent / "catena")
    done = await asyncio.to_thread(
        subprocess.run,
        [catena, "cache", "rebuild"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "entitlement map rebuilt: 1 portals, 1 subscribers" in done.stdout
    ((entry, _, _),) = await emap.read([(sub, portal, True, False)])
    assert entry is not None and entry.tag == SUBSCRIBER

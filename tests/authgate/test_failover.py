"""Redis failing under load, for real: a cluster primary and a sentinel primary SIGKILLed,
a whole slot range lost, a Redis hung with SIGSTOP (issue 13 item 3, issue 15 item 5).

Viewers zap through two gateways (``load.Viewers``) while the fault happens; every
answer is judged as it arrives.  The promise (docs/authgate.md, "Failure behaviour"):
no wrong answer ever — no admission over a limit, no allowed check of a subscriber
revoked more than a second before, no refusal of a held session — and ``503`` only
for new sessions Redis cannot count, only while it cannot.  Each test starts servers
of its own: they are killed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from catena.embedded import LocalCluster, LocalSentinel
from catena.redis_keys import KeySpace
from loadtests import check_sessions
from loadtests.faults import Tally, Viewer, Viewers, revoke_now_and_then
from loadtests.viewing import Admitted
from tests.redis_servers import PrivateRedis, RedisBackend, start_cluster, start_sentinel

from .conftest import Gateway, Launcher, Portal, Sub, World, eventually

pytestmark = pytest.mark.slow

# What docs/authgate.md promises, with the tests' timings (node timeout / down-after 1 s):
# new sessions of the failed primary's subscribers get 503 from its death until its
# replica is promoted (node timeout + election, ~2 s here) and their counts are rebuilt
# (SETTLE 1.5 s + re-count); an allowance for a busy machine on top.
FAILOVER_503_BOUND = 12.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    servers = start_cluster(tmp_path / "cluster")
    yield servers
    servers.stop()


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[LocalSentinel]:
    group = start_sentinel(tmp_path / "sentinel")
    yield group
    group.stop()


async def scene(world: World, count: int = 12, victims: int = 4) -> tuple[Portal, list[Sub], list[Sub]]:
    portal = await world.portal(maxSessions=1)
    await world.package(portal, "basic")
    await world.channel(portal, "sport", ["basic"])
    watchers = [await world.subscriber(portal, ["basic"]) for _ in range(count)]
    doomed = [await world.subscriber(portal, ["basic"]) for _ in range(victims)]
    return portal, watchers, doomed


async def two_gateways(launcher: Launcher, backend: RedisBackend, **overrides: Any) -> list[Gateway]:
    gateways = [await launcher.using(backend).start(**overrides) for _ in range(2)]
    for gateway in gateways:
        await until_redis(gateway, "up", timeout=20.0)
    return gateways


async def health(gateway: Gateway) -> dict[str, object]:
    status, _, body = await gateway.request("GET", "/health")
    return {"status_code": status, **msgspec.json.decode(body)}


async def until_redis(gateway: Gateway, state: str, timeout: float = 15.0) -> float:
    """Seconds until the gateway's /health says ``redis: state``."""
    started = time.monotonic()

    async def matches() -> bool:
        return (await health(gateway))["redis"] == state

    assert await eventually(matches, timeout=timeout, step=0.05), await health(gateway)
    return time.monotonic() - started


def viewer(sub: Sub, limit: int = 1) -> Viewer:
    return Viewer(sub.id, sub.text_id, sub.token, limit)


async def under_load(
    world: World, gateways: list[Gateway], watchers: list[Sub], doomed: list[Sub], seconds: float
) -> tuple[Viewers, asyncio.Task[Tally]]:
    """Viewers for ``seconds``; one of ``doomed`` disabled every so often meanwhile."""
    viewers = Viewers([g.url for g in gateways], [viewer(sub) for sub in watchers + doomed])
    running = asyncio.create_task(viewers.run(seconds))

    async def disable(target: Viewer) -> None:
        sql = "UPDATE subscribers SET disabled = true WHERE id = $1"
        await world.change(Portal(doomed[0].portal_id, ""), "subscriber", [target.id], sql, target.id)

    every = seconds / (len(doomed) + 1)
    revoking = asyncio.create_task(revoke_now_and_then(disable, viewers, [viewer(s) for s in doomed], every))
    running.add_done_callback(lambda _: revoking.cancel())
    return viewers, running


async def recorded_once(pool: asyncpg.Pool, portal: Portal, tally: Tally) -> check_sessions.Findings:
    """What PostgreSQL recorded: no subscriber above its limit, every admitted session once."""
    async with pool.acquire() as conn:
        return await check_sessions.check(conn, portal.id, [Admitted(s, "") for s in tally.admitted])


def report(name: str, tally: Tally, **figures: object) -> None:
    shown = ", ".join(f"{k} {v}" for k, v in figures.items())
    print(f"\n{name}: {tally.summary()}; {shown}")


async def test_cluster_primary_killed_under_load(
    world: World, launcher: Launcher, cluster: LocalCluster, pool: asyncpg.Pool
) -> None:
    backend = RedisBackend.cluster(cluster)
    portal, watchers, doomed = await scene(world)
    gateways = await two_gateways(launcher, backend)
    viewers, running = await under_load(world, gateways, watchers, doomed, 16.0)
    await asyncio.sleep(3.0)
    victim = cluster.primaries()[0]
    replica = cluster.replica_of(victim)
    killed_at = time.monotonic()
    victim.kill()
    tally = await running
    # The replica took over and the gateways know it.
    assert replica is not None and replica in cluster.primaries()
    for gateway in gateways:
        await until_redis(gateway, "up")
        await gateway.stop()
    findings = await recorded_once(pool, portal, tally)
    window = [t - killed_at for t in tally.unavailable]
    report(
        "cluster primary SIGKILL",
        tally,
        unavailable_after_kill=f"{min(window, default=0):.2f}..{max(window, default=0):.2f} s",
        recorded=findings.summary().replace("\n", "; "),
    )
    assert tally.wrong == [], tally.wrong[:10]
    assert tally.other_5xx == [] and tally.failures == []
    assert all(0 <= t <= FAILOVER_503_BOUND for t in window), window
    assert findings.ok, findings.summary()


async def test_sentinel_failover_under_load(
    world: World, launcher: Launcher, sentinel: LocalSentinel, pool: asyncpg.Pool
) -> None:
    backend = RedisBackend.sentinel(sentinel)
    portal, watchers, doomed = await scene(world)
    gateways = await two_gateways(launcher, backend)
    viewers, running = await under_load(world, gateways, watchers, doomed, 16.0)
    await asyncio.sleep(3.0)
    old = sentinel.current_primary()
    assert old is sentinel.primary
    killed_at = time.monotonic()
    print(f"\nkilling the sentinel primary at {time.strftime('%H:%M:%S')}, load {os.getloadavg()}")
    old.kill()
    tally = await running
    assert sentinel.current_primary() is sentinel.replica
    for gateway in gateways:
        await until_redis(gateway, "up")
        await gateway.stop()
    findings = await recorded_once(pool, portal, tally)
    window = [t - killed_at for t in tally.unavailable]
    report(
        "sentinel failover",
        tally,
        unavailable_after_kill=f"{min(window, default=0):.2f}..{max(window, default=0):.2f} s",
        recorded=findings.summary().replace("\n", "; "),
    )
    assert tally.wrong == [], tally.wrong[:10]
    assert tally.other_5xx == [] and tally.failures == []
    assert all(0 <= t <= FAILOVER_503_BOUND for t in window), window
    assert findings.ok, findings.summary()


async def test_a_lost_slot_range_gets_503_for_its_subscribers_only_and_recovers(
    world: World, launcher: Launcher, cluster: LocalCluster
) -> None:
    backend = RedisBackend.cluster(cluster)
    portal, watchers, _ = await scene(world, count=30, victims=0)
    gateways = await two_gateways(launcher, backend)
    primary = cluster.primaries()[0]
    replica = cluster.replica_of(primary)
    assert replica is not None
    (low, high), *_ = cluster.slots_of(primary)
    keys = KeySpace(launcher.redis_prefix)
    lost = [s for s in watchers if low <= keys.subscriber_slot(s.id) <= high]
    kept = [s for s in watchers if s not in lost]
    assert lost and kept
    replica.kill()
    primary.kill()
    for gateway in gateways:
        await until_redis(gateway, "partial")
    gateway = gateways[0]
    for sub in lost:
        assert (await gateway.auth(sub, "sport")).status == 503
    for sub in kept:
        assert (await gateway.auth(sub, "sport")).status == 200
    # The range comes back: everything answers again, by itself.
    primary.start()
    replica.start()
    for gateway in gateways:
        await until_redis(gateway, "up", timeout=30.0)
    for sub in lost:
        answer = await gateways[1].auth(sub, "sport")
        assert answer.status == 200, answer
    for gateway in gateways:
        await gateway.stop()


async def test_a_hung_redis_never_freezes_answers(world: World, launcher: Launcher, tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path / "hung")
    server.start()
    try:
        portal, watchers, doomed = await scene(world)
        gateways = [await launcher.start(redis_url=server.url, auth_redis_timeout=0.05) for _ in range(2)]
        for gateway in gateways:
            await until_redis(gateway, "up", timeout=20.0)
        viewers, running = await under_load(world, gateways, watchers, doomed, 14.0)
        await asyncio.sleep(3.0)
        stopped_at = time.monotonic()
        server.signal(signal.SIGSTOP)
        noticed = max([await until_redis(g, "down", timeout=5.0) for g in gateways])
        await asyncio.sleep(5.0)
        server.signal(signal.SIGCONT)
        resumed_at = time.monotonic()
        back = max([await until_redis(g, "up", timeout=15.0) for g in gateways])
        tally = await running
        for gateway in gateways:
            await gateway.stop()
    finally:
        server.stop()
    hung_p99 = tally.percentile(0.99, stopped_at, resumed_at)
    hung = [(s, at - stopped_at) for at, s in tally.latencies if stopped_at <= at <= resumed_at]
    print("\nslowest while hung (s, at):", [(round(s, 3), round(at, 2)) for s, at in sorted(hung)[-12:]])
    report(
        "hung Redis (SIGSTOP 5 s)",
        tally,
        p99_while_hung=f"{hung_p99 * 1000:.1f} ms",
        health_down_after=f"{noticed:.2f} s",
        health_up_after=f"{back:.2f} s",
    )
    assert tally.wrong == [], tally.wrong[:10]
    assert tally.other_5xx == [] and tally.failures == []
    # A freeze would hold answers for seconds (the client timeout, or Redis's return);
    # the figure itself (goal: p99 < 100 ms) is measured by make bench-redis-faults.
    assert hung_p99 < 1.0, hung_p99
    assert noticed < 2.0

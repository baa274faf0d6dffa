"""Redis modes (catena/redis.py): the variables, the key layout, and bad settings stopping
every service at start with a message naming the variable — never a hang."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis.crc import key_slot as redis_py_slot

from catena import redis as catena_redis
from catena.embedded import LocalCluster, LocalSentinel
from catena.redis import RedisSettingsError, target
from catena.redis_keys import SLOTS, KeySpace, key_slot
from tests.redis_servers import PrivateRedis

ROOT = Path(__file__).resolve().parents[2]
SECRETS = "t1:test-secret-for-the-redis-modes-0123456789"
# Bad settings must stop a service well within this (no hang on an unusable Redis).
STOP_WITHIN = 30.0


# ---------------------------------------------------------------- the variables


@pytest.mark.parametrize(
    ("mode", "url", "sentinels", "service", "variable", "words"),
    [
        ("clustr", "redis://127.0.0.1:7000", "", "", "CATENA_REDIS_MODE", "expected one of"),
        ("cluster", "redis://a:7000,redis://b:notaport", "", "", "CATENA_REDIS_URL", "entry 2"),
        ("cluster", "redis://a:7000/3", "", "", "CATENA_REDIS_URL", "database 0 only"),
        ("cluster", "redis://a:7000,unix:///tmp/redis.sock", "", "", "CATENA_REDIS_URL", "over TCP"),
        ("cluster", "http://a:7000", "", "", "CATENA_REDIS_URL", "not a redis://"),
        ("sentinel", "redis://x:1", "", "m", "CATENA_REDIS_SENTINELS", "required"),
        ("sentinel", "redis://x:1", "a:26379,b", "m", "CATENA_REDIS_SENTINELS", "entry 2"),
        ("sentinel", "redis://x:1", "a:26379", "", "CATENA_REDIS_SENTINEL_SERVICE", "required"),
        ("single", "ftp://a", "", "", "CATENA_REDIS_URL", "not a redis://"),
    ],
)
def test_malformed_settings_name_the_variable(
    mode: str, url: str, sentinels: str, service: str, variable: str, words: str
) -> None:
    with pytest.raises(RedisSettingsError) as caught:
        target(mode, url, sentinels, service)
    assert str(caught.value).startswith(variable + ":") and words in str(caught.value)


def test_well_formed_settings() -> None:
    cluster = target("cluster", "redis://a:7000, rediss://:pw@b:7001")
    assert cluster.nodes == (("a", 7000), ("b", 7001))
    sentinel = target("sentinel", "redis://:secret@ignored/2", "s1:26379,[::1]:26380", "catena")
    assert sentinel.nodes == (("s1", 26379), ("::1", 26380)) and sentinel.options["db"] == 2
    assert target("single", "unix:///tmp/r.sock").options["path"] == "/tmp/r.sock"
    assert "***" in target("single", "redis://:hunter2@h:1/0").describe()


# ---------------------------------------------------------------- the key layout


def test_every_slot_has_a_marker_in_that_slot() -> None:
    keys = KeySpace("catena")
    markers = [keys.marker(slot) for slot in range(SLOTS)]
    assert [redis_py_slot(m.encode()) for m in markers] == list(range(SLOTS))
    assert len(set(markers)) == SLOTS


def test_keys_a_script_touches_together_share_a_slot() -> None:
    keys = KeySpace("deploy-a")
    for subscriber in (1, 42, 386810278269943808, 2**62 + 5):
        slot = keys.subscriber_slot(subscriber)
        together: list[str | bytes] = [
            keys.subscriber_entry(subscriber),
            *keys.sessions(subscriber),
            keys.marker(slot),
        ]
        assert {key_slot(k) for k in together} == {slot}
        assert all(redis_py_slot(k if isinstance(k, bytes) else k.encode()) == slot for k in together)
        portal = [keys.portal_entry(subscriber), keys.floor(subscriber), keys.seen(subscriber)]
        portal.append(keys.refill_claim(subscriber, 7))
        assert {key_slot(k) for k in portal} == {keys.portal_slot(subscriber)}


def test_subscribers_spread_over_the_slots() -> None:
    keys = KeySpace("catena")
    slots = {keys.subscriber_slot(386810278269943808 + i * 4096) for i in range(10_000)}
    assert len(slots) > 7_000  # no hot slot: three primaries get a third each


# ---------------------------------------------------------------- services refuse bad settings


def service_env(tmp_path: Path, database_url: str, **redis: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATENA_")}
    env.update(
        CATENA_DATABASE_URL=database_url,
        CATENA_TOKEN_SECRETS=SECRETS,
        CATENA_VAR_DIR=str(tmp_path / "var"),
        CATENA_AUTH_PORT="0",
        CATENA_ADMIN_PORT="0",
        CATENA_EPG_PORT="0",
    )
    env.update({f"CATENA_REDIS_{k.upper()}": v for k, v in redis.items()})
    return env


async def refused(argv: list[str], env: dict[str, str]) -> str:
    """Run ``argv``; it must exit non-zero within ``STOP_WITHIN``; its output."""
    started = time.monotonic()
    done = await asyncio.to_thread(
        subprocess.run, argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=STOP_WITHIN
    )
    assert done.returncode != 0, done.stdout + done.stderr
    assert time.monotonic() - started < STOP_WITHIN
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr


SERVICES = {
    "authgate": [sys.executable, "-m", "authgate"],
    "admin_api": [sys.executable, "-m", "admin_api"],
    "epg_worker": [sys.executable, "-m", "epg_worker"],
    "catena cache rebuild": [sys.executable, "-m", "catena", "cache", "rebuild"],
}


@pytest.fixture(scope="module")
def plain_redis(tmp_path_factory: pytest.TempPathFactory) -> object:
    server = PrivateRedis(tmp_path_factory.mktemp("plain-redis"))
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("service", list(SERVICES))
async def test_a_plain_redis_named_as_a_cluster_stops_every_service(
    service: str, tmp_path: Path, database_url: str, plain_redis: PrivateRedis
) -> None:
    env = service_env(tmp_path, database_url, mode="cluster", url=plain_redis.url)
    stderr = await refused(SERVICES[service], env)
    assert "CATENA_REDIS_URL" in stderr and "not a Redis Cluster node" in stderr


async def test_an_unknown_sentinel_service_stops_the_gateway(
    tmp_path: Path, database_url: str, redis_sentinel: LocalSentinel
) -> None:
    env = service_env(tmp_path, database_url, mode="sentinel", sentinels=redis_sentinel.addresses)
    env["CATENA_REDIS_SENTINEL_SERVICE"] = "no-such-primary"
    stderr = await refused(SERVICES["authgate"], env)
    assert "CATENA_REDIS_SENTINEL_SERVICE" in stderr and "no-such-primary" in stderr


async def test_a_plain_redis_named_as_a_sentinel_stops_the_gateway(
    tmp_path: Path, database_url: str, plain_redis: PrivateRedis
) -> None:
    entry = f"127.0.0.1:{plain_redis.port}"
    env = service_env(tmp_path, database_url, mode="sentinel", sentinels=entry, sentinel_service="x")
    stderr = await refused(SERVICES["authgate"], env)
    assert "CATENA_REDIS_SENTINELS" in stderr and "not a sentinel" in stderr


async def test_a_cluster_node_named_as_a_single_server_stops_the_gateway(
    tmp_path: Path, database_url: str, redis_cluster: LocalCluster
) -> None:
    env = service_env(tmp_path, database_url, mode="single", url=redis_cluster.nodes[0].url)
    stderr = await refused(SERVICES["authgate"], env)
    assert "CATENA_REDIS_URL" in stderr and "CATENA_REDIS_MODE=cluster" in stderr


@pytest.mark.parametrize("service", ["authgate", "admin_api"])
async def test_a_wrong_mode_or_node_entry_stops_a_service(
    service: str, tmp_path: Path, database_url: str
) -> None:
    stderr = await refused(SERVICES[service], service_env(tmp_path, database_url, mode="clustr"))
    assert "CATENA_REDIS_MODE: expected one of single, cluster, sentinel, got 'clustr'" in stderr
    env = service_env(tmp_path, database_url, mode="cluster", url="redis://127.0.0.1:7000,127.0.0.1:7001")
    assert "CATENA_REDIS_URL: entry 2" in await refused(SERVICES[service], env)


async def test_unreachable_servers_do_not_stop_the_check(tmp_path: Path) -> None:
    # A Redis that is down at start is not a settings error: the gateway starts and waits.
    where = target("cluster", "redis://127.0.0.1:1")
    with pytest.raises(catena_redis.Unreachable):
        await catena_redis.verify(where, timeout=0.5)

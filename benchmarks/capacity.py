"""``make bench-capacity``: the per-item costs behind docs/scaling.md, measured.

Redis (a private ``redis-server`` of the project's, nothing else in it):

* bytes per subscriber entry of the entitlement map, written by the map's own
  script (a subscriber with one to three packages, stamped, with its TTL);
* bytes of a portal entry with ``--channels`` channels in one to three packages;
* bytes per subscriber holding sessions and per session counted (the limiter's
  sorted set and hash, as its script leaves them);
* the 16,384 ready markers of a deployment.

PostgreSQL (a scratch database with the migrations, dropped at the end):

* bytes per play session (``play_sessions`` row, its ``play_session_ids`` row and
  their indexes), rows as the gateway writes them (a UUID, a JWT, a user agent…);
* bytes per operations-log row (a typical ``updateSubscriber`` payload).

It prints one line per coefficient; docs/scaling.md turns them into hardware.  The
throughput coefficients (checks per second per core, Redis commands per 1,000
checks) come from ``make bench-auth``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import redis

from benchmarks.auth_harness import infra
from catena import db, ids
from catena import redis as catena_redis
from catena.embedded import LocalRedis, free_cluster_ports
from catena.entitlement_map import ChannelRecord, EntitlementMap, PortalRecord, SubscriberRecord, encode
from catena.redis_keys import KeySpace
from catena.settings import SettingsError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench-capacity", description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=50_000, help="entries and session holders")
    parser.add_argument("--channels", type=int, default=500, help="channels of the portal entry")
    parser.add_argument("--rows", type=int, default=100_000, help="play sessions and operations rows")
    args = parser.parse_args(argv)
    try:
        print("\n".join(redis_costs(args.subscribers, args.channels)), flush=True)
        print("\n".join(postgres_costs(args.rows)), flush=True)
    except SettingsError as exc:
        sys.exit(f"bench-capacity: {exc}")


# ---------------------------------------------------------------- Redis


def redis_costs(subscribers: int, channels: int) -> list[str]:
    directory = Path(tempfile.mkdtemp(prefix="catena-capacity-"))
    server = LocalRedis(directory, free_cluster_ports(1)[0])
    server.start()
    try:
        return asyncio.run(_measure_redis(server.url, subscribers, channels))
    finally:
        server.stop()


async def _measure_redis(url: str, subscribers: int, channels: int) -> list[str]:
    client = catena_redis.connect(url)
    sync = redis.Redis.from_url(url)
    keys = KeySpace("catena")
    emap = EntitlementMap(client, "catena")
    try:
        lines = [f"Redis {sync.info('server')['redis_version']}, {subscribers:,} subscribers"]
        used = _used(sync)
        await catena_redis.mark_ready(emap.commands, keys)
        lines.append(_line("ready markers (all 16,384 slots)", _used(sync) - used, 1))
        used = _used(sync)
        await _write_subscribers(emap, subscribers)
        lines.append(_line("subscriber entry", _used(sync) - used, subscribers))
        await emap.put([(keys.portal_entry(1), 1, encode(1, _portal(channels)))])
        size = int(sync.memory_usage(keys.portal_entry(1)) or 0)
        lines.append(_line(f"portal entry with {channels} channels", size, 1))
        for sessions in (1, 2):
            used = _used(sync)
            _count_sessions(sync, keys, subscribers, sessions, offset=sessions * 10_000_000)
            lines.append(_line(f"subscriber holding {sessions} session(s)", _used(sync) - used, subscribers))
        for per_call in (1, 100):
            micros = await _admission_cost(emap, sync, keys, min(subscribers, 20_000), per_call)
            lines.append(
                f"  {f'Redis CPU per admission, {per_call} per script call':<44} {micros:>12.1f} µs each"
            )
        return lines
    finally:
        await client.aclose()
        sync.close()


async def _admission_cost(
    emap: EntitlementMap, client: redis.Redis, keys: KeySpace, count: int, per_call: int
) -> float:
    """Redis CPU per session admitted by the limiter's script, ``per_call`` sessions per call
    (a cluster sends about one per call, one server a whole loop turn's)."""
    from authgate.session_limiter import _ADMIT

    client.config_resetstat()
    now = int(time.time() * 1000)
    offset = 30_000_000 + per_call * 1_000_000
    calls = []
    for start in range(0, count, per_call):
        subscribers = range(offset + start, offset + min(count, start + per_call))
        names = [k for s in subscribers for k in (keys.marker(keys.subscriber_slot(s)), *keys.sessions(s))]
        words = b" ".join(
            b"%s %d 2 0 %d a" % (secrets.token_hex(16).encode(), now + 240_000, now) for _ in subscribers
        )
        calls.append(_ADMIT.call(0, names, [now, catena_redis.RUN_ID, words]))
    for start in range(0, len(calls), 200):
        catena_redis.first_error(await _ADMIT.run(emap.commands, calls[start : start + 200]))
    stats = client.info("commandstats")
    spent = sum(stats.get(f"cmdstat_{name}", {}).get("usec", 0) for name in ("evalsha", "eval"))
    return float(spent) / count


def _used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def _line(what: str, total: int, count: int) -> str:
    return f"  {what:<44} {total / count:>12,.0f} bytes each"


async def _write_subscribers(emap: EntitlementMap, count: int) -> None:
    rng = random.Random(7)
    for start in range(0, count, 500):
        items = []
        for subscriber_id in range(start + 1, min(count, start + 500) + 1):
            sub = ids.new_id() + subscriber_id
            record = SubscriberRecord(
                1, 1, False, None, sorted(rng.sample(range(10**17, 10**17 + 50), rng.randint(1, 3)))
            )
            items.append((emap.keys.subscriber(sub), 1, encode(1, record)))
        await emap.put(items)


def _portal(channels: int) -> PortalRecord:
    rng = random.Random(8)
    packages = [ids.new_id() for _ in range(50)]
    records = [
        ChannelRecord(ids.new_id(), f"channel-{i:04d}", rng.sample(packages, rng.randint(1, 3)))
        for i in range(channels)
    ]
    return PortalRecord(180, 7, 2, "deny_new", packages[:1], records)


def _count_sessions(
    client: redis.Redis, keys: KeySpace, subscribers: int, sessions: int, offset: int
) -> None:
    """What the limiter's script leaves for a subscriber with ``sessions`` sessions counted."""
    expiry = int(time.time() * 1000) + 3_600_000
    pipe = client.pipeline(transaction=False)
    for n in range(subscribers):
        counted, opened, _ = keys.sessions(offset + n)
        for _ in range(sessions):
            session = secrets.token_hex(16)  # Flussonic's ids are 32 hex characters
            pipe.zadd(counted, {session: expiry})
            pipe.hset(opened, session, expiry - 3_600_000)
        pipe.pexpireat(counted, expiry)
        pipe.pexpireat(opened, expiry)
        if n % 1000 == 999:
            pipe.execute()
    pipe.execute()


# ---------------------------------------------------------------- PostgreSQL

_SIZE = """
SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
  AND (c.relname = ANY($1) OR EXISTS (
       SELECT 1 FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
       WHERE i.inhrelid = c.oid AND p.relname = ANY($1)))
"""


def postgres_costs(rows: int) -> list[str]:
    backends = infra.start_backends(Path("var/bench").resolve())
    try:
        return asyncio.run(_in_scratch_database(backends, rows))
    finally:
        infra.clean_up(backends)


async def _in_scratch_database(backends: infra.Backends, rows: int) -> list[str]:
    await infra.create_database(backends)
    conn = await db.connect(backends.database_url)
    try:
        return await _measure_postgres(conn, rows)
    finally:
        await conn.close()


async def _measure_postgres(conn: asyncpg.Connection, rows: int) -> list[str]:
    version = await conn.fetchval("SHOW server_version")
    portal = await _portal_row(conn)
    lines = [f"PostgreSQL {version}, {rows:,} rows"]
    before = await conn.fetchval(_SIZE, ["play_sessions", "play_session_ids"])
    await _play_sessions(conn, portal, rows)
    after = await conn.fetchval(_SIZE, ["play_sessions", "play_session_ids"])
    lines.append(_line("play session (row, id mapping, indexes)", after - before, rows))
    before = await conn.fetchval(_SIZE, ["operations", "operation_feed"])
    await _operations(conn, portal, rows)
    after = await conn.fetchval(_SIZE, ["operations", "operation_feed"])
    lines.append(_line("operations-log row (with indexes)", after - before, rows))
    return lines


async def _portal_row(conn: asyncpg.Connection) -> int:
    portal_id = ids.new_id()
    await conn.execute(
        "INSERT INTO portals (id, name, domain, api_key, settings) VALUES ($1, 'capacity', '', $2, '{}')",
        portal_id,
        secrets.token_urlsafe(16),
    )
    return portal_id


async def _play_sessions(conn: asyncpg.Connection, portal: int, rows: int) -> None:
    now = time.time()
    token = "eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0." + "x" * 120 + "." + "y" * 43
    agent = "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) TV Safari/537.36"
    ids_rows, session_rows = [], []
    for n in range(rows):
        row_id, flussonic = (
            ids.new_id(),
            f"{secrets.token_hex(4)}-{secrets.token_hex(2)}-4{secrets.token_hex(2)[1:]}-8{secrets.token_hex(2)[1:]}-{secrets.token_hex(6)}",
        )
        opened = _ts(now - 3600 + n % 3600)
        ids_rows.append((flussonic, row_id, portal))
        session_rows.append(
            (
                row_id,
                portal,
                ids.new_id(),
                None,
                f"channel-{n % 500:04d}",
                flussonic,
                opened,
                opened,
                None,
                n * 1_000_000,
                f"10.{n % 250}.{n % 199}.{n % 97}",
                agent,
                token,
                f"tv-{n:08d}",
                "hls",
                "edge-01",
            )
        )
    await conn.copy_records_to_table(
        "play_session_ids", records=ids_rows, columns=["flussonic_id", "id", "portal_id"]
    )
    await conn.copy_records_to_table(
        "play_sessions",
        records=session_rows,
        columns=[
            "id",
            "portal_id",
            "subscriber_id",
            "channel_id",
            "channel_name",
            "flussonic_id",
            "opened_at",
            "updated_at",
            "closed_at",
            "bytes",
            "ip",
            "user_agent",
            "token",
            "device_id",
            "proto",
            "server",
        ],
    )
    await conn.execute("ANALYZE play_sessions")


def _ts(seconds: float) -> object:
    import datetime

    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)


async def _operations(conn: asyncpg.Connection, portal: int, rows: int) -> None:
    payload = {"managerEmail": "billing@operator.example", "name": "Ivan Petrov", "maxSessions": 2}
    now = _ts(time.time())
    kind = "updateSubscriber"
    records = [(ids.new_id(), portal, kind, ids.new_id(), payload, now, now) for _ in range(rows)]
    await conn.executemany(
        "INSERT INTO operations (id, portal_id, type, subscriber_id, payload, created_at, updated_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7)",
        records,
    )


if __name__ == "__main__":
    main()

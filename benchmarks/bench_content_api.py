"""Latency of ``GET /channels?limit=100`` in a portal with 100,000 channels (issue #3).

Run it with one command (it makes its own database and drops it afterwards)::

    .venv/bin/python benchmarks/bench_content_api.py            # or: make bench-content

It creates a fresh database on ``--database-url``'s server, applies the migrations,
makes a portal with ``--channels`` channels (every channel in one to two of 50
packages, every tenth with a logo), starts ``python -m admin_api`` as a separate
process on 127.0.0.1:``--port`` and measures, one request at a time over a
keep-alive connection:

- ``channels, full walk``: every page of the list, following ``next`` from the start;
- ``channels, random pages``: pages starting after a randomly chosen channel;
- ``baseline: GET /portal``: the same stack (HTTP, auth, one small query), for scale;
- ``baseline: page SQL only``: the list's SQL statement straight through asyncpg;

then ``channels, random pages`` again with ``--concurrency`` clients at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from admin_api import channels  # noqa: E402
from catena import db, ids, migrations, portals  # noqa: E402
from catena.pagination import Cursors  # noqa: E402

BASE = "/tv-management/api/v1"
PACKAGES = 50
# The server under test is given this secret, so cursors made here are its own.
TOKEN_SECRETS = "bench:catena-content-benchmark-secret-0123456789"
CURSORS = Cursors(TOKEN_SECRETS)
# The smallest PNG signature plus a few bytes: the list only asks whether a logo exists.
LOGO = b"\x89PNG\r\n\x1a\n" + bytes(64)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("CATENA_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("CATENA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/1")
    )
    parser.add_argument("--channels", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2000, help="random-page requests per run")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--port", type=int, default=8110)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    return parser.parse_args()


def database_url(server_url: str, name: str) -> str:
    head, sep, query = server_url.partition("?")
    scheme, _, rest = head.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}/{name}{sep}{query}"


async def populate(url: str, count: int) -> tuple[str, int, list[int]]:
    """Make the portal and its catalogue; return the API key, the portal id and channel ids."""
    conn = await db.connect(url)
    try:
        await migrations.apply(conn)
        await ids.claim_node(conn)
        created = await portals.create(
            conn, name="bench", domain="bench.localhost", owner_email="owner@bench.localhost", bcrypt_rounds=4
        )
        portal_id = ids.decode(created.portalId)
        assert portal_id is not None
        channel_ids = await _catalogue(conn, portal_id, count)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return created.apiKey, portal_id, channel_ids


async def _catalogue(conn: asyncpg.Connection, portal_id: int, count: int) -> list[int]:
    channel_ids = [ids.new_id() for _ in range(count)]
    package_ids = [ids.new_id() for _ in range(PACKAGES)]
    await conn.copy_records_to_table(
        "packages",
        columns=["id", "portal_id", "name"],
        records=[(p, portal_id, f"package-{i}") for i, p in enumerate(package_ids)],
    )
    await conn.copy_records_to_table(
        "channels",
        columns=["id", "portal_id", "name", "title"],
        records=[(c, portal_id, f"ch{i}", f"Канал {i}") for i, c in enumerate(channel_ids)],
    )
    links = {(package_ids[i % PACKAGES], c) for i, c in enumerate(channel_ids)}
    links |= {(package_ids[(i * 7 + 3) % PACKAGES], c) for i, c in enumerate(channel_ids) if i % 2 == 0}
    await conn.copy_records_to_table(
        "channel_packages",
        columns=["package_id", "channel_id", "portal_id"],
        records=[(p, c, portal_id) for p, c in links],
    )
    await conn.copy_records_to_table(
        "channel_logos",
        columns=["channel_id", "content_type", "data", "etag"],
        records=[(c, "image/png", LOGO, "bench") for c in channel_ids[::10]],
    )
    return channel_ids


def start_server(args: argparse.Namespace, url: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CATENA_DATABASE_URL": url,
        "CATENA_REDIS_URL": args.redis_url,
        "CATENA_TOKEN_SECRETS": TOKEN_SECRETS,
        "CATENA_REDIS_PREFIX": "catena-bench-" + secrets.token_hex(4),
        "CATENA_ADMIN_HOST": "127.0.0.1",
        "CATENA_ADMIN_PORT": str(args.port),
        "CATENA_WEBHOOKS_ENABLED": "false",
        "CATENA_LOG_LEVEL": "warning",
    }
    return subprocess.Popen([sys.executable, "-m", "admin_api"], cwd=ROOT, env=env)


async def wait_healthy(session: aiohttp.ClientSession, origin: str) -> None:
    for _ in range(200):
        try:
            async with session.get(origin + "/health") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("admin_api did not become healthy")


async def timed(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    """Run ``call`` ``count`` times one after another; return each latency in milliseconds."""
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def get_ok(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> dict[str, Any]:
    async with session.get(url, headers=headers) as resp:
        if resp.status != 200:
            raise SystemExit(f"GET {url} answered {resp.status}: {await resp.text()}")
        body: dict[str, Any] = await resp.json()
        return body


def random_page_url(origin: str, channel_ids: list[int]) -> str:
    # Signed with the secrets the server reads from the same environment.
    cursor = CURSORS.encode("channels", (random.choice(channel_ids),))
    return f"{origin}{BASE}/channels?limit=100&cursor={cursor}"


async def walk(
    session: aiohttp.ClientSession, origin: str, headers: dict[str, str]
) -> tuple[list[float], int]:
    """Every page from the start, following ``next``; latency per page and channels seen."""
    samples, seen = [], 0
    url: str | None = f"{origin}{BASE}/channels?limit=100"
    while url is not None:
        started = time.perf_counter()
        body = await get_ok(session, url, headers)
        samples.append((time.perf_counter() - started) * 1000)
        seen += len(body["channels"])
        url = f"{origin}{BASE}/channels?limit=100&cursor={body['next']}" if body.get("next") else None
    return samples, seen


async def concurrent(
    session: aiohttp.ClientSession,
    origin: str,
    headers: dict[str, str],
    channel_ids: list[int],
    total: int,
    clients: int,
) -> tuple[list[float], float]:
    samples: list[float] = []

    async def client() -> None:
        for _ in range(total // clients):
            started = time.perf_counter()
            await get_ok(session, random_page_url(origin, channel_ids), headers)
            samples.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return samples, len(samples) / (time.perf_counter() - started)


def summary(name: str, samples: list[float], extra: str = "") -> str:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return (
        f"{name:<34} n={len(samples):>5}  p50={cuts[49]:7.2f} ms  p99={cuts[98]:7.2f} ms  "
        f"max={max(samples):7.2f} ms {extra}"
    )


async def sql_only(url: str, portal_id: int, channel_ids: list[int], count: int) -> list[float]:
    conn = await db.connect(url)
    try:
        statement = await conn.prepare(channels._LIST)

        async def one() -> None:
            await statement.fetch(portal_id, random.choice(channel_ids), 101)

        await timed(one, 100)
        return await timed(one, count)
    finally:
        await conn.close()


async def measure(
    args: argparse.Namespace, url: str, api_key: str, portal_id: int, channel_ids: list[int]
) -> None:
    origin = f"http://127.0.0.1:{args.port}"
    headers = {"X-Auth-Token": api_key}
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await wait_healthy(session, origin)
        random_page = lambda: get_ok(session, random_page_url(origin, channel_ids), headers)  # noqa: E731
        await timed(random_page, 300)  # warm-up: connections, statement caches, buffers
        walk_samples, seen = await walk(session, origin, headers)
        lines = [summary("channels, full walk", walk_samples, f"({seen} channels seen)")]
        lines.append(summary("channels, random pages", await timed(random_page, args.requests)))
        portal = lambda: get_ok(session, f"{origin}{BASE}/portal", headers)  # noqa: E731
        await timed(portal, 100)
        lines.append(summary("baseline: GET /portal", await timed(portal, args.requests)))
        lines.append(
            summary("baseline: page SQL only", await sql_only(url, portal_id, channel_ids, args.requests))
        )
        samples, rate = await concurrent(
            session, origin, headers, channel_ids, args.requests, args.concurrency
        )
        lines.append(summary(f"channels, random, {args.concurrency} clients", samples, f"({rate:.0f} req/s)"))
    print("\n".join(lines))


async def main() -> None:
    args = arguments()
    name = "catena_bench_" + secrets.token_hex(4)
    admin = await asyncpg.connect(args.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = database_url(args.database_url, name)
    server = None
    try:
        started = time.perf_counter()
        api_key, portal_id, channel_ids = await populate(url, args.channels)
        print(
            f"{args.channels} channels, {PACKAGES} packages made in {time.perf_counter() - started:.1f} s; "
            f"CPUs: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}"
        )
        server = start_server(args, url)
        await measure(args, url, api_key, portal_id, channel_ids)
        print(f"load average afterwards: {os.getloadavg()[0]:.2f}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if not args.keep:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())

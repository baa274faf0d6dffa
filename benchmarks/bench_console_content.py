"""Server time of the console's content pages (Channels, Packages, EPG sources) with
100,000 rows, through ``python -m admin_api`` as operators reach it.

Run it with one command::

    .venv/bin/python benchmarks/bench_console_content.py   # make bench-console-content; --quick: a tenth

It builds the catalogue of ``benchmarks/bench_content_api.py`` (100,000 channels in
50 packages of about 3,000 channels each, an EPG source with programmes for every
other channel; 100,000 packages with 100,000 subscribers in a second portal) in a
fresh database (``--database-url``; by default embedded PostgreSQL and Redis under
``var/bench-console/``), starts the admin API on 127.0.0.1:``--port``, signs in to
the console as each portal's owner and times, one request at a time over a
keep-alive connection, every page the three screens serve: the lists' first and
random later pages, their searches, the channel form (with its EPG source and guide
selects), a package with its composition, an EPG source with its history and the
programme browser.  It is ``make bench-console``'s large-catalogue variant (that one
measures every page with 1,000 channels and 50 packages) and prints the same table,
through the same functions (``benchmarks/bench_console.py``'s ``sign_in`` and ``table``).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import bench_console as console  # noqa: E402
from benchmarks import bench_content_api as content  # noqa: E402
from catena import ids, portals, testing  # noqa: E402
from catena.embedded import EmbeddedPostgres, EmbeddedRedis  # noqa: E402

PASSWORDS: dict[str, tuple[str, str]] = {}


async def _portal(conn: asyncpg.Connection, name: str) -> tuple[str, int]:
    """bench_content_api's portal, remembering the owner's sign-in."""
    created = await portals.create(
        conn, name=name, domain=f"{name}.localhost", owner_email=f"owner@{name}.localhost", bcrypt_rounds=4
    )
    PASSWORDS[name] = (created.ownerEmail, created.ownerPassword)
    portal_id = ids.decode(created.portalId)
    assert portal_id is not None
    return created.apiKey, portal_id


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server to create the database on")
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--channels", type=int, default=100_000)
    parser.add_argument("--packages", type=int, default=100_000)
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300, help="requests per page kind")
    parser.add_argument("--port", type=int, default=9130)
    parser.add_argument("--quick", action="store_true", help="a tenth of every count: does it work?")
    args = parser.parse_args()
    if args.quick:
        for name in ("channels", "packages", "subscribers", "requests"):
            setattr(args, name, max(getattr(args, name) // 10, 10))
    return args


async def first_id(url: str, sql: str, *args: Any) -> str:
    conn = await asyncpg.connect(url)
    try:
        return ids.encode(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


async def measure(args: argparse.Namespace, url: str, made: content.Made, server_pid: int) -> float:
    """The table of :data:`pages`; returns the worst p99."""
    origin = f"http://127.0.0.1:{args.port}"
    rng = random.Random(7)
    channel_ids = [key[1] for key in made.channel_keys]
    package_ids = made.package_ids
    linked = await first_id(url, "SELECT id FROM channels WHERE epg_source_name IS NOT NULL LIMIT 1")
    source = await first_id(url, "SELECT id FROM epg_sources LIMIT 1")
    big_package = await first_id(
        url, "SELECT id FROM packages WHERE portal_id = $1 LIMIT 1", made.channels_portal
    )
    day = time.strftime("%Y-%m-%d", time.gmtime())

    def channel_cursor() -> str:
        return content.CURSORS.encode("channelsByNumber", rng.choice(made.channel_keys))

    def package_cursor() -> str:
        return content.CURSORS.encode("packages", (rng.choice(made.package_ids),))

    sessions = []
    for portal in ("bench", "bench-packages"):
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        sessions.append(session)
        await console.sign_in(session, origin, *PASSWORDS[portal])
    chans, packs = sessions
    try:
        cq, pq = content.CHANNEL_QUERIES, content.PACKAGE_QUERIES
        count = args.requests + console.WARM_UP
        pages: list[tuple[str, aiohttp.ClientSession, Any]] = [
            ("/channels (first page)", chans, lambda: "/channels"),
            ("/channels, random pages (htmx)", chans, lambda: f"/channels?cursor={channel_cursor()} [htmx]"),
            (
                "/channels?q=, every query (htmx)",
                chans,
                lambda: f"/channels?q={quote(rng.choice(cq))} [htmx]",
            ),
            ("/channels/{id} (form, selects)", chans, lambda: f"/channels/{linked}"),
            ("/channels/{id}, random", chans, lambda: f"/channels/{ids.encode(rng.choice(channel_ids))}"),
            ("/packages/{id} (3,000 channels)", chans, lambda: f"/packages/{big_package}"),
            ("/packages (first page)", packs, lambda: "/packages"),
            ("/packages, random pages (htmx)", packs, lambda: f"/packages?cursor={package_cursor()} [htmx]"),
            (
                "/packages?q=, every query (htmx)",
                packs,
                lambda: f"/packages?q={quote(rng.choice(pq))} [htmx]",
            ),
            ("/packages/{id}, random", packs, lambda: f"/packages/{ids.encode(rng.choice(package_ids))}"),
            ("/epg-sources", chans, lambda: "/epg-sources"),
            ("/epg-sources/{id}", chans, lambda: f"/epg-sources/{source}"),
            ("/epg-sources/{id}/programs?date=", chans, lambda: f"/epg-sources/{source}/programs?date={day}"),
        ]
        runs = [(name, session, [urls() for _ in range(count)]) for name, session, urls in pages]
        print(f"load average before measuring: {console.load()}")
        return await console.table(url, server_pid, origin, runs, args.requests)
    finally:
        for session in sessions:
            await session.close()


async def main() -> None:
    args = arguments()
    servers: list[Any] = []
    if args.database_url is None:
        postgres = EmbeddedPostgres(ROOT / "var" / "bench-console" / "pg")
        args.database_url = postgres.start()
        servers.append(postgres)
    if args.redis_url is None:
        redis = EmbeddedRedis(ROOT / "var" / "bench-console" / "redis")
        args.redis_url = redis.start()
        servers.append(redis)
    content._portal = _portal
    name = "catena_bench_console_" + secrets.token_hex(4)
    admin = await asyncpg.connect(args.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = testing.replace_database(args.database_url, name)
    server = None
    try:
        started = time.perf_counter()
        made = await content.populate(url, args)
        print(f"catalogue made in {time.perf_counter() - started:.1f} s")
        server = content.start_server(args, url)
        await testing.wait_healthy(f"http://127.0.0.1:{args.port}", server)
        worst = await measure(args, url, made, server.pid)
        print(f"load average after: {console.load()}")
        print(f"worst p99 {worst:.2f} ms (target {console.TARGET_MS:.0f} ms)")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        for embedded in servers:
            embedded.stop()


if __name__ == "__main__":
    asyncio.run(main())

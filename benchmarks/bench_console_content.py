"""Server time of the console's content pages (Channels, Packages, EPG sources) with
100,000 rows, through ``python -m admin_api`` as operators reach it.

Run it with one command::

    .venv/bin/python benchmarks/bench_console_content.py             # --quick: a tenth

It builds the catalogue of ``benchmarks/bench_content_api.py`` (100,000 channels in
50 packages of about 3,000 channels each, an EPG source with programmes for every
other channel; 100,000 packages with 100,000 subscribers in a second portal) in a
fresh database (``--database-url``; by default embedded PostgreSQL and Redis under
``var/bench-console/``), starts the admin API on 127.0.0.1:``--port``, signs in to
the console as each portal's owner and times, one request at a time over a
keep-alive connection, every page the three screens serve: the lists' first and
random later pages, their searches, the channel form (with its EPG source and guide
selects), a package with its composition, an EPG source with its history and the
programme browser.
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


async def sign_in(origin: str, portal: str) -> aiohttp.ClientSession:
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    email, password = PASSWORDS[portal]
    form = {"email": email, "password": password}
    async with session.post(f"{origin}/sign-in", data=form, headers={"Origin": origin}) as resp:
        if resp.status != 200 or "/sign-in" in str(resp.url):
            raise SystemExit(f"sign-in to {portal} failed: {resp.status}")
    return session


async def page(session: aiohttp.ClientSession, url: str, htmx: bool = False) -> str:
    headers = {"HX-Request": "true"} if htmx else {}
    async with session.get(url, headers=headers) as resp:
        text = await resp.text()
        if resp.status != 200:
            raise SystemExit(f"GET {url} answered {resp.status}: {text[-500:]}")
        return text


async def times(session: aiohttp.ClientSession, urls: Any, count: int, htmx: bool = False) -> list[float]:
    """``count`` requests of ``urls()`` (a new URL each time), one after another, in ms."""
    for _ in range(20):
        await page(session, urls(), htmx)  # warm-up: statement caches, buffers
    samples = []
    for _ in range(count):
        url = urls()
        started = time.perf_counter()
        await page(session, url, htmx)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def first_id(url: str, sql: str, *args: Any) -> str:
    conn = await asyncpg.connect(url)
    try:
        return ids.encode(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


async def measure(args: argparse.Namespace, url: str, made: content.Made) -> list[str]:
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

    lines = []
    channels_session = await sign_in(origin, "bench")
    packages_session = await sign_in(origin, "bench-packages")
    try:
        chans, packs = channels_session, packages_session
        cq, pq = content.CHANNEL_QUERIES, content.PACKAGE_QUERIES
        runs: list[tuple[str, aiohttp.ClientSession, Any, bool]] = [
            ("/channels (first page)", chans, lambda: "/channels", False),
            ("/channels, random pages (htmx)", chans, lambda: f"/channels?cursor={channel_cursor()}", True),
            ("/channels?q=, every query", chans, lambda: f"/channels?q={quote(rng.choice(cq))}", True),
            ("/channels/{id} (form, selects)", chans, lambda: f"/channels/{linked}", False),
            (
                "/channels/{id}, random",
                chans,
                lambda: f"/channels/{ids.encode(rng.choice(channel_ids))}",
                False,
            ),
            ("/packages/{id} (3,000 channels)", chans, lambda: f"/packages/{big_package}", False),
            ("/packages (first page)", packs, lambda: "/packages", False),
            ("/packages, random pages (htmx)", packs, lambda: f"/packages?cursor={package_cursor()}", True),
            ("/packages?q=, every query", packs, lambda: f"/packages?q={quote(rng.choice(pq))}", True),
            (
                "/packages/{id}, random",
                packs,
                lambda: f"/packages/{ids.encode(rng.choice(package_ids))}",
                False,
            ),
            ("/epg-sources", chans, lambda: "/epg-sources", False),
            ("/epg-sources/{id}", chans, lambda: f"/epg-sources/{source}", False),
            (
                "/epg-sources/{id}/programs?date=",
                chans,
                lambda: f"/epg-sources/{source}/programs?date={day}",
                False,
            ),
        ]
        for name, session, urls, htmx in runs:
            samples = await times(session, lambda u=urls: origin + u(), args.requests, htmx)
            lines.append(content.summary(name, samples))
    finally:
        await channels_session.close()
        await packages_session.close()
    return lines


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
        lines = await measure(args, url, made)
        print("\n".join(lines))
        import os

        print(f"load average afterwards: {os.getloadavg()[0]:.2f}")
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

"""Server time of the console's Subscribers pages in a portal of 100,000 subscribers (issue 12).

Run it with one command (it makes its own database and drops it afterwards)::

    .venv/bin/python benchmarks/bench_console_subscribers.py --port 9140

Without ``--database-url`` it starts an embedded PostgreSQL and Redis under
``var/bench/`` (and leaves them running for the next run).  The data is the
subscriber-search benchmark's (``bench_subscriber_search.populate``: 100,000
subscribers with Russian names and real-looking phones, one or two of ten
packages each, a second portal of 10,000), plus ``--sessions`` play sessions
spread over the subscribers, and for the subscribers whose cards are opened 30
closed sessions, two open ones and about 25 operations each (made through the
Management API, so they are real operations).

It starts ``python -m admin_api`` on 127.0.0.1:``--port``, signs in to the
console as a manager of the portal and times, one request at a time over a
keep-alive connection, ``--requests`` of each:

- the list's first page (``/subscribers``) and a page deep in the list (its
  cursor taken from walking half the portal);
- the list searched (``?q=`` phone prefix, phone digits, part of a name) as the
  search box's htmx request asks for it (the rows alone);
- the card of a subscriber with history (``/subscribers/{id}``);
- the card's next page of past sessions and of operations.

The time is measured at the client on loopback, so it includes the HTTP
round trip: an upper bound of the server's time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import secrets
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_subscriber_search import populate, queries, start_server  # noqa: E402
from catena import ids, testing  # noqa: E402
from catena.embedded import EmbeddedPostgres, EmbeddedRedis  # noqa: E402

BASE = "/tv-management/api/v1"
PASSWORD = "Bench-Console-123!"
CARDS = 50


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default=os.environ.get("CATENA_BENCH_DATABASE_URL"))
    parser.add_argument("--redis-url", default=os.environ.get("CATENA_BENCH_REDIS_URL"))
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--sessions", type=int, default=200_000, help="play sessions spread over the portal")
    parser.add_argument("--requests", type=int, default=300, help="requests per page kind")
    parser.add_argument("--port", type=int, default=9140)
    parser.add_argument("--seed", type=int, default=12)
    return parser.parse_args()


async def add_sessions(url: str, portal_id: int, count: int, busy: list[int], rnd: random.Random) -> None:
    """``count`` closed sessions over the portal's subscribers; 30 closed and 2 open for each of ``busy``."""
    conn = await asyncpg.connect(url)
    try:
        everybody = [
            r["id"] for r in await conn.fetch("SELECT id FROM subscribers WHERE portal_id = $1", portal_id)
        ]
        rows = []
        now = time.time()
        for n in range(count):
            rows.append(
                _session(portal_id, rnd.choice(everybody), now - rnd.uniform(0, 60 * 86400), False, n)
            )
        for subscriber in busy:
            for n in range(32):
                rows.append(_session(portal_id, subscriber, now - n * 3600, n < 2, len(rows)))
        rows.sort(key=lambda r: int(r[0]))  # type: ignore[call-overload]
        await conn.copy_records_to_table(
            "play_sessions",
            columns=[
                "id", "portal_id", "subscriber_id", "channel_name", "flussonic_id", "opened_at", "updated_at",
                "closed_at", "active", "bytes", "ip", "user_agent",
            ],
            records=rows,
        )  # fmt: skip
        await conn.execute("VACUUM ANALYZE play_sessions")
    finally:
        await conn.close()


def _session(portal_id: int, subscriber: int, opened: float, active: bool, n: int) -> tuple[object, ...]:
    from datetime import UTC, datetime

    start = datetime.fromtimestamp(opened, UTC)
    end = datetime.fromtimestamp(opened + 1800, UTC)
    session_id = ids.lowest_at(int(opened * 1000)) + n % 4096
    return (
        session_id, portal_id, subscriber, f"ch{n % 40}", f"f-{n}", start, end, None if active else end,
        active, 1_000_000 + n, "203.0.113.5", "VLC/3.0.20",
    )  # fmt: skip


async def history(session: aiohttp.ClientSession, origin: str, key: str, subscriber: str) -> None:
    """About 25 operations of one subscriber, through the Management API."""
    headers = {"X-Auth-Token": key}
    for n in range(12):
        async with session.post(
            f"{origin}{BASE}/subscribers/{subscriber}/disable", json={"reason": f"r{n}"}, headers=headers
        ) as resp:
            assert resp.status == 200, await resp.text()
        async with session.post(f"{origin}{BASE}/subscribers/{subscriber}/enable", headers=headers) as resp:
            assert resp.status == 200, await resp.text()


async def sign_in(session: aiohttp.ClientSession, origin: str, key: str) -> None:
    async with session.post(
        f"{origin}{BASE}/managers",
        json={"email": "bench@example.com", "name": "bench", "password": PASSWORD, "isSubscriberAdmin": True},
        headers={"X-Auth-Token": key},
    ) as resp:
        assert resp.status == 200, await resp.text()
    async with session.post(
        origin + "/sign-in",
        data={"email": "bench@example.com", "password": PASSWORD},
        headers={"Origin": origin},
    ) as resp:
        assert resp.status == 200 and "/subscribers" in (await resp.text()), resp.status


async def timed(session: aiohttp.ClientSession, urls: list[str], htmx: bool = False) -> list[float]:
    headers = {"HX-Request": "true"} if htmx else {}
    samples = []
    for url in urls:
        started = time.perf_counter()
        async with session.get(url, headers=headers, allow_redirects=False) as resp:
            body = await resp.read()
            assert resp.status == 200, (url, resp.status, body[:300])
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def line(name: str, samples: list[float]) -> str:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    median = statistics.median(samples)
    return f"| {name} | {median:.1f} | {cuts[94]:.1f} | {cuts[98]:.1f} | {max(samples):.1f} |"


async def deep_cursor(session: aiohttp.ClientSession, origin: str, pages: int) -> str:
    """The cursor of the list's page ``pages`` (50 a page), found by following Next page."""
    url = origin + "/subscribers"
    for _ in range(pages):
        async with session.get(url, headers={"HX-Request": "true"}) as resp:
            text = await resp.text()
        found = re.search(r'hx-get="(/subscribers\?[^"]*cursor=[^"]+)"', text)
        assert found, "no next page"
        url = origin + found.group(1).replace("&amp;", "&")
    return url


async def measure(
    args: argparse.Namespace, url: str, key: str, portal_id: int, made: list[tuple[str, str, str]]
) -> None:
    rnd = random.Random(args.seed)
    origin = f"http://127.0.0.1:{args.port}"
    jar = aiohttp.CookieJar(unsafe=True)  # cookies of 127.0.0.1 (an IP address)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), cookie_jar=jar) as session:
        await testing.wait_healthy(origin)
        conn = await asyncpg.connect(url)
        busy = [r["id"] for r in await conn.fetch(
            "SELECT id FROM subscribers WHERE portal_id = $1 ORDER BY random() LIMIT $2", portal_id, CARDS
        )]  # fmt: skip
        await conn.close()
        started = time.perf_counter()
        await add_sessions(url, portal_id, args.sessions, busy, rnd)
        for subscriber in busy:
            await history(session, origin, key, ids.encode(subscriber))
        print(f"sessions and history made in {time.perf_counter() - started:.1f} s")
        await sign_in(session, origin, key)
        texts = queries(rnd, made, args.requests)
        cards = [f"{origin}/subscribers/{ids.encode(rnd.choice(busy))}" for _ in range(args.requests)]
        deep = await deep_cursor(session, origin, args.subscribers // 100)
        kinds = [
            ("list, first page", [origin + "/subscribers"] * args.requests, False),
            ("list, a page half way (cursor)", [deep] * args.requests, True),
            ("search, phone prefix (htmx rows)", _search(origin, texts["phone prefix"]), True),
            ("search, phone digits (htmx rows)", _search(origin, texts["phone substring"]), True),
            ("search, name (htmx rows)", _search(origin, texts["name"]), True),
            ("subscriber card", cards, False),
            ("card: next past sessions", [c + "/sessions?state=past" for c in cards], True),
            ("card: operations", [c + "/operations" for c in cards], True),
        ]
        await timed(session, cards[:20])  # warm the statement caches
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        print("| page | p50 ms | p95 ms | p99 ms | max ms |\n|---|---|---|---|---|")
        for name, urls, htmx in kinds:
            print(line(name, await timed(session, urls, htmx)), flush=True)
        print(f"load average after: {os.getloadavg()[0]:.2f}")


def _search(origin: str, texts: list[str]) -> list[str]:
    return [f"{origin}/subscribers?q={quote(t)}&disabled=" for t in texts]


async def main() -> None:
    args = arguments()
    if args.database_url is None:
        args.database_url = EmbeddedPostgres(ROOT / "var" / "bench" / "pg").start()
    if args.redis_url is None:
        args.redis_url = EmbeddedRedis(ROOT / "var" / "bench" / "redis").start()
    rnd = random.Random(args.seed)
    name = "catena_bench_" + secrets.token_hex(4)
    admin = await asyncpg.connect(args.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = testing.replace_database(args.database_url, name)
    server = None
    try:
        started = time.perf_counter()
        key, portal_id, made = await populate(url, args.subscribers, rnd)
        print(
            f"{args.subscribers} subscribers made in {time.perf_counter() - started:.1f} s; "
            f"CPUs: {os.cpu_count()}"
        )
        server = start_server(args, url)
        await measure(args, url, key, portal_id, made)
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())

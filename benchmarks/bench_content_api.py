"""Latency of the content lists with 100,000 rows: channels, search, packages with counts.

Run it with one command (it makes its own database and drops it afterwards)::

    .venv/bin/python benchmarks/bench_content_api.py            # or: make bench-content

It creates a fresh database on ``--database-url``'s server, applies the migrations,
makes two portals and starts ``python -m admin_api`` as a separate process on
127.0.0.1:``--port``:

- ``bench``: ``--channels`` channels (titles like "Спорт HD 17" drawn from 30 words
  and 10 suffixes, every fifth numbered, every channel in one to two of 50
  packages, every tenth with a logo, four in five linked to an EPG source that
  has three programmes for every other channel);
- ``bench-packages``: ``--packages`` packages (descriptions drawn from the same
  words), each holding up to three of 50 channels, and ``--subscribers``
  subscribers with one or two explicit subscriptions each, plus one package every
  subscriber holds.

One request at a time over a keep-alive connection it measures:

- ``channels, full walk``: every page of the list, following ``next`` from the start;
- ``channels, random pages``: pages starting after a randomly chosen channel;
- ``channels ?q=``: search pages (first pages and pages after a random channel)
  for queries from every match rate: 1-2 characters, common words, rare words,
  nothing at all; each query's figures, then all of them together;
- ``packages, random pages``: ``/packages?limit=100`` with channel and subscriber
  counts;
- ``packages ?q=``: as for channels, on names and descriptions;
- ``baseline: GET /portal`` and ``baseline: page SQL only`` (the channel list's SQL
  straight through asyncpg), and the search's statements without HTTP;

then ``channels, random pages`` again with ``--concurrency`` clients at once.
``--quick`` cuts every count to a tenth (a check that it works, not a figure).
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from admin_api import _search, channels  # noqa: E402
from catena import (  # noqa: E402
    db,
    ids,
    migrations,
    portals,
    testing,
)
from catena.pagination import Cursors  # noqa: E402

BASE = "/tv-management/api/v1"
PACKAGES = 50
# The server under test is given this secret, so cursors made here are its own.
TOKEN_SECRETS = "bench:catena-content-benchmark-secret-0123456789"
CURSORS = Cursors(TOKEN_SECRETS)
# The smallest PNG signature plus a few bytes: the list only asks whether a logo exists.
LOGO = b"\x89PNG\r\n\x1a\n" + bytes(64)
WORDS = [
    "Первый", "Россия", "НТВ", "СТС", "ТНТ", "Матч", "Спорт", "Кино", "Новости", "Музыка",
    "Детский", "Discovery", "History", "Nat Geo", "Euronews", "BBC", "CNN", "Fox", "Disney",
    "Animal Planet", "Наука", "Охота", "Рыбалка", "Дом", "Кухня", "Мир", "Звезда", "Пятница",
    "Домашний", "Карусель",
]  # fmt: skip
SUFFIXES = ["", "", "", "", " HD", " 4K", " +2", " +4", " Premium", " International"]
# Queries by how many rows match: a 1-character and a 2-character one that most
# rows hold, words in one row in ten, one in thirty (about where a page stops
# walking and asks the index), rare names and nothing at all.
CHANNEL_QUERIES = ["а", "hd", "premium", "спорт", "discovery", "nat geo 12", "ch4242", "ch99", "zzz", "ё"]
PACKAGE_QUERIES = ["а", "hd", "premium", "спорт", "discovery", "pkg4242", "pkg99", "zzz", "ё"]
GIN_INDEXES = ("channels_search", "packages_search")


def arguments() -> argparse.Namespace:
    parser = testing.bench_arguments(__doc__)
    parser.add_argument("--channels", type=int, default=100_000)
    parser.add_argument("--packages", type=int, default=100_000)
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2000, help="requests per random-page run")
    parser.add_argument("--searches", type=int, default=200, help="requests per search query")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--port", type=int, default=8110)
    parser.add_argument("--quick", action="store_true", help="a tenth of every count: does it work?")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    if args.quick:
        for name in ("channels", "packages", "subscribers", "requests", "searches"):
            setattr(args, name, max(getattr(args, name) // 10, 10))
    return args


class Made:
    """What the benchmark made: API keys, portal ids, list keys to start random pages from."""

    def __init__(self) -> None:
        self.channels_key = ""
        self.channels_portal = 0
        self.channel_keys: list[tuple[int, int]] = []
        self.packages_key = ""
        self.packages_portal = 0
        self.package_ids: list[int] = []


async def populate(url: str, args: argparse.Namespace) -> Made:
    """Make both portals and their catalogues."""
    made = Made()
    rng = random.Random(42)
    conn = await db.connect(url)
    try:
        await migrations.apply(conn)
        await ids.claim_node(conn)
        # Bulk loading goes through GIN's pending list; VACUUM then files it.
        for index in GIN_INDEXES:
            await conn.execute(f"ALTER INDEX {index} SET (fastupdate = on)")
        made.channels_key, made.channels_portal = await _portal(conn, "bench")
        made.channel_keys = await _channels(conn, made.channels_portal, args.channels, rng)
        made.packages_key, made.packages_portal = await _portal(conn, "bench-packages")
        made.package_ids = await _packages(conn, made.packages_portal, args, rng)
        await conn.execute("VACUUM ANALYZE")
        for index in GIN_INDEXES:
            await conn.execute(f"ALTER INDEX {index} SET (fastupdate = off)")
    finally:
        await conn.close()
    return made


async def _portal(conn: asyncpg.Connection, name: str) -> tuple[str, int]:
    created = await portals.create(
        conn, name=name, domain=f"{name}.localhost", owner_email=f"owner@{name}.localhost", bcrypt_rounds=4
    )
    portal_id = ids.decode(created.portalId)
    assert portal_id is not None
    return created.apiKey, portal_id


def _title(rng: random.Random, i: int) -> str:
    return f"{rng.choice(WORDS)}{rng.choice(SUFFIXES)} {i % 997}"


async def _channels(
    conn: asyncpg.Connection, portal_id: int, count: int, rng: random.Random
) -> list[tuple[int, int]]:
    channel_ids = [ids.new_id() for _ in range(count)]
    numbers = rng.sample(range(1, 100_000), min(count // 5, 99_999))
    numbered = dict(zip(rng.sample(channel_ids, len(numbers)), numbers, strict=True))
    package_ids = [ids.new_id() for _ in range(PACKAGES)]
    await conn.copy_records_to_table(
        "packages",
        columns=["id", "portal_id", "name"],
        records=[(p, portal_id, f"package-{i}") for i, p in enumerate(package_ids)],
    )
    linked = {c for i, c in enumerate(channel_ids) if i % 5}
    await conn.copy_records_to_table(
        "channels",
        columns=["id", "portal_id", "name", "title", "number", "epg_source_name", "epg_channel_name"],
        records=[
            (c, portal_id, f"ch{i}", _title(rng, i), numbered.get(c), *_link(c in linked, i))
            for i, c in enumerate(channel_ids)
        ],
    )
    await _guide(conn, portal_id, count)
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
    return sorted((numbered.get(c, channels.UNNUMBERED), c) for c in channel_ids)


def _link(linked: bool, i: int) -> tuple[str | None, str | None]:
    return ("bench-epg", f"ch{i}.tv") if linked else (None, None)


async def _guide(conn: asyncpg.Connection, portal_id: int, count: int) -> None:
    """An EPG source with three programmes for every other channel."""
    source_id = ids.new_id()
    await conn.execute(
        "INSERT INTO epg_sources (id, portal_id, name, url) VALUES ($1, $2, 'bench-epg', 'https://epg.invalid/')",
        source_id,
        portal_id,
    )
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    records = [
        (ids.new_id(), portal_id, source_id, f"ch{i}.tv", start + timedelta(hours=h), f"Передача {h}")
        for i in range(0, count, 2)
        for h in range(3)
    ]
    await conn.copy_records_to_table(
        "epg_programs",
        columns=["id", "portal_id", "epg_source_id", "epg_channel_name", "start_at", "title"],
        records=records,
    )


async def _packages(
    conn: asyncpg.Connection, portal_id: int, args: argparse.Namespace, rng: random.Random
) -> list[int]:
    channel_ids = [ids.new_id() for _ in range(50)]
    await conn.copy_records_to_table(
        "channels",
        columns=["id", "portal_id", "name", "title"],
        records=[(c, portal_id, f"ch{i}", _title(rng, i)) for i, c in enumerate(channel_ids)],
    )
    package_ids = [ids.new_id() for _ in range(args.packages)]
    descriptions = [
        f"{_title(rng, i)}, {rng.choice(WORDS)} и {rng.choice(WORDS)}" for i in range(args.packages)
    ]
    await conn.copy_records_to_table(
        "packages",
        columns=["id", "portal_id", "name", "description"],
        records=[(p, portal_id, f"pkg{i}", descriptions[i]) for i, p in enumerate(package_ids)],
    )
    links = {(p, rng.choice(channel_ids)) for p in package_ids for _ in range(rng.randint(0, 3))}
    await conn.copy_records_to_table(
        "channel_packages",
        columns=["package_id", "channel_id", "portal_id"],
        records=[(p, c, portal_id) for p, c in links],
    )
    await _subscribers(conn, portal_id, package_ids, args.subscribers, rng)
    return package_ids


async def _subscribers(
    conn: asyncpg.Connection, portal_id: int, package_ids: list[int], count: int, rng: random.Random
) -> None:
    subscriber_ids = [ids.new_id() for _ in range(count)]
    await conn.copy_records_to_table(
        "subscribers",
        columns=["id", "portal_id", "name", "phone_country_code", "phone"],
        records=[(s, portal_id, f"Абонент {i}", "7", f"9{i:09d}") for i, s in enumerate(subscriber_ids)],
    )
    # Every subscriber holds the first package (the base package of a real
    # operator) and one random other; the counts come from the triggers.
    subscriptions = {(s, package_ids[0]) for s in subscriber_ids}
    subscriptions |= {(s, rng.choice(package_ids)) for s in subscriber_ids}
    await conn.copy_records_to_table(
        "subscriptions",
        columns=["subscriber_id", "package_id", "portal_id"],
        records=[(s, p, portal_id) for s, p in subscriptions],
    )


def start_server(args: argparse.Namespace, url: str) -> subprocess.Popen[bytes]:
    env = {
        "CATENA_DATABASE_URL": url,
        "CATENA_REDIS_URL": args.redis_url,
        "CATENA_TOKEN_SECRETS": TOKEN_SECRETS,
        "CATENA_REDIS_PREFIX": "catena-bench-" + secrets.token_hex(4),
        "CATENA_ADMIN_HOST": "127.0.0.1",
        "CATENA_ADMIN_PORT": str(args.port),
        "CATENA_WEBHOOKS_ENABLED": "false",
        "CATENA_LOG_LEVEL": "warning",
    }
    return testing.start_service("admin_api", testing.service_env(env))


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


def channel_page_url(origin: str, made: Made, query: str = "") -> str:
    # Signed with the secrets the server reads from the same environment.
    cursor = CURSORS.encode("channelsByNumber", random.choice(made.channel_keys))
    return f"{origin}{BASE}/channels?limit=100&cursor={cursor}{query}"


def package_page_url(origin: str, made: Made, query: str = "") -> str:
    cursor = CURSORS.encode("packages", (random.choice(made.package_ids),))
    return f"{origin}{BASE}/packages?limit=100&cursor={cursor}{query}"


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
    made: Made,
    total: int,
    clients: int,
) -> tuple[list[float], float]:
    samples: list[float] = []

    async def client() -> None:
        for _ in range(total // clients):
            started = time.perf_counter()
            await get_ok(session, channel_page_url(origin, made), headers)
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


async def sql_only(url: str, made: Made, count: int) -> list[float]:
    conn = await db.connect(url)
    try:
        statement = await conn.prepare(channels._LIST)

        async def one() -> None:
            await statement.fetch(made.channels_portal, *random.choice(made.channel_keys), 101)

        await timed(one, 100)
        return await timed(one, count)
    finally:
        await conn.close()


async def search_sql_only(url: str, made: Made, count: int) -> list[float]:
    """The channel search's statements (``admin_api._search``) without HTTP, every query mixed."""
    conn = await db.connect(url)
    try:

        async def one() -> None:
            after = random.choice(made.channel_keys) if random.random() < 0.5 else (0, -(2**63))
            q = random.choice(CHANNEL_QUERIES)
            await _search.search(conn, channels._SEARCH, made.channels_portal, after, q, 101)

        await timed(one, 100)
        return await timed(one, count)
    finally:
        await conn.close()


async def searches(
    session: aiohttp.ClientSession,
    headers: dict[str, str],
    queries: list[str],
    page_url: Callable[[str], str],
    first_url: Callable[[str], str],
    count: int,
) -> tuple[list[str], list[float]]:
    """Per query: half first pages, half pages after a random row.  Lines and all samples."""
    lines, everything = [], []
    for q in queries:
        part = f"&q={quote(q)}"
        await get_ok(session, first_url(part), headers)
        first = await timed(lambda: get_ok(session, first_url(part), headers), count // 2)  # noqa: B023
        later = await timed(lambda: get_ok(session, page_url(part), headers), count - count // 2)  # noqa: B023
        found = len(next(iter((await get_ok(session, first_url(part), headers)).values())))
        lines.append(summary(f"  q={q!r}", first + later, f"(first page: {found} rows)"))
        everything += first + later
    return lines, everything


async def measure(args: argparse.Namespace, url: str, made: Made) -> None:
    origin = f"http://127.0.0.1:{args.port}"
    headers = {"X-Auth-Token": made.channels_key}
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await testing.wait_healthy(origin)
        random_page = lambda: get_ok(session, channel_page_url(origin, made), headers)  # noqa: E731
        await timed(random_page, 300)  # warm-up: connections, statement caches, buffers
        walk_samples, seen = await walk(session, origin, headers)
        lines = [summary("channels, full walk", walk_samples, f"({seen} channels seen)")]
        lines.append(summary("channels, random pages", await timed(random_page, args.requests)))
        lines += await _search_lines(session, origin, made, args)
        lines += await _package_lines(session, origin, made, args)
        portal = lambda: get_ok(session, f"{origin}{BASE}/portal", headers)  # noqa: E731
        await timed(portal, 100)
        lines.append(summary("baseline: GET /portal", await timed(portal, args.requests)))
        lines.append(summary("baseline: page SQL only", await sql_only(url, made, args.requests)))
        lines.append(
            summary("channel search SQL only, mixed", await search_sql_only(url, made, args.requests))
        )
        samples, rate = await concurrent(session, origin, headers, made, args.requests, args.concurrency)
        lines.append(summary(f"channels, random, {args.concurrency} clients", samples, f"({rate:.0f} req/s)"))
    print("\n".join(lines))


async def _search_lines(
    session: aiohttp.ClientSession, origin: str, made: Made, args: argparse.Namespace
) -> list[str]:
    headers = {"X-Auth-Token": made.channels_key}
    lines, samples = await searches(
        session,
        headers,
        CHANNEL_QUERIES,
        lambda part: channel_page_url(origin, made, part),
        lambda part: f"{origin}{BASE}/channels?limit=100{part}",
        args.searches,
    )
    return [summary("channels ?q=, every query", samples), *lines]


async def _package_lines(
    session: aiohttp.ClientSession, origin: str, made: Made, args: argparse.Namespace
) -> list[str]:
    headers = {"X-Auth-Token": made.packages_key}
    page = lambda: get_ok(session, package_page_url(origin, made), headers)  # noqa: E731
    await timed(page, 100)
    lines = [summary("packages, random pages (counts)", await timed(page, args.requests))]
    search_lines, samples = await searches(
        session,
        headers,
        PACKAGE_QUERIES,
        lambda part: package_page_url(origin, made, part),
        lambda part: f"{origin}{BASE}/packages?limit=100{part}",
        args.searches,
    )
    return [*lines, summary("packages ?q=, every query", samples), *search_lines]


async def main() -> None:
    args = arguments()
    name = "catena_bench_" + secrets.token_hex(4)
    url = await testing.create_database(args.database_url, name)
    server = None
    try:
        started = time.perf_counter()
        made = await populate(url, args)
        print(
            f"{args.channels} channels, {args.packages} packages, {args.subscribers} subscribers made in "
            f"{time.perf_counter() - started:.1f} s; CPUs: {os.cpu_count()}, "
            f"load average: {os.getloadavg()[0]:.2f}"
        )
        server = start_server(args, url)
        await measure(args, url, made)
        print(f"load average afterwards: {os.getloadavg()[0]:.2f}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if not args.keep:
            await testing.drop_database(args.database_url, name)


if __name__ == "__main__":
    asyncio.run(main())

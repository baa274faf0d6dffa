"""Latency of ``GET /subscribers?q=`` in a portal with 100,000 subscribers (issue 11).

Run it with one command (it makes its own database and drops it afterwards)::

    .venv/bin/python benchmarks/bench_subscriber_search.py        # or: make bench-search

It creates a fresh database on ``--database-url``'s server, applies the migrations,
makes a portal with ``--subscribers`` subscribers (Russian names, phones of thirty
mobile codes, nine in ten with country code 7, each in one or two of ten packages)
and a second portal with a tenth as many (the index holds both), starts
``python -m admin_api`` on 127.0.0.1:``--port`` and measures first pages of
``limit=100``, one request at a time over a keep-alive connection, for queries
drawn from the data itself:

- ``phone prefix``: the start of a real number as people type it, ``+7 916 12``
  (country code and 3 to 7 digits);
- ``phone substring``: 4 to 7 digits from inside a real number;
- ``name``: 3 to 8 characters from inside a real name, in any case;

and, for scale, the first page without ``q``.

Each is timed through HTTP; in this process through the action the handler and
the console call (``subscribers.list_subscribers``: SQL, objects and playback
tokens, no HTTP); and as the page's SQL alone (finding the ids, reading their
rows), which shows where the time goes.  ``--requests`` queries per kind.
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
from urllib.parse import quote

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from admin_api import subscriber_search, subscribers  # noqa: E402
from admin_api._content import FIRST_ID  # noqa: E402
from admin_api.limiter import Limiter, PasswordChecker  # noqa: E402
from admin_api.principal import Principal  # noqa: E402
from admin_api.services import Services  # noqa: E402
from catena import (  # noqa: E402
    db,
    ids,
    migrations,
    portals,
    testing,
)
from catena import redis as catena_redis  # noqa: E402
from catena.pagination import Cursors  # noqa: E402
from catena.settings import AdminSettings, load  # noqa: E402
from catena.tokens import TokenCodec  # noqa: E402

BASE = "/tv-management/api/v1"
PACKAGES = 10
# The server under test and the in-process actions sign with this secret.
TOKEN_SECRETS = "bench:catena-search-benchmark-secret-0123456789"
FIRST = (
    "Александр Алексей Анастасия Андрей Анна Антон Артём Валентина Василий Вера Виктор Виктория "
    "Владимир Галина Дарья Денис Дмитрий Евгений Екатерина Елена Иван Игорь Илья Ирина Кирилл "
    "Ксения Любовь Людмила Максим Маргарита Марина Мария Михаил Надежда Наталья Никита Николай "
    "Олег Ольга Павел Пётр Полина Роман Светлана Сергей Софья Татьяна Фёдор Юлия Юрий"
).split()
LAST = (
    "Иванов Смирнов Кузнецов Попов Васильев Петров Соколов Михайлов Новиков Фёдоров Морозов "
    "Волков Алексеев Лебедев Семёнов Егоров Павлов Козлов Степанов Николаев Орлов Андреев Макаров "
    "Никитин Захаров Зайцев Соловьёв Борисов Яковлев Григорьев Романов Воробьёв Сергеев Кузьмин "
    "Фролов Александров Дмитриев Королёв Гусев Киселёв Ильин Максимов Поляков Сорокин Виноградов "
    "Ковалёв Белов Медведев Антонов Тарасов Жуков Баранов Филиппов Комаров Давыдов Беляев Герасимов "
    "Богданов Осипов Сидоров Матвеев Титов Марков Миронов Крылов Куликов Карпов Власов Мельников "
    "Денисов Гаврилов Тихонов Казаков Афанасьев Данилов Савельев Тимофеев Фомин Чернов Абрамов "
    "Мартынов Ефимов Федотов Щербаков Назаров Калинин Исаев Чернышёв Быков Маслов Родионов Коновалов "
    "Лазарев Воронин Климов Филатов Пономарёв Голубев Кудрявцев Прохоров Наумов Потапов Журавлёв"
).split()
CODES = "900 901 902 903 904 905 906 908 909 910 911 912 913 914 915 916 917 918 919 920 921 922 925 926 927 929 950 977 985 999".split()  # noqa: E501
OTHER_COUNTRIES = ["375", "380", "77", "49", "1"]


def arguments() -> argparse.Namespace:
    parser = testing.bench_arguments(__doc__)
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=500, help="queries per kind")
    parser.add_argument("--port", type=int, default=8130)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    return parser.parse_args()


def people(rnd: random.Random, count: int) -> list[tuple[str, str, str]]:
    """(name, country code, phone) of ``count`` subscribers with distinct phones."""
    made: dict[tuple[str, str], str] = {}
    while len(made) < count:
        code = "7" if rnd.random() < 0.9 else rnd.choice(OTHER_COUNTRIES)
        phone = rnd.choice(CODES) + f"{rnd.randrange(10_000_000):07d}"
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        if first.endswith("а") or first.endswith("я") or first in ("Любовь",):
            last = last + "а"
        made[(code, phone)] = f"{last} {first}" if rnd.random() < 0.3 else f"{first} {last}"
    return [(name, code, phone) for (code, phone), name in made.items()]


async def populate(url: str, count: int, rnd: random.Random) -> tuple[str, int, list[tuple[str, str, str]]]:
    """Two portals and their subscribers; the API key and id of the measured one, its people."""
    conn = await db.connect(url)
    try:
        await migrations.apply(conn)
        await ids.claim_node(conn)
        # Building the search index once after COPY is far faster than row by row.
        index = await conn.fetchval("SELECT pg_get_indexdef('subscribers_search'::regclass)")
        await conn.execute("DROP INDEX subscribers_search")
        measured = await add_portal(conn, "bench", count, rnd)
        await add_portal(conn, "other", count // 10, rnd)
        await conn.execute(index)
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return measured


async def add_portal(
    conn: asyncpg.Connection, name: str, count: int, rnd: random.Random
) -> tuple[str, int, list[tuple[str, str, str]]]:
    """A portal of ``count`` subscribers (:func:`people`) in one or two of ten packages each."""
    created = await portals.create(
        conn, name=name, domain=f"{name}.localhost", owner_email=f"owner@{name}.localhost", bcrypt_rounds=4
    )
    portal_id = ids.decode(created.portalId)
    assert portal_id is not None
    package_ids = [ids.new_id() for _ in range(PACKAGES)]
    await conn.copy_records_to_table(
        "packages",
        columns=["id", "portal_id", "name"],
        records=[(p, portal_id, f"package-{i}") for i, p in enumerate(package_ids)],
    )
    made = people(rnd, count)
    subscriber_ids = [ids.new_id() for _ in made]
    await conn.copy_records_to_table(
        "subscribers",
        columns=["id", "portal_id", "name", "phone_country_code", "phone"],
        records=[(s, portal_id, *p) for s, p in zip(subscriber_ids, made, strict=True)],
    )
    links = {(s, rnd.choice(package_ids)) for s in subscriber_ids}
    links |= {(s, rnd.choice(package_ids)) for s in subscriber_ids if rnd.random() < 0.3}
    await conn.copy_records_to_table(
        "subscriptions",
        columns=["subscriber_id", "package_id", "portal_id"],
        records=[(s, p, portal_id) for s, p in links],
    )
    return created.apiKey, portal_id, made


def queries(rnd: random.Random, made: list[tuple[str, str, str]], count: int) -> dict[str, list[str]]:
    """``count`` queries of each kind, drawn from the subscribers themselves."""

    def prefix() -> str:
        _, code, phone = rnd.choice(made)
        return f"+{code} {phone[: rnd.randint(3, 7)]}"

    def substring() -> str:
        _, _, phone = rnd.choice(made)
        size = rnd.randint(4, 7)
        start = rnd.randint(1, len(phone) - size)
        return phone[start : start + size]

    def name() -> str:
        text = rnd.choice(made)[0]
        size = rnd.randint(3, 8)
        start = rnd.randint(0, len(text) - size)
        piece = text[start : start + size]
        return piece.upper() if rnd.random() < 0.2 else piece.lower()

    return {
        "no q (the plain list)": [""] * count,
        "phone prefix": [prefix() for _ in range(count)],
        "phone substring": [substring() for _ in range(count)],
        "name": [name() for _ in range(count)],
    }


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


async def timed(call: Callable[[str], Awaitable[int]], texts: list[str]) -> tuple[list[float], int]:
    """Each query once, one after another: latencies in ms and the subscribers found."""
    samples, found = [], 0
    for text in texts:
        started = time.perf_counter()
        found += await call(text)
        samples.append((time.perf_counter() - started) * 1000)
    return samples, found


def summary(name: str, samples: list[float], found: int) -> str:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return (
        f"{name:<28} n={len(samples):>5}  p50={cuts[49]:7.2f} ms  p99={cuts[98]:7.2f} ms  "
        f"max={max(samples):7.2f} ms  ({found / len(samples):.1f} found per page)"
    )


async def measure(
    args: argparse.Namespace, url: str, api_key: str, portal_id: int, texts: dict[str, Any]
) -> None:
    origin = f"http://127.0.0.1:{args.port}"
    headers = {"X-Auth-Token": api_key}
    lines = []
    async with aiohttp.ClientSession() as session:
        await testing.wait_healthy(origin)

        async def over_http(text: str) -> int:
            async with session.get(
                f"{origin}{BASE}/subscribers?limit=100&q={quote(text)}", headers=headers
            ) as resp:
                if resp.status != 200:
                    raise SystemExit(f"q={text!r} answered {resp.status}: {await resp.text()}")
                return len((await resp.json())["subscribers"])

        for kind, sample in texts.items():
            await timed(over_http, sample[:50])  # warm-up: connections, caches, statements
            lines.append(summary(f"HTTP, {kind}", *await timed(over_http, sample)))
    lines += await in_process(args, url, portal_id, texts)
    print("\n".join(lines))


async def in_process(args: argparse.Namespace, url: str, portal_id: int, texts: dict[str, Any]) -> list[str]:
    settings = load(AdminSettings, environ={}, token_secrets=TOKEN_SECRETS)
    pool = await db.create_pool(url, max_size=2)
    redis = catena_redis.connect(args.redis_url)
    codec, cursors = TokenCodec(settings.token_secrets), Cursors(settings.token_secrets)
    services = Services(pool, redis, settings, cursors, codec, Limiter.connect(settings), PasswordChecker(1))
    key = Principal(portal_id, None, None, True, True, True, True)

    async def action(text: str) -> int:
        page = await subscribers.list_subscribers(
            services, key, subscribers.SubscribersQuery(q=text, limit=100)
        )
        return len(page.subscribers)

    async def sql(text: str) -> int:
        return len(await page_sql(pool, portal_id, text))

    lines = []
    try:
        for name, call in (("action", action), ("SQL", sql)):
            for kind, sample in texts.items():
                await timed(call, sample[:50])
                lines.append(summary(f"{name}, {kind}", *await timed(call, sample)))
    finally:
        await pool.close()
        await redis.aclose()
    return lines


async def page_sql(pool: asyncpg.Pool, portal_id: int, text: str) -> list[asyncpg.Record]:
    """One page's statements alone: finding the ids, reading their rows (no objects, no tokens)."""
    search = subscriber_search.parse(text)
    async with pool.acquire() as conn:
        if search is None:
            sql = subscribers._LIST.format(where="s.portal_id = $1", limit="$2")
            return list(await conn.fetch(sql, portal_id, 101))
        found = await subscriber_search.matching_ids(
            conn, portal_id, FIRST_ID, 101, search, lambda where: None
        )
        return list(await conn.fetch(subscribers._BY_IDS, portal_id, found))


async def main() -> None:
    args = arguments()
    rnd = random.Random(args.seed)
    name = "catena_bench_" + secrets.token_hex(4)
    url = await testing.create_database(args.database_url, name)
    server = None
    try:
        started = time.perf_counter()
        api_key, portal_id, made = await populate(url, args.subscribers, rnd)
        print(
            f"{args.subscribers} subscribers (+{args.subscribers // 10} in another portal) made in "
            f"{time.perf_counter() - started:.1f} s; CPUs: {os.cpu_count()}, "
            f"load average: {os.getloadavg()[0]:.2f}"
        )
        server = start_server(args, url)
        await measure(args, url, api_key, portal_id, queries(rnd, made, args.requests))
        print(f"load average afterwards: {os.getloadavg()[0]:.2f}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if not args.keep:
            await testing.drop_database(args.database_url, name)


if __name__ == "__main__":
    asyncio.run(main())

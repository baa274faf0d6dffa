"""Latency of ``GET /stats`` in a large portal, and what its counters cost the gateway.

    .venv/bin/python benchmarks/bench_stats.py [--requests 1000] [--port 8125]   # or: make bench-stats

It makes a database of its own on ``--database-url``'s server, applies the
migrations, fills it (``benchmarks/stats_dataset.py``: 100,000 subscribers, 1,000
channels, 50,000 open sessions and 150,000 more opened over the last day, all
written through the gateway's own batch merge), starts ``python -m admin_api`` on
``--port`` and measures:

- ``GET /stats``: ``--requests`` requests one after another over a keep-alive
  connection, while a writer merges gateway-like batches (``--churn`` session rows
  a second: progress of the open sessions, opens and closes) as the gateways do;
- each of the endpoint's statements alone through asyncpg, for where the time goes;
- the writers' side: one gateway batch (``--batch`` rows of progress, then of new
  sessions) merged with the statistics triggers enabled and disabled.

The answer is checked against counts made from the base tables.  The database is
dropped at the end unless ``--keep``.  Nothing here gates the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from admin_api import stats  # noqa: E402
from admin_api.client import catalog  # noqa: E402
from authgate.recorder import write_batch  # noqa: E402
from benchmarks import stats_dataset  # noqa: E402
from catena import (  # noqa: E402
    db,
    ids,
    migrations,
    testing,
)

BASE = "/tv-management/api/v1"
# Services refuse the public development secret; any other will do for a benchmark.
TOKEN_SECRETS = "bench:catena-stats-benchmark-secret-0123456789"
TRIGGERS = ("stats_sessions_insert", "stats_sessions_update", "stats_sessions_delete")


def arguments() -> argparse.Namespace:
    parser = testing.bench_arguments(__doc__)
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--channels", type=int, default=1_000)
    parser.add_argument("--open", type=int, default=50_000, help="sessions playing now")
    parser.add_argument(
        "--closed", type=int, default=150_000, help="sessions opened and closed in the last day"
    )
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--churn", type=int, default=2000, help="session rows a second the writer merges")
    parser.add_argument("--batch", type=int, default=5000, help="rows of the writer-cost batches")
    parser.add_argument("--port", type=int, default=8125)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    return parser.parse_args()


def start_server(args: argparse.Namespace, url: str) -> subprocess.Popen[bytes]:
    env = {
        "CATENA_DATABASE_URL": url,
        "CATENA_REDIS_URL": args.redis_url,
        "CATENA_REDIS_PREFIX": "catena-bench-" + secrets.token_hex(4),
        "CATENA_TOKEN_SECRETS": TOKEN_SECRETS,
        "CATENA_ADMIN_PORT": str(args.port),
        "CATENA_WEBHOOKS_ENABLED": "false",
        "CATENA_LOG_LEVEL": "warning",
    }
    return testing.start_service("admin_api", testing.service_env(env))


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))]

    return (
        f"n={len(ordered):>5}  p50 {pick(0.5):7.2f} ms  p95 {pick(0.95):7.2f} ms  "
        f"p99 {pick(0.99):7.2f} ms  max {ordered[-1]:7.2f} ms"
    )


class Churn:
    """Gateway-like batches every second: progress of open sessions, a few opens and closes."""

    def __init__(self, url: str, data: stats_dataset.Dataset, rate: int) -> None:
        self.url, self.data, self.rate = url, data, rate
        self.rng = random.Random(11)
        self.batches = 0
        self.opened = 10_000_000

    async def run(self) -> None:
        conn = await db.connect(self.url)
        open_rows = list(
            await conn.fetch(
                "SELECT flussonic_id, id, subscriber_id, channel_id, channel_name,"
                " (extract(epoch FROM opened_at) * 1000)::bigint AS opened_ms FROM play_sessions WHERE active"
            )
        )
        try:
            while True:
                started = time.perf_counter()
                await write_batch(conn, self._batch(open_rows))
                self.batches += 1
                await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - started)))
        finally:
            await conn.close()

    def _batch(self, open_rows: list[asyncpg.Record]) -> list[tuple[Any, ...]]:
        """Progress of ``rate`` open sessions, of which 1 % close, and as many new sessions."""
        now_ms = int(time.time() * 1000)
        sample = self.rng.sample(range(len(open_rows)), min(self.rate, len(open_rows)))
        closing = set(sample[: max(self.rate // 100, 1)])
        rows = [self._progress(open_rows[i], now_ms, closed=i in closing) for i in sample]
        for i in sorted(closing, reverse=True):
            open_rows[i] = open_rows[-1]
            open_rows.pop()
        for _ in closing:
            self.opened += 1
            subscriber = self.rng.choice(self.data.subscriber_ids)
            channel = self.rng.choice(self.data.channel_ids)
            rows.append(
                stats_dataset.session_row(
                    self.data.portal_id, subscriber, channel, "ch-churn", now_ms, now_ms, None, self.opened
                )
            )
        return rows

    def _progress(self, r: asyncpg.Record, now_ms: int, closed: bool = False) -> tuple[Any, ...]:
        return (
            r["flussonic_id"],
            r["id"],
            self.data.portal_id,
            r["subscriber_id"],
            r["channel_id"],
            r["channel_name"],
            r["opened_ms"],
            now_ms,
            now_ms if closed else None,
            2_000_000,
            "10.0.0.1",
            "Bench/1.0",
            None,
            None,
            "hls",
            "edge-1",
        )


async def measure_endpoint(args: argparse.Namespace, key: str) -> tuple[list[float], dict[str, Any]]:
    origin = f"http://127.0.0.1:{args.port}"
    headers = {"X-Auth-Token": key}
    samples: list[float] = []
    body: dict[str, Any] = {}
    async with aiohttp.ClientSession(headers=headers) as session:
        for n in range(args.requests + 20):
            started = time.perf_counter()
            async with session.get(f"{origin}{BASE}/stats") as resp:
                body = await resp.json()
                assert resp.status == 200, body
            if n >= 20:  # the first requests prepare each pooled connection's statements
                samples.append((time.perf_counter() - started) * 1000)
    return samples, body


async def measure_statements(url: str, portal_id: int) -> None:
    conn = await db.connect(url)
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    now = await conn.fetchval("SELECT date_trunc('second', now())")
    statements = {
        "counters": (stats._COUNTERS, portal_id),
        "top channels": (stats._TOP, portal_id, 10),
        "opens per hour": (stats._HOURS, portal_id, now),
        "channels without a guide": (
            stats._WITHOUT_GUIDE,
            portal_id,
            now,
            stats.GUIDE_AHEAD,
            catalog.OPEN_END,
            stats.MAX_LISTED,
        ),
        "EPG sources": (stats._EPG_PROBLEMS, portal_id, now, stats.STALE_AFTER),
    }
    for name, (sql, *params) in statements.items():
        samples = []
        for _ in range(60):
            started = time.perf_counter()
            await conn.fetch(sql, *params)
            samples.append((time.perf_counter() - started) * 1000)
        print(f"  SQL {name:<26} median {statistics.median(samples[10:]):6.2f} ms")
    await conn.close()


async def check(url: str, portal_id: int, body: dict[str, Any]) -> None:
    conn = await db.connect(url)
    truth = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM play_sessions WHERE portal_id = $1 AND active) AS viewers,
                  (SELECT count(DISTINCT subscriber_id) FROM play_sessions
                   WHERE portal_id = $1 AND active) AS watching,
                  (SELECT count(*) FROM subscribers WHERE portal_id = $1) AS subscribers""",
        portal_id,
    )
    await conn.close()
    got = (body["viewersNow"], body["subscribersWatchingNow"], body["subscribers"]["total"])
    assert got == tuple(truth), f"/stats said {got}, the tables say {tuple(truth)}"
    print(f"  checked: {got[0]:,} viewers, {got[1]:,} subscribers watching, {got[2]:,} subscribers")


async def writer_cost(url: str, data: stats_dataset.Dataset, size: int) -> None:
    """One progress batch and one batch of new sessions, with and without the stats triggers."""
    conn = await db.connect(url)
    active = await conn.fetch(
        "SELECT flussonic_id, id, subscriber_id, channel_id, channel_name,"
        " (extract(epoch FROM opened_at) * 1000)::bigint AS opened_ms"
        " FROM play_sessions WHERE active LIMIT $1",
        size,
    )
    churn = Churn(url, data, size)
    n = 20_000_000
    for enabled in (True, False, True, False):
        await conn.execute(
            ";".join(
                f"ALTER TABLE play_sessions {'ENABLE' if enabled else 'DISABLE'} TRIGGER {t}"
                for t in TRIGGERS
            )
        )
        times = {}
        now_ms = int(time.time() * 1000)
        progress = [churn._progress(r, now_ms) for r in active]
        fresh = []
        for _ in range(size):
            n += 1
            fresh.append(
                stats_dataset.session_row(
                    data.portal_id,
                    random.choice(data.subscriber_ids),
                    data.channel_ids[n % 100],
                    "ch-new",
                    now_ms,
                    now_ms,
                    None,
                    n,
                )
            )
        for name, rows in (("progress", progress), ("new", fresh)):
            started = time.perf_counter()
            await write_batch(conn, rows)
            times[name] = (time.perf_counter() - started) * 1000
        print(
            f"  gateway batch of {size:,} rows, stats triggers {'on ' if enabled else 'off'}: "
            f"progress {times['progress']:7.1f} ms, new sessions {times['new']:7.1f} ms"
        )
    await conn.execute("SELECT catena_stats_recount()")
    await conn.close()


async def main() -> None:
    args = arguments()
    async with testing.scratch_database(args.database_url, "catena_bench_stats_", keep=args.keep) as url:
        conn = await db.connect(url)
        await migrations.apply(conn)
        await ids.claim_node(conn)
        started = time.perf_counter()
        data = await stats_dataset.make(
            conn,
            subscribers=args.subscribers,
            channels=args.channels,
            open_sessions=args.open,
            closed=args.closed,
        )
        await conn.close()
        print(f"data set made in {time.perf_counter() - started:.1f} s ({url.rsplit('/', 1)[1]})")
        server = start_server(args, url)
        churn = Churn(url, data, args.churn)
        writer = None
        try:
            await testing.wait_healthy(f"http://127.0.0.1:{args.port}", server)
            writer = asyncio.create_task(churn.run())
            samples, body = await measure_endpoint(args, data.api_key)
            print(
                f"GET /stats while a writer merges {args.churn:,} rows/s ({churn.batches} batches): "
                f"{summary(samples)}"
            )
            if writer.done():
                raise SystemExit(f"the writer stopped: {writer.exception()!r}")
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await measure_statements(url, data.portal_id)
            _, body = await measure_endpoint(
                argparse.Namespace(**{**vars(args), "requests": 1}), data.api_key
            )
            await check(url, data.portal_id, body)
        finally:
            if writer is not None:
                writer.cancel()
            server.terminate()
            server.wait(timeout=30)
        await writer_cost(url, data, args.batch)


if __name__ == "__main__":
    asyncio.run(main())

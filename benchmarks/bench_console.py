"""Server time of every console page in a large portal, signed in as its owner.

    .venv/bin/python benchmarks/bench_console.py [--requests 200] [--port 9121]   # or: make bench-console

It makes a database of its own on ``--database-url``'s server, applies the
migrations and fills it with the dashboard benchmark's data set
(``benchmarks/stats_dataset.py``: 100,000 subscribers, 1,000 channels, 50,000 open
play sessions and ``--closed`` more over the last day, written through the
gateway's batch merge) plus ``--operations`` operations spread over 90 days (the
operations-paging benchmark's rows).  It starts ``python -m admin_api`` on
``--port``, signs in through ``/sign-in`` as a person does, and requests each page
of :data:`PAGES` ``--requests`` times one after another over a keep-alive
connection, after a few unmeasured requests that warm each pooled connection.

The time is the client's, on loopback: the server's time plus a fraction of a
millisecond.  The target is 50 ms p99 per page.  On a loaded machine the wall times
include waiting for a core, so each line also gives the server process's CPU time
per request (user + system, from ``/proc``), which the load does not inflate as much.
The database is dropped at the end unless ``--keep``.  Nothing here gates the test suite.

To measure a new screen, add a line to :data:`PAGES`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import bench_operations_paging, stats_dataset  # noqa: E402
from benchmarks.bench_stats import start_server, summary  # noqa: E402
from catena import db, ids, migrations, testing  # noqa: E402

# (name, path) of every page measured.  A path may use {subscriber}, {channel},
# {operation} (ids of rows that exist) and {hour_ago} (a time filter's value).
PAGES = [
    ("dashboard", "/"),
    ("dashboard refresh (htmx)", "/ [htmx]"),
    ("channels", "/channels"),
    ("play sessions", "/play-sessions"),
    ("play sessions, open", "/play-sessions?status=open"),
    ("play sessions, closed", "/play-sessions?status=closed"),
    ("play sessions of a subscriber", "/play-sessions?subscriber={subscriber}"),
    ("play sessions of a channel", "/play-sessions?channel={channel}"),
    ("play sessions, last hour", "/play-sessions?from={hour_ago}"),
    ("play sessions refresh (htmx)", "/play-sessions [htmx]"),
    ("operations", "/operations"),
    ("operations by type", "/operations?type=deleteSubscriber"),
    ("operations of a subscriber", "/operations?subscriber={op_subscriber}"),
    ("operations by manager", "/operations?manager=apiKey"),
    ("operations by a rare manager", "/operations?manager=owner@bench.localhost"),
    ("operations, last hour", "/operations?from={hour_ago}"),
    ("operation", "/operations/{operation}"),
]
TARGET_MS = 50.0
WARM_UP = 10


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
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--channels", type=int, default=1_000)
    parser.add_argument("--open", type=int, default=50_000, help="sessions playing now")
    parser.add_argument("--closed", type=int, default=50_000, help="sessions closed in the last day")
    parser.add_argument("--operations", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=200, help="measured requests per page")
    parser.add_argument("--port", type=int, default=9121)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    return parser.parse_args()


async def fill(url: str, args: argparse.Namespace) -> tuple[stats_dataset.Dataset, dict[str, str]]:
    """The data set; returns it and the values of the pages' placeholders."""
    conn = await db.connect(url)
    await migrations.apply(conn)
    await ids.claim_node(conn)
    data = await stats_dataset.make(
        conn,
        subscribers=args.subscribers,
        channels=args.channels,
        open_sessions=args.open,
        closed=args.closed,
    )
    session = await conn.fetchrow(
        "SELECT subscriber_id, channel_id FROM play_sessions WHERE portal_id = $1 ORDER BY id DESC LIMIT 1",
        data.portal_id,
    )
    await conn.close()
    raw = await asyncpg.connect(url)  # no JSON codec: COPY sends the payload text as jsonb
    columns = [
        "id",
        "portal_id",
        "type",
        "subscriber_id",
        "package_id",
        "payload",
        "created_at",
        "updated_at",
    ]
    for first in range(0, args.operations, 100_000):
        chunk = bench_operations_paging.records(data.portal_id, first, 100_000, args.operations)
        await raw.copy_records_to_table("operations", records=chunk, columns=columns)
    await raw.execute("ANALYZE")
    operation = await raw.fetchrow(
        "SELECT id, subscriber_id FROM operations WHERE portal_id = $1 ORDER BY id DESC LIMIT 1",
        data.portal_id,
    )
    await raw.close()
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    values = {
        "subscriber": ids.encode(session["subscriber_id"]),
        "channel": ids.encode(session["channel_id"]),
        "operation": ids.encode(operation["id"]),
        "op_subscriber": ids.encode(operation["subscriber_id"]),
        "hour_ago": hour_ago,
    }
    return data, values


async def sign_in(session: aiohttp.ClientSession, origin: str, data: stats_dataset.Dataset) -> None:
    form = {"email": data.owner_email, "password": data.owner_password}
    async with session.post(origin + "/sign-in", data=form, headers={"Origin": origin}) as resp:
        text = await resp.text()
        if resp.status != 200 or "/sign-out" not in text:
            raise SystemExit(f"signing in failed: {resp.status} {text[:300]}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(session: aiohttp.ClientSession, origin: str, path: str, requests: int) -> list[float]:
    path, htmx = path.removesuffix(" [htmx]"), path.endswith(" [htmx]")
    headers = {"HX-Request": "true"} if htmx else {}
    samples = []
    for n in range(requests + WARM_UP):
        started = time.perf_counter()
        async with session.get(origin + path, headers=headers, allow_redirects=False) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise SystemExit(f"GET {path}: {resp.status} {body[:300]!r}")
        if n >= WARM_UP:
            samples.append((time.perf_counter() - started) * 1000)
    return samples


async def main() -> None:
    args = arguments()
    async with testing.scratch_database(args.database_url, "catena_bench_console_", keep=args.keep) as url:
        started = time.perf_counter()
        data, values = await fill(url, args)
        print(f"data set made in {time.perf_counter() - started:.1f} s ({url.rsplit('/', 1)[1]})")
        print(f"load average before measuring: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        server = start_server(args, url)
        origin = f"http://127.0.0.1:{args.port}"
        worst = 0.0
        try:
            # unsafe: keep the session cookie of an IP address (127.0.0.1).
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
                await testing.wait_healthy(origin, server)
                await sign_in(session, origin, data)
                for name, path in PAGES:
                    cpu = cpu_seconds(server.pid)
                    samples = await measure(session, origin, path.format(**values), args.requests)
                    cpu_ms = (cpu_seconds(server.pid) - cpu) * 1000 / (args.requests + WARM_UP)
                    p99 = sorted(samples)[min(len(samples) - 1, int(len(samples) * 0.99))]
                    worst = max(worst, p99)
                    mark = "ok" if p99 <= TARGET_MS else "OVER"
                    print(f"  {name:<32} {summary(samples)}  cpu {cpu_ms:5.1f} ms  {mark}")
        finally:
            server.terminate()
            server.wait(timeout=30)
        print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        print(f"worst p99 {worst:.2f} ms (target {TARGET_MS:.0f} ms)")


if __name__ == "__main__":
    asyncio.run(main())

"""Time to page through the operations log with ``limit=1000`` through the HTTP API, and to export it.

    .venv/bin/python benchmarks/bench_operations_paging.py [--rows 1000000] [--port 8120]

It makes a database of its own on the PostgreSQL server of ``--server-url``
(default ``$CATENA_TEST_DATABASE_URL`` or the local one), applies the migrations,
makes a portal, inserts ``--rows`` operations with COPY (spread over the last 90
days, so three or four monthly partitions, with payloads like the real ones),
starts ``python -m admin_api`` on ``--port`` against it, and then times:

- baseline: the same keyset query the API runs, paged straight through asyncpg;
- api: ``GET /operations?limit=1000`` following ``next`` until the end, over HTTP;
- api, one month: the same with ``created_at_gte``/``created_at_lt`` of one month;
- csv export: ``GET /operations?format=csv``, every row in one streamed answer, read
  and counted by the client as it arrives (the server's peak RSS is printed too);

then the ratios the issue asks for: baseline time / CSV export time (at least 0.5
wanted: the export at least half as fast as the query alone) and API page / SQL page
(medians).  Every page is checked (ids increasing, nothing missing), and the export's
row count.  The database is dropped at the end unless ``--keep``.  Nothing here gates
the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from admin_api import operations  # noqa: E402
from catena import (  # noqa: E402
    db,
    ids,
    migrations,
    portals,
    testing,
)
from catena.settings import DEFAULT_REDIS_URL  # noqa: E402

BASE = "/tv-management/api/v1"
TYPES = ("createSubscriber", "createPackageSubscriber", "deletePackageSubscriber", "disableSubscriber")
# The admin API's own keyset query for an unfiltered page.
# The columns of :func:`records`' rows, in order.
COLUMNS = ["id", "portal_id", "type", "subscriber_id", "package_id", "payload", "created_at", "updated_at"]
BASELINE_SQL = operations._LIST.format(where="portal_id = $1 AND id >= $2 AND id < $3", limit="$4")


class Page(msgspec.Struct):
    operations: list[dict[str, object]]
    next: str | None = None


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_url = os.environ.get("CATENA_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--server-url", default=default_url)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--port", type=int, default=8120)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    return parser.parse_args()


def records(portal_id: int, first: int, count: int, rows: int) -> list[tuple[object, ...]]:
    """Operations ``first .. first+count`` of ``rows`` spread over the last 90 days, in id order."""
    start_ms = int((datetime.now(UTC) - timedelta(days=90)).timestamp() * 1000)
    step_ms = max(90 * 86_400_000 // rows, 1)
    made: list[tuple[object, ...]] = []
    for n in range(first, min(first + count, rows)):
        op_id = ids.lowest_at(start_ms + n * step_ms) + (n & 0xFFF)
        at = datetime.fromtimestamp(ids.timestamp_ms(op_id) / 1000, UTC)
        subscriber = ids.lowest_at(start_ms) + n // 4
        payload = (
            f'{{"subscriberId": "{ids.encode(subscriber)}", "name": "Абонент {n // 4}", '
            f'"phoneCountryCode": "7", "phone": "9{n // 4:09d}", "packageName": "premium", '
            f'"managerEmail": "apiKey"}}'
        )
        made.append((op_id, portal_id, TYPES[n % 4], subscriber, None, payload, at, at))
    return made


async def fill(url: str, rows: int) -> tuple[int, str, float]:
    """Migrate, make a portal, COPY the operations; returns (portal id, API key, seconds)."""
    conn = await db.connect(url)
    await migrations.apply(conn)
    made = await portals.create(conn, name="bench", domain="bench.localhost", owner_email="o@bench.localhost",
                                owner_password="Bench-Pass-123", bcrypt_rounds=4)  # fmt: skip
    await conn.close()
    portal_id = ids.decode(made.portalId) or 0
    started = time.perf_counter()
    raw = await asyncpg.connect(url)  # no JSON codec: COPY sends the payload text as jsonb
    batch = 100_000  # one transaction each: the commit-time feed trigger runs per batch
    for first in range(0, rows, batch):
        chunk = records(portal_id, first, batch, rows)
        await raw.copy_records_to_table("operations", records=chunk, columns=COLUMNS)
    await raw.execute("ANALYZE operations")
    await raw.close()
    return portal_id, made.apiKey, time.perf_counter() - started


async def baseline(url: str, portal_id: int, limit: int) -> tuple[float, int, list[float]]:
    conn = await db.connect(url)
    seen, lower, pages = 0, 0, []
    started = time.perf_counter()
    while True:
        t = time.perf_counter()
        rows = await conn.fetch(BASELINE_SQL, portal_id, lower, (1 << 63) - 1, limit + 1)
        pages.append(time.perf_counter() - t)
        page = rows[:limit]
        seen += len(page)
        if len(rows) <= limit:
            break
        lower = page[-1]["id"] + 1
    elapsed = time.perf_counter() - started
    await conn.close()
    return elapsed, seen, pages


async def through_api(port: int, key: str, query: str, limit: int) -> tuple[float, int, list[float]]:
    decoder = msgspec.json.Decoder(Page)
    seen, last, cursor, pages = 0, -1, None, []
    url = f"http://127.0.0.1:{port}{BASE}/operations"
    async with aiohttp.ClientSession(headers={"X-Auth-Token": key}) as session:
        started = time.perf_counter()
        while True:
            params = f"?limit={limit}{query}" + (f"&cursor={cursor}" if cursor else "")
            t = time.perf_counter()
            async with session.get(url + params) as response:
                assert response.status == 200, await response.text()
                page = decoder.decode(await response.read())
            pages.append(time.perf_counter() - t)
            for op in page.operations:
                op_id = ids.decode(str(op["operationId"]))
                assert op_id is not None and op_id > last, "operations out of order"
                last = op_id
            seen += len(page.operations)
            cursor = page.next
            if not cursor:
                return time.perf_counter() - started, seen, pages


async def csv_export(port: int, key: str) -> tuple[float, int, list[float]]:
    """The whole log as CSV: seconds until the last byte, data rows, and the time to the first byte."""
    url = f"http://127.0.0.1:{port}{BASE}/operations?format=csv"
    rows, first = -1, 0.0  # the header row is not a data row
    async with aiohttp.ClientSession(headers={"X-Auth-Token": key}) as session:
        started = time.perf_counter()
        async with session.get(url) as response:
            assert response.status == 200, await response.text()
            async for chunk in response.content.iter_any():
                first = first or time.perf_counter() - started
                rows += chunk.count(b"\r\n")
        return time.perf_counter() - started, rows, [first]


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), MB; 0 where /proc is not there."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), "VmHWM: 0 kB")
    return int(line.split()[1]) / 1024


def report(name: str, elapsed: float, seen: int, pages: list[float]) -> None:
    ordered = sorted(pages)
    p95 = ordered[int(len(ordered) * 0.95) - 1] if len(ordered) > 1 else ordered[0]
    print(
        f"{name:<26} {seen:>9,} ops  {len(pages):>5} pages  {elapsed:8.2f} s  {seen / elapsed:>9,.0f} ops/s  "
        f"page median {statistics.median(pages) * 1000:6.1f} ms  p95 {p95 * 1000:6.1f} ms  "
        f"max {ordered[-1] * 1000:6.1f} ms"
    )


def month_query() -> tuple[str, str]:
    """The last whole calendar month inside the data, as created_at filters."""
    now = datetime.now(UTC)
    this_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    return last_month.strftime("%Y-%m-%d"), this_month.strftime("%Y-%m-%d")


async def main() -> None:
    args = arguments()
    async with testing.scratch_database(args.server_url, "catena_bench_", keep=args.keep) as url:
        portal_id, key, seconds = await fill(url, args.rows)
        print(f"inserted {args.rows:,} operations with COPY in {seconds:.1f} s ({url.rsplit('/', 1)[1]})")
        env = {**os.environ, "CATENA_DATABASE_URL": url, "CATENA_ADMIN_PORT": str(args.port),
               "CATENA_REDIS_URL": os.environ.get("CATENA_REDIS_URL", DEFAULT_REDIS_URL),
               "CATENA_TOKEN_SECRETS": "bench:catena-paging-benchmark-secret-0123456789",
               "CATENA_WEBHOOKS_ENABLED": "false", "CATENA_LOG_LEVEL": "warning"}  # fmt: skip
        server = testing.start_service("admin_api", env)
        try:
            await testing.wait_healthy(f"http://127.0.0.1:{args.port}", server, ready=(200, 503))
            sql_time, sql_seen, sql_pages = await baseline(url, portal_id, args.limit)
            report("baseline (asyncpg, SQL)", sql_time, sql_seen, sql_pages)
            elapsed, seen, pages = await through_api(args.port, key, "", args.limit)
            assert seen == args.rows, f"paged {seen} of {args.rows}"
            report("api, all", elapsed, seen, pages)
            gte, lt = month_query()
            month = f"&created_at_gte={gte}&created_at_lt={lt}"
            report(f"api, {gte[:7]} only", *await through_api(args.port, key, month, args.limit))
            rss = peak_rss_mb(server.pid)
            export_time, exported, first = await csv_export(args.port, key)
            assert exported == args.rows, f"exported {exported} of {args.rows}"
            print(
                f"{'csv export, all':<26} {exported:>9,} ops  {'1':>5} answer {export_time:8.2f} s  "
                f"{exported / export_time:>9,.0f} ops/s  first bytes after {first[0] * 1000:.1f} ms"
            )
            after = peak_rss_mb(server.pid)
            print(f"admin_api peak RSS: {rss:.0f} MB after JSON paging, {after:.0f} MB after CSV")
            print(f"csv export speed / baseline speed: {sql_time / export_time:.2f}  (at least 0.50 wanted)")
            ratio = statistics.median(pages) / statistics.median(sql_pages)
            print(f"json page / sql page (medians): {ratio:.2f}")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    asyncio.run(main())

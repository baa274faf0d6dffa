"""Server time of every console page in a portal of 100,000 subscribers, signed in as its owner.

    .venv/bin/python benchmarks/bench_console.py [--requests 200] [--port 9121]   # or: make bench-console

It makes a database of its own on ``--database-url``'s server, applies the
migrations and fills it with the dashboard benchmark's data set
(``benchmarks/stats_dataset.py``: 100,000 subscribers named as the subscriber-search
benchmark names them, 50 packages, 1,000 channels with guides from four EPG sources,
50,000 open play sessions and ``--closed`` more over the last day, written through
the gateway's batch merge), the subscriber-search benchmark's second portal (10,000
subscribers the search index also holds), ``--operations`` operations spread over
90 days (the operations-paging benchmark's rows), and what the other screens show:
each channel in three packages (about 60 a package), three free packages, 60
managers, 10 webhooks (as delivery leaves them: one failing, a day's operations
behind, the others caught up), 40 updates in the main EPG source's history, and
one subscriber with 42 play sessions and 24 operations (made through the
Management API), whose card is measured.

It starts ``python -m admin_api`` on ``--port``, signs in through ``/sign-in`` as a
person does, finds the cursors of the "Next page" links the pages offer, and
requests each page of :data:`PAGES` ``--requests`` times one after another over a
keep-alive connection, after a few unmeasured requests that warm each pooled
connection.  Searches take a new text at each request (drawn from the data).

The time is the client's, on loopback: the server's time plus a fraction of a
millisecond.  The target is 50 ms p99 per page.  On a loaded machine the wall times
include waiting for a core, so each line also gives the server process's CPU time
per request (user + system, from ``/proc``), which the load does not inflate as much.
The database is dropped at the end unless ``--keep``.  Nothing here gates the test suite.

To measure a new screen, add a line to :data:`PAGES`.  ``make bench-console-content``
(``benchmarks/bench_console_content.py``) measures the content screens in a
catalogue of 100,000 channels and 100,000 packages with the same table.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import os
import random
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from authgate.recorder import write_batch  # noqa: E402
from benchmarks import bench_operations_paging, bench_subscriber_search, stats_dataset  # noqa: E402
from benchmarks.bench_stats import start_server  # noqa: E402
from catena import db, ids, migrations, passwords, testing  # noqa: E402

API = "/tv-management/api/v1"
# A placeholder's values: one, or several that the requests take in turn.
Placeholders = dict[str, list[str]]
MANAGERS = 60
WEBHOOKS = 10
FETCHES = 40
HISTORY_SESSIONS = 42
HISTORY_OPERATIONS = 24
SEARCHES = 200
# Searches of the channel list and of "Add channel" (channels are "ch00042", "Канал 42").
CHANNEL_QUERIES = ["ch004", "ch00999", "канал 1", "нал 42", "zzz", "ch"]
PACKAGE_QUERIES = ["package-1", "age-4", "pack", "zzz"]

# (name, path) of every page measured: every GET page of the console a manager
# opens, and the fragments htmx fetches (" [htmx]").  A path may use the names of
# :func:`placeholders` (ids of rows that exist, cursors found by following a page's
# "Next page" link); a name with several values (the searches) takes the next one
# at each request.  CSV exports and logos are not pages and are not measured.
PAGES = [
    ("sign-in (signed out)", "/sign-in [anonymous]"),
    ("portal picker", "/portals"),
    ("dashboard", "/"),
    ("dashboard refresh (htmx)", "/ [htmx]"),
    ("channels", "/channels"),
    ("channels, next page (htmx)", "{channels_next} [htmx]"),
    ("channels search (htmx)", "/channels?q={channel_q} [htmx]"),
    ("channel form, new", "/channels/new"),
    ("channel form (EPG selects)", "/channels/{linked_channel}"),
    ("channel form: EPG channel field (htmx)", "/channels/epg-channel-field?epgSourceName=main [htmx]"),
    ("channel delete confirmation", "/channels/{channel}/delete"),
    ("packages", "/packages"),
    ("packages search (htmx)", "/packages?q={package_q} [htmx]"),
    ("package form, new", "/packages/new"),
    ("package (composition)", "/packages/{package}"),
    ("package: next channels (htmx)", "{package_next} [htmx]"),
    ("package: Add channel search (htmx)", "/packages/{package}/choices?q={channel_q} [htmx]"),
    ("package edit", "/packages/{package}/edit"),
    ("package delete confirmation", "/packages/{package}/delete"),
    ("subscribers", "/subscribers"),
    ("subscribers, a page half way (htmx)", "{subscribers_deep} [htmx]"),
    ("subscribers search, phone prefix", "/subscribers?q={phone_prefix}&disabled= [htmx]"),
    ("subscribers search, phone digits", "/subscribers?q={phone_digits}&disabled= [htmx]"),
    ("subscribers search, name", "/subscribers?q={name_q}&disabled= [htmx]"),
    ("subscriber form, new", "/subscribers/new"),
    ("subscriber card", "/subscribers/{busy}"),
    ("subscriber: open sessions (htmx)", "/subscribers/{busy}/sessions?state=open [htmx]"),
    ("subscriber: next past sessions", "{busy_sessions_next} [htmx]"),
    ("subscriber: past sessions page", "/subscribers/{busy}/sessions?state=past"),
    ("subscriber: next operations", "{busy_operations_next} [htmx]"),
    ("subscriber: operations page", "/subscribers/{busy}/operations"),
    ("subscriber edit", "/subscribers/{busy}/edit"),
    ("subscriber reset-token confirmation", "/subscribers/{busy}/reset-token"),
    ("subscriber delete confirmation", "/subscribers/{busy}/delete"),
    ("EPG sources", "/epg-sources"),
    ("EPG source form, new", "/epg-sources/new"),
    ("EPG source (history)", "/epg-sources/{source}"),
    ("EPG source: next history (htmx)", "{source_next} [htmx]"),
    ("EPG source: update progress (htmx)", "/epg-sources/{source}/progress?job=1 [htmx]"),
    ("EPG source edit", "/epg-sources/{source}/edit"),
    ("programme browser, a day", "/epg-sources/{source}/programs?date={today}"),
    ("programme browser, a channel", "/epg-sources/{source}/programs?date={today}&epgChannelName=epg-1"),
    ("programme browser: next (htmx)", "{programs_next} [htmx]"),
    ("EPG source delete confirmation", "/epg-sources/{source}/delete"),
    ("play sessions", "/play-sessions"),
    ("play sessions, open", "/play-sessions?status=open"),
    ("play sessions, closed", "/play-sessions?status=closed"),
    ("play sessions of a subscriber", "/play-sessions?subscriber={subscriber}"),
    ("play sessions of a channel", "/play-sessions?channel={channel}"),
    ("play sessions, last hour", "/play-sessions?from={hour_ago}"),
    ("play sessions refresh (htmx)", "/play-sessions [htmx]"),
    ("terminate confirmation", "/play-sessions/{open_session}/terminate"),
    ("operations", "/operations"),
    ("operations by type", "/operations?type=deleteSubscriber"),
    ("operations of a subscriber", "/operations?subscriber={op_subscriber}"),
    ("operations by manager", "/operations?manager=apiKey"),
    ("operations by a rare manager", "/operations?manager=owner@bench.localhost"),
    ("operations, last hour", "/operations?from={hour_ago}"),
    ("operation", "/operations/{operation}"),
    ("managers", "/managers"),
    ("manager form, new", "/managers/new"),
    ("manager edit", "/managers/{manager}"),
    ("manager delete confirmation", "/managers/{manager}/delete"),
    ("portal settings", "/portal"),
    ("portal: API key confirmation", "/portal/api-key"),
    ("portal: free package removal", "/portal/free-packages/{free_package}/remove"),
    ("portal: webhook delete confirmation", "/portal/webhooks/{webhook}/delete"),
]
# Pages whose first page links to the next one: the placeholder and the page.
NEXT_PAGES = {
    "channels_next": "/channels",
    "package_next": "/packages/{package}",
    "busy_sessions_next": "/subscribers/{busy}/sessions?state=past",
    "busy_operations_next": "/subscribers/{busy}/operations",
    "source_next": "/epg-sources/{source}",
    "programs_next": "/epg-sources/{source}/programs?date={today}",
}
TARGET_MS = 50.0
WARM_UP = 10


def arguments() -> argparse.Namespace:
    parser = testing.bench_arguments(__doc__)
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--channels", type=int, default=1_000)
    parser.add_argument("--open", type=int, default=50_000, help="sessions playing now")
    parser.add_argument("--closed", type=int, default=50_000, help="sessions closed in the last day")
    parser.add_argument("--operations", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=200, help="measured requests per page")
    parser.add_argument("--port", type=int, default=9121)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    return parser.parse_args()


async def fill(url: str, args: argparse.Namespace) -> tuple[stats_dataset.Dataset, Placeholders]:
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
    # The subscriber-search benchmark's second portal: the search index holds both.
    await bench_subscriber_search.add_portal(conn, "other", args.subscribers // 10, random.Random(11))
    busy = data.subscriber_ids[3]  # enabled, in two packages
    await _history_sessions(conn, data, busy)
    values = await _console_rows(conn, data)
    await conn.close()
    raw = await asyncpg.connect(url)  # no JSON codec: COPY sends the payload text as jsonb
    for first in range(0, args.operations, 100_000):
        chunk = bench_operations_paging.records(data.portal_id, first, 100_000, args.operations)
        await raw.copy_records_to_table("operations", records=chunk, columns=bench_operations_paging.COLUMNS)
    await raw.execute("ANALYZE")
    await _delivered(raw, data.portal_id, args.operations // 90)
    values.update(await _row_ids(raw, data.portal_id))
    await raw.close()
    values["busy"] = [ids.encode(busy)]
    values["hour_ago"] = [(datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")]
    values["today"] = [datetime.now(UTC).strftime("%Y-%m-%d")]
    return data, values


async def _history_sessions(conn: asyncpg.Connection, data: stats_dataset.Dataset, subscriber: int) -> None:
    """40 past sessions and 2 open ones of one subscriber: the card's histories run to a second page."""
    now_ms = int(time.time() * 1000)
    channel = data.channel_ids[0]
    rows = []
    for n in range(HISTORY_SESSIONS):
        opened = now_ms - (n + 1) * 3_600_000
        closed = None if n < 2 else opened + 600_000
        rows.append(
            stats_dataset.session_row(
                data.portal_id,
                subscriber,
                channel,
                "ch00000",
                opened,
                opened + 600_000,
                closed,
                10_000_000 + n,
            )
        )
    await write_batch(conn, rows)


async def _console_rows(conn: asyncpg.Connection, data: stats_dataset.Dataset) -> Placeholders:
    """What the other screens show: packages' channels, managers, webhooks, free packages, a history."""
    portal = data.portal_id
    packages = [
        r["id"] for r in await conn.fetch("SELECT id FROM packages WHERE portal_id = $1 ORDER BY id", portal)
    ]
    # Each channel in three packages: a package holds about 60, more than a page.
    links = {
        (packages[(n + k * 17) % len(packages)], c) for n, c in enumerate(data.channel_ids) for k in range(3)
    }
    await conn.copy_records_to_table(
        "channel_packages",
        records=[(p, c, portal) for p, c in links],
        columns=["package_id", "channel_id", "portal_id"],
    )
    await conn.executemany(
        "INSERT INTO portal_free_packages (portal_id, package_id) VALUES ($1, $2)",
        [(portal, p) for p in packages[:3]],
    )
    hashed = await passwords.hash_password("Bench-Manager-123!", 4)
    managers = [ids.new_id() for _ in range(MANAGERS)]
    await conn.executemany(
        """INSERT INTO managers (id, portal_id, email, name, password_hash, is_admin, is_content_admin,
                                 is_subscriber_admin, last_login_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())""",
        [(m, portal, f"manager{n}@bench.localhost", f"Менеджер {n}", hashed, n % 5 == 0, n % 2 == 0,
          n % 3 == 0) for n, m in enumerate(managers)],
    )  # fmt: skip
    webhooks = [ids.new_id() for _ in range(WEBHOOKS)]
    await conn.executemany(
        """INSERT INTO webhooks (id, portal_id, url, secret, failures, last_error)
           VALUES ($1, $2, $3, 'secret', $4, $5)""",
        [(w, portal, f"https://hooks{n}.example.com/catena", 3 if n == 1 else 0,
          "timeout" if n == 1 else None) for n, w in enumerate(webhooks)],
    )  # fmt: skip
    source = await conn.fetchval("SELECT id FROM epg_sources WHERE portal_id = $1 AND name = 'main'", portal)
    await conn.executemany(
        """INSERT INTO epg_fetches (id, portal_id, epg_source_id, status, channels, created_at, fetched_at)
           VALUES ($1, $2, $3, 'success', 900, now() - make_interval(hours => $4),
                   now() - make_interval(hours => $4))""",
        [(ids.new_id(), portal, source, hours) for hours in range(2, 2 + FETCHES)],
    )  # fmt: skip
    await conn.execute("VACUUM ANALYZE")
    return {
        "package": [ids.encode(packages[0])],
        "free_package": [ids.encode(packages[0])],
        "manager": [ids.encode(managers[1])],
        "webhook": [ids.encode(webhooks[1])],
        "source": [ids.encode(source)],
    }


async def _delivered(conn: asyncpg.Connection, portal: int, backlog: int) -> None:
    """The webhooks as delivery leaves them: all caught up but the failing one, ``backlog`` behind.

    The operations feed numbered every operation COPY wrote (the portal has
    webhooks); delivery prunes what every webhook has received."""
    await conn.execute(
        """UPDATE webhooks
           SET last_delivered_seq = (SELECT max(seq) FROM operation_feed WHERE portal_id = $1)
                                    - CASE WHEN failures > 0 THEN $2 ELSE 0 END
           WHERE portal_id = $1""",
        portal,
        backlog,
    )
    await conn.execute(
        """DELETE FROM operation_feed WHERE portal_id = $1
           AND seq <= (SELECT min(last_delivered_seq) FROM webhooks WHERE portal_id = $1)""",
        portal,
    )
    await conn.execute("VACUUM ANALYZE operation_feed")


async def _row_ids(conn: asyncpg.Connection, portal: int) -> Placeholders:
    """Ids of rows the data set made at random, and the searches' texts drawn from its subscribers."""
    session = await conn.fetchrow(
        "SELECT subscriber_id, channel_id FROM play_sessions WHERE portal_id = $1 ORDER BY id DESC LIMIT 1",
        portal,
    )
    open_session = await conn.fetchval(
        "SELECT id FROM play_sessions WHERE portal_id = $1 AND closed_at IS NULL ORDER BY id DESC LIMIT 1",
        portal,
    )
    linked = await conn.fetchval(
        "SELECT id FROM channels WHERE portal_id = $1 AND epg_source_name = 'main' ORDER BY id LIMIT 1",
        portal,
    )
    operation = await conn.fetchrow(
        "SELECT id, subscriber_id FROM operations WHERE portal_id = $1 ORDER BY id DESC LIMIT 1", portal
    )
    people = [tuple(r) for r in await conn.fetch(
        "SELECT name, phone_country_code, phone FROM subscribers WHERE portal_id = $1", portal
    )]  # fmt: skip
    texts = bench_subscriber_search.queries(random.Random(12), people, SEARCHES)
    return {
        "subscriber": [ids.encode(session["subscriber_id"])],
        "channel": [ids.encode(session["channel_id"])],
        "linked_channel": [ids.encode(linked)],
        "open_session": [ids.encode(open_session)],
        "operation": [ids.encode(operation["id"])],
        "op_subscriber": [ids.encode(operation["subscriber_id"])],
        "phone_prefix": [quote(t) for t in texts["phone prefix"]],
        "phone_digits": [quote(t) for t in texts["phone substring"]],
        "name_q": [quote(t) for t in texts["name"]],
        "channel_q": [quote(t) for t in CHANNEL_QUERIES],
        "package_q": [quote(t) for t in PACKAGE_QUERIES],
    }


async def operations_history(session: aiohttp.ClientSession, origin: str, key: str, subscriber: str) -> None:
    """Operations of one subscriber made through the Management API (disable, enable): real rows."""
    headers = {"X-Auth-Token": key}
    base = f"{origin}{API}/subscribers/{subscriber}"
    for n in range(HISTORY_OPERATIONS // 2):
        for action, body in (("disable", {"reason": f"r{n}"}), ("enable", None)):
            async with session.post(f"{base}/{action}", json=body, headers=headers) as resp:
                if resp.status != 200:
                    raise SystemExit(f"{action}: {resp.status} {await resp.text()}")


async def sign_in(session: aiohttp.ClientSession, origin: str, email: str, password: str) -> None:
    form = {"email": email, "password": password}
    async with session.post(origin + "/sign-in", data=form, headers={"Origin": origin}) as resp:
        text = await resp.text()
        if resp.status != 200 or "/sign-out" not in text:
            raise SystemExit(f"signing in failed: {resp.status} {text[:300]}")


async def next_link(session: aiohttp.ClientSession, origin: str, path: str, pages: int = 1) -> str:
    """The path of the "Next page" link ``pages`` pages after ``path`` (followed as htmx does)."""
    for n in range(pages):
        async with session.get(origin + path, headers={"HX-Request": "true"} if n else {}) as resp:
            text = await resp.text()
        found = re.search(r'<tr class="more">.*?href="([^"]+)"', text, re.S)
        if found is None:
            raise SystemExit(f"GET {path}: no next page")
        path = html.unescape(found.group(1))
    return path


async def placeholders(
    session: aiohttp.ClientSession, origin: str, values: Placeholders, subscribers: int
) -> None:
    """The cursors of :data:`NEXT_PAGES` and of a subscribers page half way down the list."""
    for name, path in NEXT_PAGES.items():
        values[name] = [await next_link(session, origin, fill_in(path, values, 0))]
    values["subscribers_deep"] = [await next_link(session, origin, "/subscribers", subscribers // 100)]


def fill_in(path: str, values: Placeholders, n: int) -> str:
    """``path`` with its placeholders; a placeholder of several values gives its ``n``th."""
    return path.format(**{name: found[n % len(found)] for name, found in values.items()})


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    session: aiohttp.ClientSession, origin: str, paths: list[str], requests: int
) -> list[float]:
    """Wall times in ms of ``requests`` GETs, after :data:`WARM_UP`, cycling through ``paths``.

    A path ending in " [htmx]" is asked for as htmx asks (its fragment)."""
    samples = []
    for n in range(requests + WARM_UP):
        path = paths[n % len(paths)]
        path, htmx = path.removesuffix(" [htmx]"), path.endswith(" [htmx]")
        headers = {"HX-Request": "true"} if htmx else {}
        started = time.perf_counter()
        async with session.get(origin + path, headers=headers, allow_redirects=False) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise SystemExit(f"GET {path}: {resp.status} {body[:300]!r}")
        if n >= WARM_UP:
            samples.append((time.perf_counter() - started) * 1000)
    return samples


async def backends_cpu(url: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend serving the database of ``url`` (this one's aside).

    The server runs its SQL in these processes, so their time is the pages' SQL cost
    (the benchmark must run on the database's machine to read their ``/proc``)."""
    conn = await asyncpg.connect(url)
    try:
        pids = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    found = {}
    for row in pids:
        try:
            found[row["pid"]] = cpu_seconds(row["pid"])
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            pass  # gone, or another machine's
    return found


async def table(
    url: str, pid: int, origin: str, runs: list[tuple[str, aiohttp.ClientSession, list[str]]], requests: int
) -> float:
    """Measure each (name, session, paths) and print its line; returns the worst p99.

    Beside the wall times: CPU per request of the server process and of the
    database backends serving it (each the time it used during the page's requests)."""
    worst = 0.0
    print(f"  {'page':<42} {'p50':>9}  {'p99':>9}  {'max':>9}  {'server CPU':>10}  {'SQL CPU':>8}")
    for name, session, paths in runs:
        cpu, backends = cpu_seconds(pid), await backends_cpu(url)
        samples = sorted(await measure(session, origin, paths, requests))
        count = requests + WARM_UP
        cpu_ms = (cpu_seconds(pid) - cpu) * 1000 / count
        after = await backends_cpu(url)
        sql_ms = sum(used - backends.get(b, 0.0) for b, used in after.items()) * 1000 / count
        p50, p99 = samples[len(samples) // 2], samples[min(len(samples) - 1, int(len(samples) * 0.99))]
        worst = max(worst, p99)
        mark = "ok" if p99 <= TARGET_MS else "OVER"
        print(
            f"  {name:<42} {p50:6.2f} ms  {p99:6.2f} ms  {samples[-1]:6.2f} ms  {cpu_ms:7.1f} ms  "
            f"{sql_ms:5.1f} ms  {mark}",
            flush=True,
        )
    return worst


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


async def main() -> None:
    args = arguments()
    async with testing.scratch_database(args.database_url, "catena_bench_console_", keep=args.keep) as url:
        started = time.perf_counter()
        data, values = await fill(url, args)
        print(f"data set made in {time.perf_counter() - started:.1f} s ({url.rsplit('/', 1)[1]})")
        server = start_server(args, url)
        origin = f"http://127.0.0.1:{args.port}"
        try:
            # unsafe: keep the session cookie of an IP address (127.0.0.1).
            async with (
                aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session,
                aiohttp.ClientSession() as anonymous,
            ):
                await testing.wait_healthy(origin, server)
                await operations_history(session, origin, data.api_key, values["busy"][0])
                await sign_in(session, origin, data.owner_email, data.owner_password)
                await placeholders(session, origin, values, args.subscribers)
                print(f"load average before measuring: {load()}")
                runs = []
                for name, path in PAGES:
                    who = anonymous if path.endswith(" [anonymous]") else session
                    path = path.removesuffix(" [anonymous]")
                    runs.append(
                        (
                            name,
                            who,
                            [fill_in(path, values, n) for n in range(len(max(values.values(), key=len)))],
                        )
                    )
                worst = await table(url, server.pid, origin, runs, args.requests)
        finally:
            server.terminate()
            server.wait(timeout=30)
        print(f"load average after: {load()}")
        print(f"worst p99 {worst:.2f} ms (target {TARGET_MS:.0f} ms)")


if __name__ == "__main__":
    asyncio.run(main())

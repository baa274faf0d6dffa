"""Latency of an unrelated request while 300 wrong passwords arrive at once (issue 15 item 1).

Run it with one command (it makes its own database and drops it afterwards)::

    .venv/bin/python benchmarks/bench_login_burst.py
    .venv/bin/python benchmarks/bench_login_burst.py --env CATENA_LOGIN_FAIL_LIMIT=100000

It creates a fresh database on ``--database-url``'s server, applies the migrations,
makes a portal whose owner's password is hashed at bcrypt cost ``--rounds``, starts
``python -m admin_api`` from ``--root`` (default: this tree; point it at an
unpacked older tree, e.g. ``git archive main | tar -x -C /tmp/before``, to compare)
on 127.0.0.1:``--port``, and then

1. times ``GET /portal`` (API key; HTTP, authentication, one query) one request at a
   time over a keep-alive connection for ``--baseline`` seconds;
2. sends ``--burst`` concurrent ``POST /login`` with a wrong password for the owner's
   email, each on its own connection, and keeps timing ``GET /portal`` the same way
   until the last login is answered.

It prints the p50, p99 and worst ``GET /portal`` of both phases, how long the burst
took and what the logins were answered.  With the default limits (10 failed logins
per email and address) the burst is refused after ten guesses; raise
``CATENA_LOGIN_FAIL_LIMIT`` (``--env``) to make every guess reach bcrypt, the load
a distributed attack puts on the password checks.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from catena import (  # noqa: E402
    db,
    migrations,
    portals,
    testing,
)

BASE = "/tv-management/api/v1"
PASSWORD = "Owner-Pass-123"


def arguments() -> argparse.Namespace:
    parser = testing.bench_arguments(__doc__)
    parser.add_argument("--root", type=Path, default=ROOT, help="the source tree admin_api runs from")
    parser.add_argument("--port", type=int, default=8130)
    parser.add_argument("--burst", type=int, default=300, help="concurrent wrong passwords")
    parser.add_argument("--rounds", type=int, default=12, help="bcrypt cost of the owner's password")
    parser.add_argument("--baseline", type=float, default=3.0, help="seconds of GET /portal before the burst")
    parser.add_argument("--env", action="append", default=[], help="CATENA_X=value for admin_api")
    return parser.parse_args()


async def make_portal(url: str, rounds: int) -> portals.CreatedPortal:
    conn = await db.connect(url)
    try:
        await migrations.apply(conn)
        return await portals.create(
            conn,
            name="burst",
            domain="burst.example.com",
            owner_email="owner@burst.example.com",
            owner_password=PASSWORD,
            bcrypt_rounds=rounds,
        )
    finally:
        await conn.close()


def start_admin(args: argparse.Namespace, url: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATENA_")}
    env |= {
        "CATENA_DATABASE_URL": url,
        "CATENA_REDIS_URL": args.redis_url,
        "CATENA_REDIS_PREFIX": "bench-login-" + secrets.token_hex(4),
        # A secret of its own: the services refuse the public development one.
        "CATENA_TOKEN_SECRETS": "bench:" + secrets.token_urlsafe(32),
        "CATENA_ADMIN_PORT": str(args.port),
        "CATENA_BCRYPT_ROUNDS": str(args.rounds),
        "CATENA_WEBHOOKS_ENABLED": "false",
        "CATENA_LOG_LEVEL": "warning",
        "PYTHONPATH": str(args.root),
    }
    env |= dict(item.split("=", 1) for item in args.env)
    return testing.start_service("admin_api", env, cwd=args.root)


async def time_portal(base: str, key: str, until: asyncio.Event, seconds: float | None) -> list[float]:
    """``GET /portal`` one at a time until ``until`` is set (or ``seconds`` passed)."""
    timings = []
    stop_at = time.monotonic() + seconds if seconds else None
    async with aiohttp.ClientSession(headers={"X-Auth-Token": key}) as session:
        while not until.is_set() and (stop_at is None or time.monotonic() < stop_at):
            started = time.perf_counter()
            async with session.get(base + BASE + "/portal") as response:
                await response.read()
                assert response.status == 200, response.status
            timings.append(time.perf_counter() - started)
    return timings


async def burst(base: str, email: str, count: int) -> tuple[collections.Counter[int], float]:
    started = time.perf_counter()
    body = {"email": email, "password": "Wrong-Pass-1!"}
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> int:
            try:
                async with session.post(base + BASE + "/login", json=body) as response:
                    await response.read()
                    return response.status
            except aiohttp.ClientError:
                return 0  # the connection was refused or reset

        statuses = await asyncio.gather(*(one() for _ in range(count)))
    return collections.Counter(statuses), time.perf_counter() - started


def summary(name: str, timings: list[float]) -> str:
    ms = sorted(t * 1000 for t in timings)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (
        f"{name:<28} {len(ms):>6} requests  p50 {statistics.median(ms):8.1f} ms"
        f"  p99 {p99:8.1f} ms  max {ms[-1]:8.1f} ms"
    )


async def measure(args: argparse.Namespace, url: str) -> None:
    portal = await make_portal(url, args.rounds)
    base = f"http://127.0.0.1:{args.port}"
    process = start_admin(args, url)
    try:
        await testing.wait_healthy(base, ready=(200, 503))
        baseline = await time_portal(base, portal.apiKey, asyncio.Event(), args.baseline)
        done = asyncio.Event()
        timer = asyncio.create_task(time_portal(base, portal.apiKey, done, None))
        statuses, took = await burst(base, portal.ownerEmail, args.burst)
        done.set()
        during = await timer
    finally:
        process.terminate()
        process.wait(10)
    print(f"admin_api from {args.root}, bcrypt cost {args.rounds}, extra env {args.env or 'none'}")
    print(summary("GET /portal, idle", baseline))
    print(summary(f"GET /portal, {args.burst} logins", during))
    answered = ", ".join(f"{count} x {status or 'refused'}" for status, count in sorted(statuses.items()))
    print(f"burst of {args.burst} wrong passwords took {took:.1f} s: {answered}")


async def main() -> None:
    args = arguments()
    async with testing.scratch_database(args.database_url, "catena_bench_login_") as url:
        await measure(args, url)


if __name__ == "__main__":
    asyncio.run(main())

"""``make chaos``: the gateway under load while Redis and PostgreSQL fail in turn.

Starts a private PostgreSQL and Redis (:mod:`catena.embedded`, under ``var/chaos``,
never the machine's servers) and two gateway processes on loopback, then runs one
phase after another with viewers zapping through both gateways
(:class:`loadtests.faults.Viewers`): a baseline, then Redis hung (``SIGSTOP`` for
``--hang`` seconds, then ``SIGCONT``), Redis killed (``SIGKILL``, restarted empty
``--down`` seconds later), PostgreSQL hung (every process of the cluster), and
PostgreSQL killed (every process, restarted on its data).  In each fault phase two
subscribers are disabled meanwhile.  At the end the gateways are stopped (SIGTERM
flushes their sessions) and PostgreSQL is read.  One table, a row per phase:

* requests: ``/auth`` checks and ``play_closed`` deliveries answered;
* wrong: an answer that must not be — an admission over the subscriber's limit, an
  allow of a subscriber disabled more than a second before, a held session refused;
* 5xx, answers slower than 100 ms, p99;
* events lost: ``play_closed`` events the gateway acknowledged whose row is missing
  or still open in PostgreSQL afterwards.

Then ``check_sessions``' verdict on the whole run.  Exit status 0 when nothing was
wrong, no event was lost and no 5xx other than ``503`` was answered.

    python -m loadtests.chaos [--hang 10] [--down 5] [--viewers 16] [--base-port 9160]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import msgspec
import psutil

from benchmarks.auth_harness import dataset, infra
from catena import db, embedded, entitlements, ids
from catena.settings import BenchSettings
from catena.tokens import TokenCodec

from . import check_sessions
from .faults import Tally, Viewer, Viewers, revoke_now_and_then
from .run import AUTH_DURATION, start_gateways
from .viewing import Admitted

ROOT = Path(__file__).resolve().parent.parent
TOKEN_SECRETS = "chaos:" + "catena-chaos-secret-0123456789abcdef"
# Seconds of load before each fault and after it ends.
LEAD = 3.0
RECOVER = 7.0
SLOW = 0.1
# A phase's load ends with its recovery; this only bounds a fault that never ends.
PHASE_LIMIT = 300.0
VICTIMS_PER_PHASE = 2

Fault = Callable[[], Awaitable[None]]


@dataclass
class Row:
    phase: str
    tally: Tally
    started: float  # monotonic
    lost: int = 0

    def slow_by_second(self) -> dict[int, int]:
        """Answers slower than ``SLOW`` by the second of the phase they were sent in (faults start at 3)."""
        seconds: Counter[int] = Counter()
        for at, took in self.tally.latencies:
            if took > SLOW:
                seconds[int(at - took - self.started)] += 1
        return dict(sorted(seconds.items()))

    def cells(self) -> list[str]:
        seconds = [s for _, s in self.tally.latencies]
        fives = len(self.tally.unavailable) + len(self.tally.other_5xx)
        return [
            self.phase,
            f"{sum(self.tally.statuses.values()):,}",
            str(len(self.tally.wrong)),
            f"{fives:,}",
            f"{sum(s > SLOW for s in seconds):,}",
            f"{self.tally.percentile(0.99) * 1000:.0f} ms",
            str(self.lost),
        ]


HEADER = ["phase", "requests", "wrong", "5xx", "> 100 ms", "p99", "events lost"]


class Servers:
    """The run's private PostgreSQL and Redis, and how to hang, kill and restart them."""

    def __init__(self, backends: infra.Backends) -> None:
        pg, redis = backends.embedded
        assert isinstance(pg, embedded.EmbeddedPostgres) and isinstance(redis, embedded.EmbeddedRedis)
        self.pg, self.redis = pg, redis

    def redis_processes(self) -> list[psutil.Process]:
        pid = int(self.redis.pidfile.read_text().strip())
        return [psutil.Process(pid)]

    def pg_processes(self) -> list[psutil.Process]:
        pid = int((self.pg.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        postmaster = psutil.Process(pid)
        return [postmaster, *postmaster.children(recursive=True)]

    async def hang(self, processes: list[psutil.Process], seconds: float) -> None:
        for process in processes:
            process.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            for process in processes:
                try:
                    process.send_signal(signal.SIGCONT)
                except psutil.NoSuchProcess:
                    pass

    async def kill(self, processes: list[psutil.Process], down: float, restart: Callable[[], None]) -> None:
        for process in processes:
            process.send_signal(signal.SIGKILL)
        for process in processes:  # off the event loop: the viewers share it
            await asyncio.to_thread(_reap, process.pid)
        await asyncio.sleep(down)
        await asyncio.to_thread(_retry, restart)


def _reap(pid: int) -> None:
    """Wait for a killed server process (ours to reap once it daemonized: we are a subreaper)."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # not ours: whoever its parent is reaps it
        with contextlib.suppress(psutil.NoSuchProcess):
            while psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                time.sleep(0.05)


def _retry(start: Callable[[], None], attempts: int = 20) -> None:
    for attempt in range(attempts):
        try:
            start()
            return
        except (RuntimeError, OSError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)


def phases(servers: Servers, hang: float, down: float) -> list[tuple[str, Fault | None]]:
    return [
        ("baseline", None),
        (f"Redis hung {hang:g} s", lambda: servers.hang(servers.redis_processes(), hang)),
        (
            f"Redis killed, back after {down:g} s",
            lambda: servers.kill(servers.redis_processes(), down, servers.redis.recover),
        ),
        (f"PostgreSQL hung {hang:g} s", lambda: servers.hang(servers.pg_processes(), hang)),
        (
            f"PostgreSQL killed, back after {down:g} s",
            lambda: servers.kill(servers.pg_processes(), down, servers.pg.recover),
        ),
    ]


# ---------------------------------------------------------------- data and gateways


async def prepare(backends: infra.Backends, subscribers: int) -> tuple[int, list[Viewer], str]:
    """The run's database: one free channel every subscriber may watch, a limit of 1 by default."""
    await infra.create_database(backends)
    spec = dataset.Spec(
        subscribers=subscribers, channels=1, packages=2, tokens=subscribers, package_sizes=(1, 1)
    )
    conn = await db.connect(backends.database_url)
    try:
        portal_id = await dataset.create_portal(conn, "chaos-" + secrets.token_hex(3))
        data = dataset.generate(spec, portal_id, TokenCodec(TOKEN_SECRETS))
        await dataset.load(conn, data)
        settings = {"authDuration": AUTH_DURATION, "maxSessions": 1}
        await conn.execute("UPDATE portals SET settings = $2 WHERE id = $1", portal_id, settings)
    finally:
        await conn.close()
    viewers = [Viewer(s.id, ids.encode(s.id), s.token or "", s.max_sessions or 1) for s in data.holders()]
    return portal_id, viewers, data.channels[0][1]


async def until_healthy(urls: list[str], timeout: float = 60.0) -> bool:
    """Until every gateway says ``ok`` (Redis and PostgreSQL up, counts ready)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            states = []
            for url in urls:
                try:
                    async with session.get(url + "/health") as response:
                        states.append(msgspec.json.decode(await response.read()).get("status"))
                except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError):
                    states.append(None)
            if all(state == "ok" for state in states):
                return True
            await asyncio.sleep(0.2)
    return False


# ---------------------------------------------------------------- the run


class Run:
    def __init__(self, database_url: str, portal_id: int, urls: list[str], channel: str) -> None:
        self.database_url = database_url
        self.portal_id = portal_id
        self.urls = urls
        self.channel = channel

    async def disable(self, victim: Viewer) -> None:
        """Disable ``victim`` as the Management API does; retried while PostgreSQL is away."""
        while True:
            try:
                conn = await asyncpg.connect(self.database_url, timeout=2)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                await asyncio.sleep(0.2)
                continue
            try:
                async with conn.transaction():
                    await conn.execute("UPDATE subscribers SET disabled = true WHERE id = $1", victim.id)
                    await entitlements.changed(conn, self.portal_id, "subscriber", [victim.id])
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                await asyncio.sleep(0.2)
            finally:
                conn.terminate()

    async def phase(
        self, name: str, fault: Fault | None, watchers: list[Viewer], victims: list[Viewer]
    ) -> Row:
        """Load for ``LEAD`` seconds, the fault (until it ends), then ``RECOVER`` seconds more."""
        print(f"chaos: {time.strftime('%H:%M:%S')} {name}", flush=True)
        started = time.monotonic()
        viewers = Viewers(self.urls, watchers + victims, channel=self.channel)
        running = asyncio.create_task(viewers.run(PHASE_LIMIT))
        # The victims are disabled while the fault goes on (the first as it starts).
        revoking = asyncio.create_task(revoke_now_and_then(self.disable, viewers, victims, LEAD))
        await asyncio.sleep(LEAD)
        if fault is not None:
            await fault()
        await asyncio.sleep(RECOVER)
        viewers.stop()
        tally = await running
        await revoking  # a disable PostgreSQL held up ends before the next phase
        if not await until_healthy(self.urls):
            print(f"chaos: the gateways did not report ok after {name}", flush=True)
        return Row(name, tally, started)

    async def events_lost(self, rows: list[Row]) -> None:
        """Acknowledged closes whose rows are missing or open, per phase."""
        conn = await db.connect(self.database_url)
        try:
            found = await conn.fetch(
                "SELECT flussonic_id FROM play_sessions WHERE portal_id = $1 AND closed_at IS NOT NULL",
                self.portal_id,
            )
        finally:
            await conn.close()
        closed = {r["flussonic_id"] for r in found}
        for row in rows:
            row.lost = sum(session not in closed for session in row.tally.closed)

    async def verdict(self, rows: list[Row]) -> check_sessions.Findings:
        admitted = [Admitted(s, "") for row in rows for s in row.tally.admitted]
        conn = await db.connect(self.database_url)
        try:
            return await check_sessions.check(conn, self.portal_id, admitted)
        finally:
            await conn.close()


def table(rows: list[Row]) -> str:
    lines = [HEADER, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |" for line in lines]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


async def _load(args: argparse.Namespace, servers: Servers, run: Run, viewers: list[Viewer]) -> list[Row]:
    if not await until_healthy(run.urls):
        raise infra.ServerFailed("the gateways never reported ok")
    plan = phases(servers, args.hang, args.down)
    watchers = viewers[: args.viewers]
    spare = viewers[args.viewers :]
    rows = []
    for name, fault in plan:
        victims = [] if fault is None else [spare.pop() for _ in range(VICTIMS_PER_PHASE)]
        rows.append(await run.phase(name, fault, watchers, victims))
    return rows


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    embedded.become_subreaper()  # the servers daemonize: a killed one is reaped here at once
    workdir = Path(args.workdir).resolve() / time.strftime("%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True)
    backends = infra.start_backends(Path(args.workdir).resolve(), BenchSettings(bench_embedded=True))
    print(f"chaos: {backends.where} under {args.workdir}; logs in {workdir}", flush=True)
    gateways: list[infra.Server] = []
    try:
        servers = Servers(backends)
        total = args.viewers + VICTIMS_PER_PHASE * 4
        portal_id, viewers, channel = asyncio.run(prepare(backends, total))
        gateways = start_gateways(sys.executable, backends, TOKEN_SECRETS, workdir, args.base_port)
        run = Run(backends.database_url, portal_id, [f"http://127.0.0.1:{g.port}" for g in gateways], channel)
        rows = asyncio.run(_load(args, servers, run, viewers))
        codes = [g.stop() for g in gateways]
        gateways = []
        asyncio.run(run.events_lost(rows))
        findings = asyncio.run(run.verdict(rows))
    finally:
        for gateway in gateways:
            gateway.stop()
        infra.clean_up(backends)
    print(f"\nchaos: gateways exited with {codes} after SIGTERM; load average {os.getloadavg()}")
    print(table(rows))
    for row in rows:
        print(f"  {row.phase}: {dict(sorted(row.tally.statuses.items()))}")
        if row.slow_by_second():
            print(f"  {row.phase}: answers > 100 ms by second of the phase sent: {row.slow_by_second()}")
        for wrong in row.tally.wrong[:5]:
            print(f"  {row.phase}: {wrong}")
        if row.tally.failures:
            print(f"  {row.phase}: {len(row.tally.failures)} requests got no answer: {row.tally.failures[0]}")
    print(findings.summary())
    bad = any(row.tally.wrong or row.lost or row.tally.other_5xx or row.tally.failures for row in rows)
    sys.exit(1 if bad or not findings.ok else 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--hang", type=float, default=10.0, help="seconds a server stays SIGSTOPped")
    parser.add_argument("--down", type=float, default=5.0, help="seconds a killed server stays down")
    parser.add_argument("--viewers", type=int, default=16, help="subscribers watching, two devices each")
    parser.add_argument("--base-port", type=int, default=9160, help="gateways on base and base+1")
    parser.add_argument("--workdir", default="var/chaos")
    return parser


if __name__ == "__main__":
    main()

"""The side-by-side throughput harness behind ``make bench-auth``.

One run: make a fresh database with the data set, build the request pool, then for
each server in turn start it pinned to one core, check its answers (the naive
backend and authgate), warm it up, and measure it with wrk from the other core.
Prints requests/s, p50/p99 and the ratios to (b), (a) and (e).  See
``docs/bench-auth.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from catena import db
from catena.settings import SettingsError
from catena.tokens import TokenCodec

from . import dataset, infra, report, request_mix, targets, verify, wrk
from .targets import Setup, Target

# Every process of the run signs and verifies with this key (and only this one).
TOKEN_SECRETS = "bench:" + "catena-benchmark-secret-0123456789abcdef"


@dataclass
class Outcome:
    """What one server did in the run."""

    target: Target
    result: wrk.WrkResult | None = None
    check: verify.Check | None = None
    error: str | None = None
    load_average: float = 0.0
    notes: list[str] = field(default_factory=list)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    missing = [tool for tool in ("wrk", "taskset") if shutil.which(tool) is None]
    if "a" in args.only and targets.nginx_binary() is None:
        missing.append("nginx")
    if missing:
        sys.exit(f"bench-auth: {', '.join(missing)} not found; `make bench-auth` installs them")
    try:
        sys.exit(run(args))
    except SettingsError as exc:
        sys.exit(f"bench-auth: {exc}")


def run(args: argparse.Namespace) -> int:
    server_cpu, client_cpu = _cores(args.server_cpu, args.client_cpu)
    workdir = Path(args.workdir).resolve() / time.strftime("%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True)
    backends = infra.start_backends(Path(args.workdir).resolve())
    print(f"bench-auth: using {backends.where}; logs in {workdir}", flush=True)
    try:
        plan, portal_id = asyncio.run(_prepare(backends, args))
        pool = request_mix.write_pool(plan, workdir / "pool.bin")
        env = backends.service_env(TOKEN_SECRETS, workdir / "var")
        setup = Setup(workdir, args.base_port, server_cpu, env,
                      args.authgate_python, args.authgate_workers)
        if "d" in args.only:
            targets.migrate(args.authgate_python, env, workdir)
        load = wrk.Load(client_cpu, args.connections, args.threads, args.duration)
        outcomes = [_measure(targets.BY_KEY[k], setup, load, plan, pool, args, backends, portal_id)
                    for k in args.only]
    finally:
        infra.clean_up(backends, keep=args.keep)
    print(report.table(outcomes, load, server_cpu))
    (workdir / "results.json").write_bytes(msgspec.json.encode(report.as_json(outcomes)))
    failed = [o for o in outcomes if o.error or (o.check and o.check.total_wrong)]
    return 1 if failed else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench-auth", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="abecd", type=_keys,
                        help="which servers to measure, in order (default abecd)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per server")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of wrk before measuring")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (on the client core)")
    parser.add_argument("--pool", type=int, default=20_000, help="distinct requests wrk cycles")
    parser.add_argument("--subscribers", type=int, default=dataset.Spec().subscribers)
    parser.add_argument("--tokens", type=int, default=dataset.Spec().tokens)
    parser.add_argument("--server-cpu", type=int, default=None)
    parser.add_argument("--client-cpu", type=int, default=None)
    parser.add_argument("--base-port", type=int, default=8150,
                        help="servers listen on base..base+4 (default 8150)")
    parser.add_argument("--authgate-python", default=sys.executable,
                        help="the Python that runs `-m authgate` (another checkout's venv)")
    parser.add_argument("--authgate-workers", type=int, default=1)
    parser.add_argument("--workdir", default="var/bench", help="logs, pool file, results.json")
    parser.add_argument("--keep", action="store_true", help="keep the database and Redis keys")
    return parser


def _keys(value: str) -> str:
    unknown = set(value) - set(targets.BY_KEY)
    if unknown or not value:
        raise argparse.ArgumentTypeError(f"expected letters among abcde, got {value!r}")
    return value


def _cores(server: int | None, client: int | None) -> tuple[int | None, int | None]:
    """Two different cores for the server and wrk; none pinned on a one-core machine."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        print("bench-auth: only one core available; nothing is pinned", file=sys.stderr)
        return None, None
    server = cpus[1] if server is None else server
    client = next(c for c in cpus if c != server) if client is None else client
    return server, client


async def _prepare(
    backends: infra.Backends, args: argparse.Namespace
) -> tuple[request_mix.Plan, int]:
    """Create and fill the database; build the plan of requests."""
    started = time.monotonic()
    await infra.create_database(backends)
    spec = dataset.Spec(subscribers=args.subscribers, tokens=args.tokens)
    conn = await db.connect(backends.database_url)
    try:
        portal_id = await dataset.create_portal(conn, "bench-" + secrets.token_hex(3))
        data = dataset.generate(spec, portal_id, TokenCodec(TOKEN_SECRETS))
        await dataset.load(conn, data)
    finally:
        await conn.close()
    plan = request_mix.build(data, args.pool)
    print(f"bench-auth: data set of {spec.subscribers:,} subscribers, {spec.channels} channels, "
          f"{spec.packages} packages, {spec.tokens:,} tokens made in "
          f"{time.monotonic() - started:.1f} s; pool of {len(plan.pool):,} requests", flush=True)
    return plan, portal_id


def _measure(
    target: Target, setup: Setup, load: wrk.Load, plan: request_mix.Plan, pool: Path,
    args: argparse.Namespace, backends: infra.Backends, portal_id: int,
) -> Outcome:
    outcome = Outcome(target)
    print(f"bench-auth: ({target.key}) {target.label}: starting", flush=True)
    server = targets.server(target, setup)
    try:
        server.start()
        port = setup.port(target)
        if target.checks_answers:
            outcome.check = _check(target, port, plan)
        wrk.run(load, port, pool, args.warmup)
        outcome.load_average = os.getloadavg()[0]
        outcome.result = wrk.run(load, port, pool)
    except (infra.ServerFailed, RuntimeError, OSError) as exc:
        outcome.error = str(exc)
    finally:
        code = server.stop()
    if target.key == "d" and outcome.error is None:
        outcome.notes += asyncio.run(_recorded(backends, portal_id, plan, code))
    return outcome


def _check(target: Target, port: int, plan: request_mix.Plan) -> verify.Check:
    """Send the setup and the pool once; tally the answers against the expected ones."""
    expected = plan.setup + plan.pool
    if not target.counts_sessions:
        expected = [request_mix.uncounted(p) for p in expected]
    answers = asyncio.run(verify.send_all("127.0.0.1", port, [p.raw for p in plan.setup]))
    answers += asyncio.run(verify.send_all("127.0.0.1", port, [p.raw for p in plan.pool]))
    return verify.compare(expected, answers)


_RECORDED = """
SELECT count(*) AS rows, count(DISTINCT flussonic_id) AS sessions,
       count(*) FILTER (WHERE active) AS active
FROM play_sessions WHERE portal_id = $1
"""


async def _recorded(
    backends: infra.Backends, portal_id: int, plan: request_mix.Plan, exit_code: int | None
) -> list[str]:
    """What authgate wrote to play_sessions by the time SIGTERM's flush finished."""
    admitted = len(plan.setup) + sum(p.kind == "new_session" for p in plan.pool)
    conn = await db.connect(backends.database_url)
    try:
        row = await conn.fetchrow(_RECORDED, portal_id)
    finally:
        await conn.close()
    return [
        f"exit code after SIGTERM: {exit_code}",
        f"play_sessions: {row['rows']:,} rows, {row['sessions']:,} distinct sessions, "
        f"{row['active']:,} active; sessions admitted by the plan: {admitted:,}",
    ]

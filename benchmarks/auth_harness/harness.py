"""The side-by-side throughput harness behind ``make bench-auth``.

One run: make a fresh database with the data set and build the request pool; start
every server pinned to the same core; check the answers of the naive backend and
authgate; then, for a number of rounds, warm up and measure each server in turn
with wrk from the other core.  Interleaving the servers round by round spreads
whatever else the machine is doing over all of them.  Prints, per server, the
round with the median requests/s (p50, p99) and the ratios to (b), (a) and (e).
See ``docs/bench-auth.md``.
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

from . import dataset, gateway_stats, infra, report, request_mix, targets, verify, wrk
from .targets import Setup, Target

# Every process of the run signs and verifies with this key (and only this one).
TOKEN_SECRETS = "bench:" + "catena-benchmark-secret-0123456789abcdef"
# Sessions opened by the answer check must still count in the last round, however
# long the run: the gateway keeps an unrefreshed session this long past authDuration.
SESSION_GRACE = "3600"


@dataclass
class Outcome:
    """What one server did in the run: one wrk result per round."""

    target: Target
    rounds: list[tuple[wrk.WrkResult, float]] = field(default_factory=list)  # (result, load)
    check: verify.Check | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    # The gateway's Redis commands per 1,000 checks, per measured round.
    commands: list[float] = field(default_factory=list)

    @property
    def median(self) -> tuple[wrk.WrkResult, float] | None:
        """The round with the median requests/s (the lower one of an even count)."""
        if not self.rounds:
            return None
        ordered = sorted(self.rounds, key=lambda r: r[0].rate)
        return ordered[(len(ordered) - 1) // 2]


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
    load = wrk.Load(client_cpu, args.connections, args.threads, args.duration)
    try:
        plan, portal_id = asyncio.run(_prepare(backends, args))
        env = backends.service_env(TOKEN_SECRETS, workdir / "var")
        env["CATENA_AUTH_SESSION_GRACE"] = SESSION_GRACE
        env["CATENA_AUTH_REDIS_TIMEOUT"] = str(args.redis_timeout)
        cluster_env = None
        if set(targets.ON_CLUSTER) & set(args.only):
            infra.start_cluster(backends, workdir, args.cluster_primaries, args.cluster_replicas)
            cluster_env = backends.service_env(TOKEN_SECRETS, workdir / "var", cluster=True)
            cluster_env["CATENA_AUTH_SESSION_GRACE"] = SESSION_GRACE
            cluster_env["CATENA_AUTH_REDIS_TIMEOUT"] = str(args.redis_timeout)
        if set(targets.GATEWAYS) & set(args.only):
            targets.migrate(args.authgate_python, env, workdir)
        setup = Setup(
            workdir, args.base_port, server_cpu, env, args.authgate_python, args.authgate_workers, cluster_env
        )
        bench = Bench(setup, load, plan, request_mix.write_pool(plan, workdir / "pool.bin"), args)
        outcomes = bench.run(args.only)
        if "d" in args.only and not bench.outcomes["d"].error:
            bench.outcomes["d"].notes += asyncio.run(_recorded(backends, portal_id, plan))
        outcomes_notes(bench.outcomes)
    finally:
        infra.clean_up(backends, keep=args.keep)
    print(report.table(outcomes, load, server_cpu))
    (workdir / "results.json").write_bytes(msgspec.json.encode(report.as_json(outcomes)))
    failed = [o for o in outcomes if o.error or (o.check and o.check.total_wrong)]
    return 1 if failed else 0


class Bench:
    """Starts the servers, checks their answers, measures them round by round."""

    def __init__(
        self, setup: Setup, load: wrk.Load, plan: request_mix.Plan, pool: Path, args: argparse.Namespace
    ) -> None:
        self.setup, self.load, self.plan, self.pool = setup, load, plan, pool
        self.rounds, self.warmup = args.rounds, args.warmup
        self.outcomes: dict[str, Outcome] = {}
        self.servers: dict[str, infra.Server] = {}

    def run(self, keys: str) -> list[Outcome]:
        self.outcomes = {k: Outcome(targets.BY_KEY[k]) for k in keys}
        try:
            for outcome in self.outcomes.values():
                self._start(outcome)
            for number in range(1, self.rounds + 1):
                print(f"bench-auth: round {number} of {self.rounds}", flush=True)
                for outcome in self._live():
                    self._measure(outcome)
        finally:
            for key, server in self.servers.items():
                code = server.stop()
                if key in targets.GATEWAYS:  # the only ones with state to flush on SIGTERM
                    self.outcomes[key].notes.append(f"exit code after SIGTERM: {code}")
        return list(self.outcomes.values())

    def _live(self) -> list[Outcome]:
        return [o for o in self.outcomes.values() if o.error is None]

    def _start(self, outcome: Outcome) -> None:
        target = outcome.target
        print(f"bench-auth: ({target.key}) {target.label}: starting", flush=True)
        server = targets.server(target, self.setup)
        try:
            server.start()
            self.servers[target.key] = server
            if target.key in targets.GATEWAYS:
                gateway_stats.wait_redis_ready(self.setup.port(target))
            if target.checks_answers:
                outcome.check = _check(target, self.setup.port(target), self.plan)
        except (infra.ServerFailed, OSError) as exc:
            outcome.error = str(exc)

    def _measure(self, outcome: Outcome) -> None:
        port = self.setup.port(outcome.target)
        gateway = outcome.target.key in targets.GATEWAYS
        try:
            wrk.run(self.load, port, self.pool, self.warmup)
            load_average = os.getloadavg()[0]
            before = gateway_stats.counters(port) if gateway else (0, 0)
            outcome.rounds.append((wrk.run(self.load, port, self.pool), load_average))
            if gateway:
                outcome.commands.append(gateway_stats.per_thousand(before, gateway_stats.counters(port)))
        except (RuntimeError, OSError) as exc:
            outcome.error = str(exc)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench-auth", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default="abecdf", type=_keys, help="which servers to measure, in order (default abecdf)"
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds measured per server and round (default 10)"
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of wrk before each measurement (default 2)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="measurements per server, interleaved; the median is shown (3)"
    )
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (on the client core)")
    parser.add_argument("--pool", type=int, default=20_000, help="distinct requests wrk cycles")
    parser.add_argument("--subscribers", type=int, default=dataset.Spec().subscribers)
    parser.add_argument("--tokens", type=int, default=dataset.Spec().tokens)
    parser.add_argument("--server-cpu", type=int, default=None)
    parser.add_argument("--client-cpu", type=int, default=None)
    parser.add_argument(
        "--base-port", type=int, default=8150, help="servers listen on base..base+4 (default 8150)"
    )
    parser.add_argument(
        "--authgate-python",
        default=sys.executable,
        help="the Python that runs `-m authgate` (another checkout's venv)",
    )
    parser.add_argument("--authgate-workers", type=int, default=1)
    parser.add_argument(
        "--redis-timeout",
        type=float,
        default=0.05,
        help="the gateways' CATENA_AUTH_REDIS_TIMEOUT (default 0.05, the production default; "
        "raise it on a machine whose Redis others load, or the gateway keeps finding Redis too slow)",
    )
    parser.add_argument(
        "--cluster-primaries", type=int, default=3, help="primaries of the Redis Cluster of (f) (default 3)"
    )
    parser.add_argument(
        "--cluster-replicas", type=int, default=0, help="replicas per primary of (f)'s cluster (default 0)"
    )
    parser.add_argument("--workdir", default="var/bench", help="logs, pool file, results.json")
    parser.add_argument("--keep", action="store_true", help="keep the database and Redis keys")
    return parser


def _keys(value: str) -> str:
    unknown = set(value) - set(targets.BY_KEY)
    if unknown or not value:
        raise argparse.ArgumentTypeError(f"expected letters among abcdefg, got {value!r}")
    return value


def outcomes_notes(outcomes: dict[str, Outcome]) -> None:
    """Redis commands per 1,000 checks of each gateway, and the cluster/single ratio."""
    for key in targets.GATEWAYS:
        outcome = outcomes.get(key)
        if outcome is not None and outcome.commands:
            shown = ", ".join(f"{c:,.1f}" for c in outcome.commands)
            outcome.notes.append(f"Redis commands per 1,000 checks by round: {shown}")
    single = outcomes.get("d")
    for key in targets.ON_CLUSTER:
        cluster = outcomes.get(key)
        if single and cluster and single.median and cluster.median and single.median[0].rate:
            ratio = cluster.median[0].rate / single.median[0].rate
            cluster.notes.append(f"cluster/single ratio (median req/s of ({key}) / (d)): {ratio:.2f}")


def _cores(server: int | None, client: int | None) -> tuple[int | None, int | None]:
    """Two different cores for the server and wrk; none pinned on a one-core machine."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        print("bench-auth: only one core available; nothing is pinned", file=sys.stderr)
        return None, None
    server = cpus[1] if server is None else server
    client = next(c for c in cpus if c != server) if client is None else client
    return server, client


async def _prepare(backends: infra.Backends, args: argparse.Namespace) -> tuple[request_mix.Plan, int]:
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
    print(
        f"bench-auth: data set of {spec.subscribers:,} subscribers, {spec.channels} channels, "
        f"{spec.packages} packages, {spec.tokens:,} tokens made in "
        f"{time.monotonic() - started:.1f} s; pool of {len(plan.pool):,} requests",
        flush=True,
    )
    return plan, portal_id


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


async def _recorded(backends: infra.Backends, portal_id: int, plan: request_mix.Plan) -> list[str]:
    """What authgate wrote to play_sessions by the time SIGTERM's flush finished."""
    admitted = len(plan.setup) + sum(p.kind == "new_session" for p in plan.pool)
    conn = await db.connect(backends.database_url)
    try:
        row = await conn.fetchrow(_RECORDED, portal_id)
    finally:
        await conn.close()
    return [
        f"play_sessions: {row['rows']:,} rows, {row['sessions']:,} distinct sessions, "
        f"{row['active']:,} active; sessions admitted by the plan: {admitted:,}",
    ]

"""``make loadtest``: viewers zapping through two gateway processes, then a check.

Makes a fresh database with a small data set (``benchmarks.auth_harness.dataset``),
shortens the portal's ``authDuration`` so that abandoned sessions expire during
the run, starts two ``authgate`` processes on two ports, runs the locust scenario
headless, stops the gateways (SIGTERM flushes their batches), and checks
``play_sessions`` with ``check_sessions``.  Exit status 0 only when no subscriber
ever held more sessions than allowed, every admitted session was recorded, and
locust saw no failure.

``--hosts 2`` runs two hosts' worth of services instead (a gateway, an admin API
and an EPG worker on each of 127.0.0.2 and 127.0.0.3) on a Redis Cluster started
for the run, and checks revocations and EPG jobs as well (:mod:`loadtests.many_hosts`).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from benchmarks.auth_harness import dataset, infra, targets
from catena import db, ids
from catena.settings import SettingsError
from catena.tokens import TokenCodec

from . import check_sessions, many_hosts
from .viewing import Profile, Tally, read_tally

ROOT = Path(__file__).resolve().parent.parent
TOKEN_SECRETS = "load:" + "catena-loadtest-secret-0123456789abcdef"
SPEC = dataset.Spec(subscribers=2_000, channels=60, packages=8, tokens=400)
# Short enough that an abandoned session stops counting within the run.
AUTH_DURATION = 10
SESSION_GRACE = 5


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        sys.exit(run(args))
    except SettingsError as exc:
        sys.exit(f"loadtest: {exc}")
    except infra.ServerFailed as exc:
        sys.exit(f"loadtest: {exc}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loadtest", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=300, help="devices (locust users)")
    parser.add_argument("--spawn-rate", type=float, default=50.0)
    parser.add_argument("--duration", type=int, default=60, help="seconds of load")
    parser.add_argument(
        "--subscribers",
        type=int,
        default=150,
        help="subscribers the devices belong to (fewer = more limit pressure)",
    )
    parser.add_argument(
        "--base-port",
        type=int,
        default=8140,
        help="gateways on base and base+1 (--hosts 2: gateway, admin API, EPG worker on base, +2, +3)",
    )
    parser.add_argument(
        "--hosts",
        type=int,
        choices=(1, 2),
        default=1,
        help="1: two gateways on 127.0.0.1; 2: every service on 127.0.0.2 and 127.0.0.3 on a Redis Cluster",
    )
    parser.add_argument(
        "--revocations", type=int, default=5, help="--hosts 2: subscribers revoked during the run"
    )
    parser.add_argument(
        "--gateway-python",
        default=sys.executable,
        help="the Python that runs `-m authgate` (another checkout's venv)",
    )
    parser.add_argument("--workdir", default="var/loadtest")
    parser.add_argument("--keep", action="store_true", help="keep the database and Redis keys")
    return parser


def run(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir).resolve() / time.strftime("%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True)
    backends = infra.start_backends(Path(args.workdir).resolve())
    print(f"loadtest: using {backends.where}; logs in {workdir}", flush=True)
    if args.hosts == 2:
        return _run_hosts(args, backends, workdir)
    try:
        portal_id, _ = asyncio.run(_prepare(backends, workdir / "viewers.json", args.subscribers))
        gateways = _gateways(args, backends, workdir)
        try:
            locust_code = _locust(args, gateways, workdir)
        finally:
            codes = [g.stop() for g in gateways]
        print(f"loadtest: gateways exited with {codes} after SIGTERM", flush=True)
        tally_file = workdir / "tally.json"
        tally = read_tally(tally_file) if tally_file.exists() else None
        print(new_session_summary(tally), flush=True)
        findings = asyncio.run(_check(backends, portal_id, tally))
    finally:
        infra.clean_up(backends, keep=args.keep)
    print(findings.summary())
    return 0 if findings.ok and locust_code == 0 else 1


def _run_hosts(args: argparse.Namespace, backends: infra.Backends, workdir: Path) -> int:
    """``--hosts 2``: the services of two hosts on a Redis Cluster, with the extra checks."""
    try:
        infra.start_cluster(backends, workdir, primaries=3, replicas=1)
        print(f"loadtest: Redis Cluster {backends.cluster.url if backends.cluster else ''}", flush=True)
        portal_id, data = asyncio.run(_prepare(backends, workdir / "viewers.json", args.subscribers))
        targets.migrate(args.gateway_python, backends.service_env(TOKEN_SECRETS, workdir), workdir)

        def env_for(directory: Path) -> dict[str, str]:
            env = backends.service_env(TOKEN_SECRETS, directory, cluster=True)
            env["CATENA_AUTH_SESSION_GRACE"] = str(SESSION_GRACE)
            return env

        hosts = many_hosts.start_hosts(args.gateway_python, env_for, args.base_port, workdir)
        try:
            locust = _start_locust(args, [h.gateway_url for h in hosts], workdir)
            checks = many_hosts.probes(data, args.subscribers, args.revocations)
            findings = asyncio.run(
                many_hosts.watch(hosts, backends.database_url, portal_id, checks, args.duration * 0.8)
            )
            locust_code = locust.wait(timeout=args.duration + 120)
            asyncio.run(many_hosts.settle_and_count(backends.database_url, portal_id, findings))
        finally:
            codes = many_hosts.stop_hosts(hosts)
        print(f"loadtest: services exited with {codes} after SIGTERM", flush=True)
        tally_file = workdir / "tally.json"
        tally = read_tally(tally_file) if tally_file.exists() else None
        print(new_session_summary(tally), flush=True)
        asyncio.run(many_hosts.count_rows(backends.database_url, portal_id, findings))
        limits = asyncio.run(_check(backends, portal_id, tally))
    finally:
        infra.clean_up(backends, keep=args.keep)
    print(limits.summary())
    print(findings.summary())
    ok = limits.ok and findings.ok and locust_code == 0 and all(code == 0 for code in codes)
    print("many hosts: OK" if ok else "many hosts: FAILED")
    return 0 if ok else 1


async def _prepare(backends: infra.Backends, viewers: Path, how_many: int) -> tuple[int, dataset.DataSet]:
    """Database, data set, a short authDuration, and the profiles locust plays."""
    await infra.create_database(backends)
    conn = await db.connect(backends.database_url)
    try:
        portal_id = await dataset.create_portal(conn, "load-" + secrets.token_hex(3))
        data = dataset.generate(SPEC, portal_id, TokenCodec(TOKEN_SECRETS))
        await dataset.load(conn, data)
        await conn.execute(
            "UPDATE portals SET settings = $2 WHERE id = $1", portal_id, {"authDuration": AUTH_DURATION}
        )
    finally:
        await conn.close()
    viewers.write_bytes(msgspec.json.encode(profiles(data, how_many)))
    return portal_id, data


def profiles(data: dataset.DataSet, how_many: int) -> list[Profile]:
    """Token holders for locust to play, single-screen ones first (they meet the limit)."""
    holders = sorted(data.holders(), key=lambda s: (s.max_sessions != 1, s.index))[:how_many]
    names = [name for _, name in data.channels]
    return [
        Profile(
            ids.encode(s.id), s.token or "", s.max_sessions or 2, [names[i] for i in sorted(data.entitled(s))]
        )
        for s in holders
    ]


def _gateways(args: argparse.Namespace, backends: infra.Backends, workdir: Path) -> list[infra.Server]:
    targets.migrate(args.gateway_python, backends.service_env(TOKEN_SECRETS, workdir), workdir)
    return start_gateways(args.gateway_python, backends, TOKEN_SECRETS, workdir, args.base_port)


def start_gateways(
    python: str, backends: infra.Backends, token_secrets: str, workdir: Path, base_port: int
) -> list[infra.Server]:
    """Two gateway processes of one worker each, on ``base_port`` and the port after it."""
    started: list[infra.Server] = []
    try:
        for n in range(2):
            env = backends.service_env(token_secrets, workdir / f"var{n}")
            env["CATENA_AUTH_SESSION_GRACE"] = str(SESSION_GRACE)
            log = workdir / f"gateway{n}.log"
            server = targets.authgate(python, base_port + n, 1, env, log)
            started.append(server)
            server.start()
    except infra.ServerFailed:
        for server in started:
            server.stop()
        raise
    return started


def _locust(args: argparse.Namespace, gateways: list[infra.Server], workdir: Path) -> int:
    urls = [f"http://127.0.0.1:{g.port}" for g in gateways]
    return _start_locust(args, urls, workdir).wait(timeout=args.duration + 120)


def _start_locust(args: argparse.Namespace, urls: list[str], workdir: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(ROOT / "loadtests" / "locustfile.py"),
        "--headless",
        "-u",
        str(args.users),
        "-r",
        str(args.spawn_rate),
        "-t",
        f"{args.duration}s",
        "--stop-timeout",
        "5",
        "--host",
        urls[0],
        "--gateways",
        ",".join(urls),
        "--viewers",
        str(workdir / "viewers.json"),
        "--tally",
        str(workdir / "tally.json"),
        "--only-summary",
        "--csv",
        str(workdir / "locust"),
    ]
    print(
        f"loadtest: {args.users} devices of {args.subscribers} subscribers for "
        f"{args.duration} s through {', '.join(urls)}",
        flush=True,
    )
    return subprocess.Popen(command, cwd=ROOT)


def new_session_summary(tally: Tally | None) -> str:
    """How the run's new_session requests were answered."""
    if tally is None:
        return "loadtest: locust wrote no tally"
    return (
        f"loadtest: new_session asked {tally.asked:,}: admitted {len(tally.admitted):,}, "
        f"denied with session_limit {tally.session_limit:,}, failed {tally.failed:,}"
    )


async def _check(backends: infra.Backends, portal_id: int, tally: Tally | None) -> check_sessions.Findings:
    conn = await db.connect(backends.database_url)
    try:
        return await check_sessions.check(conn, portal_id, tally.admitted if tally else None)
    finally:
        await conn.close()


if __name__ == "__main__":
    main()

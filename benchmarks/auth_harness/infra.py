"""PostgreSQL, Redis and server processes for the harness and the load test.

The machine's servers are used when they answer (``CATENA_BENCH_DATABASE_URL``,
``CATENA_BENCH_REDIS_URL``, by default the local ones, Redis database 9), else — or
always with ``CATENA_BENCH_EMBEDDED=1`` — private ones from :mod:`catena.embedded`.  Each run
gets a database and a Redis key prefix of its own and removes them at the end.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import redis

from catena import db, ids, testing
from catena.embedded import EmbeddedPostgres, EmbeddedRedis, LocalCluster, free_cluster_ports
from catena.settings import BenchSettings, load


class ServerFailed(RuntimeError):
    """A server under test exited or never answered."""


@dataclass
class Backends:
    """Where the run's database and Redis keys live, and what to stop at the end."""

    server_url: str
    redis_url: str
    database: str = field(default_factory=lambda: "catena_bench_" + secrets.token_hex(5))
    redis_prefix: str = field(default_factory=lambda: "catena-bench-" + secrets.token_hex(4))
    embedded: list[EmbeddedPostgres | EmbeddedRedis] = field(default_factory=list)
    # A Redis Cluster the run started (a cluster target, --hosts 2); stopped at the end.
    cluster: LocalCluster | None = None

    @property
    def database_url(self) -> str:
        return testing.replace_database(self.server_url, self.database)

    def service_env(self, token_secrets: str, var_dir: Path, cluster: bool = False) -> dict[str, str]:
        """``CATENA_*`` variables that point a service at the run's database and keys
        (``cluster``: at the run's Redis Cluster instead of its single Redis)."""
        env = {
            "CATENA_DATABASE_URL": self.database_url,
            "CATENA_REDIS_URL": self.redis_url,
            "CATENA_REDIS_PREFIX": self.redis_prefix,
            "CATENA_TOKEN_SECRETS": token_secrets,
            "CATENA_LOG_LEVEL": "warning",
            "CATENA_VAR_DIR": str(var_dir),
            "CATENA_AUTH_SPOOL_DIR": str(var_dir / "spool"),
        }
        if cluster and self.cluster is not None:
            # Only then: a gateway of an older checkout (--authgate-python) knows no mode.
            env.update(CATENA_REDIS_MODE="cluster", CATENA_REDIS_URL=self.cluster.url)
        return env

    @property
    def where(self) -> str:
        kind = "embedded" if self.embedded else "the machine's"
        return f"{kind} PostgreSQL ({self.database}) and Redis (prefix {self.redis_prefix})"


def start_backends(var_dir: Path, settings: BenchSettings | None = None) -> Backends:
    """The machine's PostgreSQL and Redis when they answer, embedded ones otherwise."""
    settings = settings or load(BenchSettings)
    forced, pg_url, redis_url = (
        settings.bench_embedded,
        settings.bench_database_url,
        settings.bench_redis_url,
    )
    started: list[EmbeddedPostgres | EmbeddedRedis] = []
    if forced or not asyncio.run(_postgres_answers(pg_url)):
        server = EmbeddedPostgres(var_dir / "pg")
        pg_url = server.start()
        started.append(server)
    if forced or not _redis_answers(redis_url):
        embedded = EmbeddedRedis(var_dir / "redis")
        redis_url = embedded.start()
        started.append(embedded)
    return Backends(pg_url, redis_url, embedded=started)


def start_cluster(backends: Backends, var_dir: Path, primaries: int = 3, replicas: int = 0) -> LocalCluster:
    """A private Redis Cluster for the run (loopback ports found free), kept in ``backends``."""
    count = primaries * (1 + replicas)
    cluster = LocalCluster(var_dir / "redis-cluster", 0, primaries, replicas, ports=free_cluster_ports(count))
    try:
        cluster.start()
    except Exception:
        cluster.stop()
        raise
    backends.cluster = cluster
    return cluster


async def _postgres_answers(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return False
    await conn.close()
    return True


def _redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


async def create_database(backends: Backends) -> None:
    """Create the run's database, apply the migrations and claim an id node."""
    await testing.create_database(backends.server_url, backends.database, migrate=True)
    conn = await db.connect(backends.database_url)
    try:
        await ids.claim_node(conn)
    finally:
        await conn.close()


def clean_up(backends: Backends, keep: bool = False) -> None:
    """Drop the run's database and Redis keys (unless ``keep``); stop embedded servers."""
    if not keep:
        asyncio.run(testing.drop_database(backends.server_url, backends.database))
        client = redis.Redis.from_url(backends.redis_url)
        try:
            keys = list(client.scan_iter(match=backends.redis_prefix + ":*", count=1000))
            for start in range(0, len(keys), 1000):
                client.unlink(*keys[start : start + 1000])
        finally:
            client.close()
    for server in reversed(backends.embedded):
        server.stop()
    if backends.cluster is not None:
        backends.cluster.stop()


class Server:
    """A server process pinned to ``cpu``, in its own process group, logging to a file."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        log: Path,
        *,
        cpu: int | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.name, self.argv, self.port, self.log = name, argv, port, log
        self.cpu, self.env, self.cwd, self.host = cpu, env, cwd, host
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start the process and wait until its port answers HTTP."""
        pin = ["taskset", "-c", str(self.cpu)] if self.cpu is not None else []
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*pin, *self.argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(self.env or {})},
                cwd=self.cwd,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not answers_http(self.host, self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ServerFailed(f"{self.name} did not start; its log ends:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``timeout``; return the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait()
        _signal_group(self.process.pid, signal.SIGKILL)  # stragglers of the group
        code, self.process = self.process.returncode, None
        return code

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def answers_http(host: str, port: int) -> bool:
    """Whether something on ``host:port`` answers a ``GET /health`` with an HTTP status line."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            return sock.recv(16).startswith(b"HTTP/1.")
    except OSError:
        return False

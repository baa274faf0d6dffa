"""Fixtures for the gateway: data made with SQL, real gateway processes, private servers.

Changes go through SQL in a transaction plus ``entitlements.changed`` — exactly what
the Management API handlers do — so these tests depend on no admin endpoint.
Gateways are real ``python -m authgate`` processes on free ports, against the test
run's PostgreSQL database and Redis prefix (or private servers the test starts).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
import psutil
import pytest

from catena import entitlements, ids
from catena.redis import MODES
from catena.testing import free_port
from catena.tokens import TokenCodec
from tests.redis_servers import PrivateRedis, RedisBackend

__all__ = ["MODES", "PrivateRedis", "RedisBackend"]

ROOT = Path(__file__).resolve().parents[2]
SECRETS = "t1:test-secret-for-the-gateway-0123456789"
CODEC = TokenCodec(SECRETS)


# ---------------------------------------------------------------- data


@pytest.fixture
async def pool(session_pool: asyncpg.Pool) -> asyncpg.Pool:
    """The suite's emptied test database, retried: gateways of the module keep writing
    session batches while it is emptied, and the two can deadlock."""
    from tests.conftest import truncate_all

    for attempt in range(10):
        try:
            await truncate_all(session_pool)
            break
        except asyncpg.DeadlockDetectedError:
            await asyncio.sleep(0.05 * (attempt + 1))
    return session_pool


@dataclass
class Sub:
    id: int
    portal_id: int
    token: str
    text_id: str


@dataclass
class Portal:
    id: int
    text_id: str
    channels: dict[str, int] = field(default_factory=dict)
    packages: dict[str, int] = field(default_factory=dict)


class World:
    """Portals, channels, packages and subscribers made with SQL, changes signalled."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def portal(self, **settings: Any) -> Portal:
        portal_id = ids.new_id()
        name = f"p{portal_id}"
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO portals (id, name, domain, api_key, settings) VALUES ($1, $2, $3, $4, $5)",
                portal_id,
                name,
                f"{name}.example.com",
                secrets.token_urlsafe(16),
                settings,
            )
            await entitlements.changed(conn, portal_id, "portal")
        return Portal(portal_id, ids.encode(portal_id))

    async def channel(self, portal: Portal, name: str, packages: Sequence[str] = ()) -> int:
        channel_id = ids.new_id()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO channels (id, portal_id, name, title) VALUES ($1, $2, $3, $3)",
                channel_id,
                portal.id,
                name,
            )
            await entitlements.changed(conn, portal.id, "channel", [channel_id])
        portal.channels[name] = channel_id
        for package in packages:
            await self.link(portal, name, package)
        return channel_id

    async def package(self, portal: Portal, name: str, free: bool = False) -> int:
        package_id = ids.new_id()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO packages (id, portal_id, name) VALUES ($1, $2, $3)", package_id, portal.id, name
            )
            await entitlements.changed(conn, portal.id, "package", [package_id])
        portal.packages[name] = package_id
        if free:
            await self.change(
                portal,
                "portal",
                [],
                "INSERT INTO portal_free_packages (portal_id, package_id) VALUES ($1, $2)",
                portal.id,
                package_id,
            )
        return package_id

    async def link(self, portal: Portal, channel: str, package: str) -> None:
        await self.change(
            portal,
            "package",
            [portal.packages[package]],
            "INSERT INTO channel_packages (package_id, channel_id, portal_id) VALUES ($1, $2, $3)",
            portal.packages[package],
            portal.channels[channel],
            portal.id,
        )

    async def subscriber(
        self,
        portal: Portal,
        packages: Sequence[str] = (),
        max_sessions: int | None = None,
        disabled: bool = False,
    ) -> Sub:
        subscriber_id = ids.new_id()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO subscribers (id, portal_id, name, phone_country_code, phone, max_sessions,"
                " disabled) VALUES ($1, $2, 'viewer', '7', $3, $4, $5)",
                subscriber_id,
                portal.id,
                str(subscriber_id),
                max_sessions,
                disabled,
            )
            for package in packages:
                await conn.execute(
                    "INSERT INTO subscriptions (subscriber_id, package_id, portal_id) VALUES ($1, $2, $3)",
                    subscriber_id,
                    portal.packages[package],
                    portal.id,
                )
            await entitlements.changed(conn, portal.id, "subscriber", [subscriber_id])
        token = CODEC.sign(subscriber_id, portal.id, 1)
        return Sub(subscriber_id, portal.id, token, ids.encode(subscriber_id))

    async def change(self, portal: Portal, kind: Any, changed: Sequence[int], sql: str, *args: Any) -> None:
        """Run ``sql`` and signal the change in one transaction, as an admin handler would."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(sql, *args)
            await entitlements.changed(conn, portal.id, kind, changed)

    async def settings(self, portal: Portal, **settings: Any) -> None:
        await self.change(
            portal,
            "portal",
            [],
            "UPDATE portals SET settings = settings || $2 WHERE id = $1",
            portal.id,
            settings,
        )

    async def reset_token(self, sub: Sub) -> None:
        await self.change(
            Portal(sub.portal_id, ""),
            "subscriber",
            [sub.id],
            "UPDATE subscribers SET token_version = token_version + 1 WHERE id = $1",
            sub.id,
        )
        sub.token = CODEC.sign(sub.id, sub.portal_id, 2)


@pytest.fixture
def world(pool: asyncpg.Pool) -> World:
    return World(pool)


# ---------------------------------------------------------------- gateways


class Answer:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self) -> Any:
        return msgspec.json.decode(self.body) if self.body else None

    @property
    def reason(self) -> str | None:
        data = self.json
        return data.get("error") if isinstance(data, dict) else None

    def __repr__(self) -> str:
        return f"<Answer {self.status} {self.body[:200]!r}>"


class Gateway:
    """A gateway process started by a test."""

    def __init__(self, env: dict[str, str], workers: int, log_path: Path) -> None:
        self.port = int(env["CATENA_AUTH_PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.workers = workers
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "authgate", "--workers", str(self.workers)],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def ready(self, timeout: float = 30.0) -> None:
        """Until the gateway answers, and has finished rebuilding Redis's counts if it had to."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.log()
            with contextlib.suppress(aiohttp.ClientError, OSError):
                status, _, body = await self.request("GET", "/health")
                if status in (200, 503) and msgspec.json.decode(body).get("redis") != "rebuilding":
                    return
            await asyncio.sleep(0.1)
        raise AssertionError(f"gateway did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    async def http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self._session

    async def stop_session(self) -> None:
        """Drop the keep-alive connection: the next request opens a new one."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any, bytes]:
        session = await self.http()
        async with session.request(method, self.url + path, **kwargs) as response:
            return response.status, response.headers, await response.read()

    async def auth(
        self,
        sub: Sub | None = None,
        name: str = "sport",
        session: str | None = None,
        request_type: str = "new_session",
        **params: Any,
    ) -> Answer:
        query: dict[str, Any] = {
            "name": name,
            "proto": "hls",
            "ip": "10.0.0.1",
            "request_type": request_type,
            "request_number": 1,
            "session_id": session or secrets.token_hex(8),
            "stream_clients": 1,
            "total_clients": 1,
        }
        if sub is not None:
            query["token"] = sub.token
        query.update(params)
        query = {k: v for k, v in query.items() if v is not None}
        status, headers, body = await self.request("GET", "/auth", params=query)
        return Answer(status, headers, body)

    async def events(self, payload: Any) -> Answer:
        status, headers, body = await self.request("POST", "/events", data=msgspec.json.encode(payload))
        return Answer(status, headers, body)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self._session is not None:
            await self._session.close()
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(sig)
        try:
            return await asyncio.to_thread(self.process.wait, timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"gateway did not stop on {sig}:\n{self.log()}") from None


@dataclass
class Launcher:
    database_url: str
    backend: RedisBackend  # or a single server's URL
    redis_prefix: str
    tmp: Path
    started: list[Gateway] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.backend, str):
            self.backend = RedisBackend.single(self.backend)

    @property
    def mode(self) -> str:
        return self.backend.mode

    def using(self, backend: RedisBackend) -> Launcher:
        """A launcher of gateways on another Redis (stopped with this one's)."""
        return Launcher(self.database_url, backend, self.redis_prefix, self.tmp, self.started)

    def env(self, **overrides: Any) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CATENA_")}
        if "redis_url" in overrides:  # a private server of the test's own
            env.update(RedisBackend.single(str(overrides.pop("redis_url"))).env)
        else:
            env.update(self.backend.env)
        env.update(
            {
                "CATENA_DATABASE_URL": self.database_url,
                "CATENA_REDIS_PREFIX": self.redis_prefix,
                "CATENA_TOKEN_SECRETS": SECRETS,
                "CATENA_VAR_DIR": str(self.tmp),
                "CATENA_AUTH_PORT": str(free_port()),
                "CATENA_AUTH_FLUSH_INTERVAL": "0.2",
                "CATENA_AUTH_PROGRESS_INTERVAL": "0",
                # The machine is shared and busy; a test that hangs Redis on purpose
                # sets the production deadline (50 ms) itself.
                "CATENA_AUTH_REDIS_TIMEOUT": "0.5",
                "CATENA_LOG_LEVEL": "info",
            }
        )
        env.update({f"CATENA_{k.upper()}": str(v) for k, v in overrides.items()})
        return env

    async def start(self, workers: int = 1, **overrides: Any) -> Gateway:
        env = self.env(**overrides)
        gateway = Gateway(env, workers, self.tmp / f"authgate-{env['CATENA_AUTH_PORT']}.log")
        gateway.start()
        self.started.append(gateway)
        await gateway.ready()
        return gateway

    async def stop_all(self) -> None:
        for gateway in self.started:
            await gateway.stop()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Modules that set ``REDIS_MODES`` run their gateways in each of those Redis modes."""
    if "redis_backend" in metafunc.fixturenames:
        modes = getattr(metafunc.module, "REDIS_MODES", ("single",))
        metafunc.parametrize("redis_backend", modes, indirect=True, scope="module")


@pytest.fixture(scope="module")
def redis_backend(request: pytest.FixtureRequest, redis_url: str) -> RedisBackend:
    """The Redis the module's gateways use: the run's server, cluster or sentinel group."""
    mode = getattr(request, "param", "single")
    if mode == "cluster":
        return RedisBackend.cluster(request.getfixturevalue("redis_cluster"))
    if mode == "sentinel":
        return RedisBackend.sentinel(request.getfixturevalue("redis_sentinel"))
    return RedisBackend.single(redis_url)


@pytest.fixture(scope="module")
async def launcher(
    database_url: str,
    redis_backend: RedisBackend,
    redis_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Launcher]:
    launcher = Launcher(database_url, redis_backend, redis_prefix, tmp_path_factory.mktemp("gateways"))
    yield launcher
    await launcher.stop_all()


@pytest.fixture(scope="module")
async def backend_redis(redis_backend: RedisBackend) -> AsyncIterator[Any]:
    """A redis-py client of the module's Redis (any mode), to look at what the gateways wrote."""
    client = redis_backend.client()
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
async def gateways(launcher: Launcher) -> list[Gateway]:
    """Two separate gateway processes sharing PostgreSQL and Redis."""
    return [await launcher.start(), await launcher.start()]


async def eventually(check: Any, timeout: float = 5.0, step: float = 0.05) -> Any:
    """Call ``check`` until it returns something truthy; return it (or the last falsy value)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(step)


# ---------------------------------------------------------------- private servers


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


class PrivatePostgres:
    """A PostgreSQL cluster of our own (the machine's binaries, run as ``postgres``), to stop and start.

    ``catena.embedded.EmbeddedPostgres`` cannot start a server again after stopping
    it, which these tests need; the cluster lives in a temporary directory owned by
    the ``postgres`` user and listens on a free port of 127.0.0.1.
    """

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="catena-test-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.directory, account.pw_uid, account.pw_gid)

    @staticmethod
    def available() -> bool:
        return shutil.which("initdb") is not None and shutil.which("pg_ctl") is not None

    def _run(self, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.directory / "log")
        self._run("pg_ctl", "-D", str(self.data), "-w", "-l", log, "-o", options, "start")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "stop")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class Hung:
    """Every process of a private cluster stopped with SIGSTOP, resumed on exit."""

    def __init__(self, server: PrivatePostgres) -> None:
        pid = int((server.data / "postmaster.pid").read_text().split()[0])
        postmaster = psutil.Process(pid)
        self.processes = [postmaster, *postmaster.children(recursive=True)]

    def __enter__(self) -> Hung:
        for process in self.processes:
            process.send_signal(signal.SIGSTOP)
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGCONT)

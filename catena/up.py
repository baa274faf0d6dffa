"""``catena up``: everything on one machine, in one command.

With no ``CATENA_DATABASE_URL`` it starts the embedded PostgreSQL, and with no
``CATENA_REDIS_URL`` (nor, in sentinel mode, ``CATENA_REDIS_SENTINELS``) the
embedded Redis, under ``var/`` (kept across restarts, reused when already running);
every ``CATENA_REDIS_*`` variable is passed on to the services, so
``CATENA_REDIS_MODE=cluster CATENA_REDIS_URL=redis://127.0.0.1:7000`` runs
everything against a Redis Cluster.  It applies migrations, creates the demo portal on first start, then runs
``admin_api``, ``authgate`` (one worker per core) and ``epg_worker`` as supervised
children: a child that dies is logged and started again, and so is an embedded
server.  Ctrl-C or SIGTERM stops the children, then the embedded servers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import msgspec

from . import db, demo, logs, migrations
from . import redis as catena_redis
from .embedded import EmbeddedPostgres, EmbeddedRedis, become_subreaper
from .settings import AdminSettings, AuthgateSettings, EpgSettings, SettingsError, load

log = logging.getLogger("catena.up")

HEALTH_TIMEOUT = 90.0
DEMO_OUTBOUND_ALLOW = "127.0.0.0/8,::1/128"
# Callers of /auth and /events trusted without the secret: a Flussonic on this host.
LOOPBACK_NETS = "127.0.0.0/8,::1/128"
# After every child answers, how long to wait for all to report "ok" (a gateway that
# found Redis empty rebuilds its session counts first, a second or two).
SETTLE_TIMEOUT = 15.0
RESTART_DELAY_MAX = 30.0


class UpInfo(demo.Access, kw_only=True):
    """What ``var/up.json`` holds: where things listen, and the demo portal's access."""

    adminUrl: str
    authUrl: str
    epgWorkerUrl: str
    databaseUrl: str
    redisUrl: str
    redisMode: str = "single"
    redis: str = ""
    # The gateway's secret for streaming servers outside CATENA_AUTH_ALLOWED_NETS.
    authSecret: str = ""


@dataclass
class Watched:
    """An embedded server under supervision, and when to try starting it again."""

    name: str
    server: EmbeddedPostgres | EmbeddedRedis
    restarts: int = 0
    started_at: float = field(default_factory=time.monotonic)
    retry_at: float | None = None


@dataclass
class Child:
    name: str
    argv: list[str]
    health_url: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    threads: list[threading.Thread] = field(default_factory=list)


def run(var_dir: str | None = None) -> None:
    logs.setup("catena-up", os.environ.get("CATENA_LOG_LEVEL", "info"))
    var = Path(var_dir or os.environ.get("CATENA_VAR_DIR", "var")).resolve()
    var.mkdir(parents=True, exist_ok=True)
    become_subreaper()
    env = dict(os.environ, CATENA_VAR_DIR=str(var))
    # The demo's EPG sources and webhooks may be local test servers (docs/client.md
    # walkthrough); a deployment that sets the variable decides for itself.
    env.setdefault("CATENA_OUTBOUND_ALLOW", DEMO_OUTBOUND_ALLOW)
    servers = _start_servers(var, env)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    children: list[Child] = []
    try:
        _ensure_token_secrets(var, env)
        _ensure_auth_secret(var, env)
        _check_redis(env)
        info = asyncio.run(_prepare(var, env))
        children = _children(var, env)
        for child in children:
            _spawn(child, env)
        _wait_healthy(children, stop)
        if not stop.is_set():
            _announce(info, var)
            _supervise(children, [Watched(_server_name(s), s) for s in servers], env, stop)
    finally:
        _stop_children(children)
        for server in reversed(servers):
            server.stop()
        log.info("stopped")


def _start_servers(var: Path, env: dict[str, str]) -> list[EmbeddedPostgres | EmbeddedRedis]:
    servers: list[EmbeddedPostgres | EmbeddedRedis] = []
    # Decided first: a refused Redis setting must not leave an embedded PostgreSQL running.
    wants_redis = _wants_embedded_redis(env)
    if not env.get("CATENA_DATABASE_URL"):
        postgres = EmbeddedPostgres(var / "pg")
        env["CATENA_DATABASE_URL"] = postgres.start()
        servers.append(postgres)
        log.info("embedded PostgreSQL running", extra={"url": env["CATENA_DATABASE_URL"]})
    if wants_redis:
        redis = EmbeddedRedis(var / "redis")
        env["CATENA_REDIS_URL"] = redis.start()
        servers.append(redis)
        log.info("embedded Redis running", extra={"url": env["CATENA_REDIS_URL"]})
    return servers


def _wants_embedded_redis(env: dict[str, str]) -> bool:
    """No Redis named: a single embedded one (a cluster must be named, see docs/scaling.md)."""
    mode = env.get("CATENA_REDIS_MODE", "single")
    if mode == "cluster" and not env.get("CATENA_REDIS_URL"):
        raise SystemExit("catena up: CATENA_REDIS_MODE=cluster needs CATENA_REDIS_URL (one or more nodes)")
    if mode == "sentinel":
        return False  # the settings check names what is missing
    return not env.get("CATENA_REDIS_URL")


def _check_redis(env: dict[str, str]) -> None:
    """Stop at once, naming the variable, when the Redis settings are wrong (not once per child)."""
    try:
        settings = load(AdminSettings, env)
        asyncio.run(catena_redis.check_at_start(settings, "catena up"))
    except (SettingsError, catena_redis.RedisSettingsError) as exc:
        raise SystemExit(f"catena up: {exc}") from None


def _ensure_token_secrets(var: Path, env: dict[str, str]) -> None:
    """A deployment's own playback-token secret, made once and kept in ``var/``."""
    if env.get("CATENA_TOKEN_SECRETS"):
        return
    path = var / "token-secrets"
    if not path.exists():
        path.write_text(f"k1:{secrets.token_urlsafe(32)}\n")
        path.chmod(0o600)
    env["CATENA_TOKEN_SECRETS"] = path.read_text().strip()


def _ensure_auth_secret(var: Path, env: dict[str, str]) -> None:
    """The gateway's secret for remote streaming servers, made once and kept in ``var/``;
    loopback callers (a Flussonic on this host, local tools) need none."""
    env.setdefault("CATENA_AUTH_ALLOWED_NETS", LOOPBACK_NETS)
    if env.get("CATENA_AUTH_SECRET"):
        return
    path = var / "auth-secret"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32) + "\n")
        path.chmod(0o600)
    env["CATENA_AUTH_SECRET"] = path.read_text().strip()


def flussonic_lines(auth_url: str, secret: str) -> list[str]:
    """Flussonic's configuration for this gateway: its auth backend and its event sink."""
    query = f"?catena_secret={secret}" if secret else ""
    return [
        f"auth_backend catena {{ backend {auth_url}/auth{query}; }}",
        f"event_sink catena {{ url {auth_url}/events{query}; only event=play_*; }}",
    ]


async def _prepare(var: Path, env: dict[str, str]) -> UpInfo:
    admin = load(AdminSettings, env)
    auth = load(AuthgateSettings, env)
    epg = load(EpgSettings, env)
    conn = await db.connect(admin.database_url)
    try:
        applied = await migrations.apply(conn)
        if applied:
            log.info("migrations applied", extra={"versions": [m.version for m in applied]})
        access = await demo.ensure(conn, var / "demo.json", admin)
    finally:
        await conn.close()
    return UpInfo(
        adminUrl=f"http://{admin.admin_host}:{admin.admin_port}",
        authUrl=f"http://{auth.auth_host}:{auth.auth_port}",
        epgWorkerUrl=f"http://{epg.epg_host}:{epg.epg_port}",
        databaseUrl=admin.database_url,
        redisUrl=admin.redis_url,
        redisMode=admin.redis_mode,
        redis=catena_redis.settings_target(admin).describe(),
        authSecret=auth.auth_secret,
        **msgspec.structs.asdict(access),
    )


def _children(var: Path, env: dict[str, str]) -> list[Child]:
    admin, auth, epg = load(AdminSettings, env), load(AuthgateSettings, env), load(EpgSettings, env)
    workers = env.get("CATENA_AUTH_WORKERS") or str(os.cpu_count() or 1)
    logdir = var / "log"
    logdir.mkdir(exist_ok=True)
    python = sys.executable
    return [
        Child(
            "admin_api",
            [python, "-m", "admin_api"],
            f"http://{admin.admin_host}:{admin.admin_port}/health",
            logdir / "admin_api.log",
        ),
        Child(
            "authgate",
            [python, "-m", "authgate", "--workers", workers],
            f"http://{auth.auth_host}:{auth.auth_port}/health",
            logdir / "authgate.log",
        ),
        Child(
            "epg_worker",
            [python, "-m", "epg_worker"],
            f"http://{epg.epg_host}:{epg.epg_port}/health",
            logdir / "epg_worker.log",
        ),
    ]


def _spawn(child: Child, env: dict[str, str]) -> None:
    child.process = subprocess.Popen(
        child.argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    child.started_at = time.monotonic()
    # Children log JSON lines; copy them to the terminal and to var/log/<name>.log.
    thread = threading.Thread(target=_pump, args=(child.process.stdout, child.log_path), daemon=True)
    thread.start()
    child.threads.append(thread)
    log.info("started", extra={"child": child.name, "pid": child.process.pid})


def _pump(stream: IO[bytes] | None, path: Path) -> None:
    if stream is None:
        return
    with path.open("ab") as sink:
        for line in iter(stream.readline, b""):
            sink.write(line)
            sink.flush()
            sys.stderr.buffer.write(line)
            sys.stderr.buffer.flush()


def _health(url: str) -> tuple[int, str]:
    """The status code and ``status`` field of a ``/health`` answer (0 when none)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            body = msgspec.json.decode(response.read())
            return response.status, str(body.get("status", "")) if isinstance(body, dict) else ""
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (urllib.error.URLError, OSError, ValueError, msgspec.DecodeError):
        return 0, ""


def _healthy(url: str) -> bool:
    return _health(url)[0] == 200


def _wait_healthy(children: list[Child], stop: threading.Event) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT
    pending = list(children)
    while pending and not stop.is_set():
        pending = [c for c in pending if not _healthy(c.health_url)]
        for child in pending:
            if child.process is not None and child.process.poll() is not None:
                raise SystemExit(
                    f"catena up: {child.name} exited with {child.process.returncode}; see {child.log_path}"
                )
        if time.monotonic() > deadline:
            names = ", ".join(c.name for c in pending)
            raise SystemExit(f"catena up: {names} did not become healthy in {HEALTH_TIMEOUT:.0f} s")
        time.sleep(0.2)
    _wait_settled(children, stop)


def _wait_settled(children: list[Child], stop: threading.Event) -> None:
    """Give every child a moment to report ``ok`` (the announcement then shows a settled system)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    pending = list(children)
    while pending and not stop.is_set() and time.monotonic() < deadline:
        pending = [c for c in pending if _health(c.health_url) != (200, "ok")]
        time.sleep(0.2)
    for child in pending:
        log.warning("not fully healthy yet", extra={"child": child.name, "health": child.health_url})


def _announce(info: UpInfo, var: Path) -> None:
    path = var / "up.json"
    path.write_bytes(msgspec.json.format(msgspec.json.encode(info), indent=2) + b"\n")
    path.chmod(0o600)
    lines = [
        "",
        "Catena is up.",
        f"  Web console     {info.adminUrl}/  (sign in: {info.ownerEmail} / {info.ownerPassword})",
        f"  Management API  {info.adminUrl}/tv-management/api/v1",
        f"  OpenAPI         {info.adminUrl}/tv-management/api/v1/openapi.json",
        f"  Auth gateway    {info.authUrl}/auth",
        f"  Gateway secret  {info.authSecret or '(none)'}  (streaming servers outside loopback send it)",
        "  Flussonic       " + "\n                  ".join(flussonic_lines(info.authUrl, info.authSecret)),
        "                  (and `on_play auth://catena;` in each stream or template)",
        f"  Redis           {info.redis}",
        f"  EPG worker      {info.epgWorkerUrl}/health",
        f"  Demo portal     {info.portalId}",
        f"  API key         {info.apiKey}",
        f"  Owner login     {info.ownerEmail} / {info.ownerPassword}",
        f"  Demo subscriber +7 {info.demoSubscriberPhone[1:]} ({info.demoSubscriberId})",
        f"  Written to      {path}",
        "  Ctrl-C stops everything.",
        "",
    ]
    print("\n".join(lines), flush=True)


def _supervise(
    children: list[Child], servers: list[Watched], env: dict[str, str], stop: threading.Event
) -> None:
    while not stop.wait(0.5):
        for watched in servers:
            _watch(watched)
        for child in children:
            assert child.process is not None
            code = child.process.poll()
            if code is None:
                continue
            # Back off when a child keeps crashing right after it starts.
            lived = time.monotonic() - child.started_at
            child.restarts = 0 if lived > 60 else child.restarts + 1
            delay = min(RESTART_DELAY_MAX, 0.5 * 2**child.restarts)
            log.error("child exited; restarting", extra={"child": child.name, "code": code, "delay": delay})
            if stop.wait(delay):
                return
            _spawn(child, env)


def _server_name(server: EmbeddedPostgres | EmbeddedRedis) -> str:
    return "postgres" if isinstance(server, EmbeddedPostgres) else "redis"


def _restart_delay(restarts: int) -> float:
    return min(RESTART_DELAY_MAX, 0.5 * 2.0**restarts)


def _watch(watched: Watched) -> None:
    """Start a dead embedded server again, after a back-off when it keeps dying.

    The services need nothing: they reconnect by themselves (the gateway leaves its
    degraded mode, the sign-in limits count in Redis again).
    """
    now = time.monotonic()
    if watched.retry_at is None:
        if watched.server.running():
            return
        # Back off when it keeps dying right after it starts.
        watched.restarts = 0 if now - watched.started_at > 60 else watched.restarts + 1
        delay = _restart_delay(watched.restarts)
        log.error("embedded server exited; restarting", extra={"server": watched.name, "delay": delay})
        watched.retry_at = now + delay
    if now < watched.retry_at:
        return
    try:
        watched.server.recover()
    except Exception as exc:
        watched.restarts += 1
        delay = _restart_delay(watched.restarts)
        log.warning(
            "embedded server did not start; trying again",
            extra={"server": watched.name, "delay": delay, "error": str(exc)[-500:]},
        )
        watched.retry_at = time.monotonic() + delay
        return
    log.info("embedded server restarted", extra={"server": watched.name})
    watched.started_at, watched.retry_at = time.monotonic(), None


def _stop_children(children: list[Child], timeout: float = 20.0) -> None:
    running = [c.process for c in children if c.process is not None and c.process.poll() is None]
    for process in running:
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in running:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    for child in children:
        for thread in child.threads:
            thread.join(timeout=2)

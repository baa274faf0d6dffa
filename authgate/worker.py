"""One gateway process: its connections, caches, background tasks and listening socket.

Every process of ``authgate --workers N`` is a :class:`Worker` listening on the same
port (``SO_REUSEPORT``).  It starts answering even when Redis or PostgreSQL is
down, probes both every half second, and recovers by itself when they return:
when Redis comes back empty it re-counts sessions and rebuilds the entitlement map
(one process does, under a lock); when PostgreSQL comes back the spool is replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import asyncpg
from redis.exceptions import RedisError

from catena import db, entitlement_map, ids, tasks
from catena.entitlement_map import EntitlementMap
from catena.redis import settings_target
from catena.settings import AuthgateSettings
from catena.tokens import TokenCodec

from . import responses, sweeper
from .caches import Caches
from .decision import Admission, Decider
from .events import EventSink
from .gate import Gate
from .health import Health
from .listener import Listener
from .loader import Loader
from .metrics import Metrics, SnapshotFiles, render
from .query import Fields
from .recorder import Recorder
from .redis_pipe import open_pipe
from .server import Limits, Server
from .session_limiter import SessionLimiter
from .sessions import SessionTable
from .spool import Spool
from .trust import Trust

log = logging.getLogger("authgate.worker")

PROBE_INTERVAL = 0.5
LIMITER_INTERVAL = 0.2
HOUSEKEEPING_INTERVAL = 1.0
SESSION_SCAN_EVERY = 15
SHUTDOWN_GRACE = 5.0
_PG_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


def state_dir(settings: AuthgateSettings) -> Path:
    """Where the gateway listening on this port keeps its spool and metrics snapshots."""
    return Path(settings.var_dir) / f"authgate-{settings.auth_port}"


def spool_dir(settings: AuthgateSettings) -> Path:
    return Path(settings.auth_spool_dir) if settings.auth_spool_dir else state_dir(settings) / "spool"


class Worker:
    def __init__(self, settings: AuthgateSettings, index: int = 0) -> None:
        self.settings = s = settings
        self.index = index
        self.metrics = Metrics()
        self.caches = Caches(s.auth_cache_size)
        self.sessions = SessionTable()
        self.status = Health(self._trust)
        self.pool: asyncpg.Pool | None = None
        self.spool = Spool(spool_dir(s))
        self.recorder = Recorder(
            self._connect_pg,
            self.spool,
            self.status,
            self.metrics,
            interval=s.auth_flush_interval,
            max_buffered=s.auth_max_buffered_records,
        )
        self.decider = Decider(
            self.caches,
            self.sessions,
            self.recorder,
            TokenCodec(s.token_secrets),
            self.metrics,
            deny_duration=s.auth_deny_duration,
            grace=s.auth_session_grace,
            stale_limit=s.auth_stale_limit,
            progress=s.auth_progress_interval,
        )
        # Every Redis command of the gateway goes through these connections (each
        # with the deadline), whatever the mode (single server, cluster, sentinel).
        self.pipe = open_pipe(settings_target(s), s.auth_redis_timeout, s.auth_redis_client)
        self.emap = EntitlementMap(self.pipe, s.redis_prefix)
        self.loader = Loader(
            self.caches,
            self.emap,
            lambda: self.pool,
            self.status,
            self.metrics,
            deny_duration=s.auth_deny_duration,
            usable=self.decider.usable,
        )
        self.limiter = SessionLimiter(
            self.pipe,
            s.redis_prefix,
            self.sessions,
            self.decider,
            self.status,
            self.metrics,
            grace=s.auth_session_grace,
            local_after=s.auth_local_count_after,
            on_evicted=self.recorder.touch,
            restore=self.restore,
            rebuilt=self.rebuilt,
        )
        self.gate = Gate(self.decider, self.loader, self.limiter, self.recorder, self.sessions, self.metrics)
        # What the server calls on every check, bound once (no extra call per request).
        self.decide: Callable[[Fields, float], bytes | Admission | None] = self.decider.decide
        self.admit: Callable[[Admission], asyncio.Future[bytes]] = self.gate.admit
        self.sink = EventSink(self.gate)
        self.listener = Listener(
            self._connect_pg,
            self.caches,
            self.emap,
            self.status,
            self.metrics,
            lambda: self.pool,
            terminated=self.decider.terminate,
        )
        self.snapshots = SnapshotFiles(state_dir(s) / "metrics", str(index))
        self.server = Server(
            self,
            Limits(
                s.auth_max_header_bytes,
                s.auth_max_body_bytes,
                s.auth_idle_timeout,
                s.auth_request_timeout,
            ),
            Trust.from_settings(s.auth_allowed_nets, s.auth_secret),
        )
        self._refusals = responses.untrusted(s.auth_deny_duration)
        self._listening: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._node_claimed = False
        self._rebuilding: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ what the server calls

    def check(self, fields: Fields, now: float) -> Coroutine[Any, Any, bytes]:
        return self.gate.check(fields, now)

    def ingest(self, body: bytes) -> Coroutine[Any, Any, bytes]:
        return self.sink.ingest(body)

    def bad_request(self, message: str) -> bytes:
        return self.decider.refuse_request(message, "body")

    def untrusted(self, path: bytes) -> bytes:
        """The refusal of a caller neither in an allowed network nor carrying the secret."""
        if path == b"/auth":
            self.metrics.untrusted_auth += 1
        else:
            self.metrics.untrusted_events += 1
        return self._refusals[path]

    def health(self) -> bytes:
        return self.status.response(self.metrics.spool_bytes)

    def metrics_text(self) -> bytes:
        text = render(self.snapshots.read_all(self._snapshot()))
        return responses.encode(200, text, content_type=b"text/plain; version=0.0.4; charset=utf-8")

    # ------------------------------------------------------------ life cycle

    async def start(self) -> None:
        s = self.settings
        self.pool = await db.create_pool(
            s.database_url, min_size=0, max_size=4, timeout=2.0, command_timeout=10.0
        )
        await self._probe_redis()  # also opens the limiter's own connection
        await self._probe_pg()
        self._listening = await asyncio.get_running_loop().create_server(
            self.server.protocol, s.auth_host, s.auth_port, reuse_port=True, backlog=2048
        )
        self._spawn(self.recorder.run())
        self._spawn(self.limiter.run(LIMITER_INTERVAL))
        self._spawn(self.listener.run())
        self._spawn(self.server.run_clock())
        self._spawn(self._watch())
        self.snapshots.write(self._snapshot())
        self._spawn(self._housekeeping())
        self._spawn(
            sweeper.run(
                lambda: self.pool,
                self.status,
                self.metrics,
                idle=s.auth_session_idle,
                grace=s.auth_session_grace,
                interval=s.auth_sweep_interval,
            )
        )
        # What start-up made lives as long as the process: keep it out of every collection.
        gc.freeze()
        log.info("listening", extra={"host": s.auth_host, "port": s.auth_port, "worker": self.index})

    async def stop(self) -> None:
        """Stop accepting, finish answers in flight, flush sessions, close connections."""
        if self._listening is not None:
            self._listening.close()
        self.server.close_idle()
        await self._connections_closed()
        await tasks.cancel_all([*self._tasks, *([self._rebuilding] if self._rebuilding else [])])
        await self.limiter.stop()
        with contextlib.suppress(RedisError, OSError):
            await self.limiter.flush()
        for session in self.sessions.unwritten():
            self.recorder.touch(session)
        await self.recorder.close()
        self.pipe.close()
        self.snapshots.write(self._snapshot())
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), SHUTDOWN_GRACE)
            except TimeoutError:
                self.pool.terminate()
        log.info("stopped", extra={"worker": self.index})

    async def _connections_closed(self) -> None:
        """Wait (a little) for connections to finish the answers they are owed."""
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while self.server.connections and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        self._tasks.append(asyncio.create_task(coroutine))

    def _trust(self, trusting: bool) -> None:
        self.decider.set_trusting(trusting)

    async def _connect_pg(self) -> asyncpg.Connection:
        return await db.connect(self.settings.database_url, timeout=2.0)

    # ------------------------------------------------------------ probes and recovery

    async def _watch(self) -> None:
        # A Redis lost on the request path (a reply past the deadline: maybe only a
        # spike) is probed again at once rather than at the next interval.
        lost = asyncio.Event()
        self.status.on_redis_lost = lost.set  # type: ignore[method-assign]
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), PROBE_INTERVAL)
            lost.clear()
            try:
                await self._probe_redis()
                await self._probe_pg()
            except Exception:
                log.exception("probe failed")

    async def _probe_redis(self) -> None:
        pipe = self.pipe
        if not pipe.connected:
            pipe.ensure_connected()
            await pipe.wait_connected()
        with contextlib.suppress(RedisError, OSError):
            await pipe.check_topology()  # a cluster's slot map, the sentinels' primary
        state = await self.limiter.check()
        status = self.status
        if not state.reachable:
            if status.redis_up:
                log.warning("Redis unreachable")
            status.set_redis(False)
            return
        status.redis_partial = state.failed > 0
        status.redis_rebuilding = state.not_ready > 0
        if not status.redis_up:
            log.info("Redis reachable")
            status.set_redis(True)
            with contextlib.suppress(RedisError, OSError):
                await self.listener.sync_dirty()
        if state.not_ready:
            self.limiter.recover()  # in the background; the probe goes on

    async def _probe_pg(self) -> None:
        assert self.pool is not None
        up = await db.ping(self.pool, timeout=2.0)
        if up != self.status.pg_up:
            log.info("PostgreSQL reachable" if up else "PostgreSQL unreachable")
        self.status.set_pg(up)
        if up and not self._node_claimed:
            with contextlib.suppress(*_PG_ERRORS):
                async with self.pool.acquire(timeout=2.0) as conn:
                    await ids.claim_node(conn)
                self._node_claimed = True

    async def restore(self, slots: set[int]) -> bool:
        """This process's part in rebuilding counts Redis lost (:meth:`SessionLimiter.recover`).

        Raise the floor of every portal whose version moved on while Redis did not
        see it (a promoted replica may have lost the writes that recorded it), and
        count again the sessions PostgreSQL shows open in ``slots``.  Without
        PostgreSQL there is nothing to vouch for the counts: the slots stay not ready.
        """
        if not self.status.pg_up or self.pool is None:
            log.warning("cannot rebuild Redis's session counts while PostgreSQL is away")
            return False
        try:
            async with self.pool.acquire(timeout=2.0) as conn:
                versions = await entitlement_map.current_versions(conn, timeout=5.0)
            await self.emap.sync(versions)
        except (*_PG_ERRORS, RedisError) as exc:
            log.warning("Redis recovery failed", extra={"error": str(exc)})
            return False
        if not await self.limiter.recount(self.pool, slots):
            return False
        self.metrics.redis_recoveries += 1
        return True

    def rebuilt(self) -> None:
        """The slots are ready again: write the entitlement map anew in the background."""
        if self._rebuilding is None or self._rebuilding.done():
            self._rebuilding = asyncio.create_task(self._rebuild_map())

    async def _rebuild_map(self) -> None:
        if self.pool is None:
            return
        try:
            async with self.pool.acquire(timeout=5.0) as conn:
                stats = await entitlement_map.rebuild(conn, self.emap)
            log.info(
                "entitlement map rebuilt", extra={"portals": stats.portals, "subscribers": stats.subscribers}
            )
        except (*_PG_ERRORS, RedisError) as exc:
            log.warning(
                "entitlement map rebuild failed; entries will be built on misses", extra={"error": str(exc)}
            )

    # ------------------------------------------------------------ housekeeping

    async def _housekeeping(self) -> None:
        keep_ms = int(self.settings.auth_session_grace * 1000)
        rounds = 0
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            rounds += 1
            try:
                # Scanning every session costs milliseconds with many of them: not every second.
                if rounds % SESSION_SCAN_EVERY == 0:
                    self.decider.forget_terminated(int(time.time() * 1000))
                    for session in self.sessions.expire(int(time.time() * 1000), keep_ms):
                        if session.has_unwritten_progress():
                            self.recorder.touch(session)  # its last progress, before forgetting it
                self.snapshots.write(self._snapshot())
            except Exception:
                log.exception("housekeeping failed")

    def _snapshot(self) -> dict[str, Any]:
        metrics = self.metrics
        metrics.sessions_tracked = len(self.sessions)
        metrics.redis_up = self.status.redis_up
        metrics.redis_ready = self.status.redis_up and not self.status.redis_rebuilding
        metrics.redis_commands = self.pipe.commands
        metrics.pg_up = self.status.pg_up
        metrics.listener_up = self.status.listener_up
        return metrics.snapshot()


async def serve(settings: AuthgateSettings, index: int, stop: asyncio.Event) -> None:
    """Run one worker until ``stop`` is set."""
    worker = Worker(settings, index)
    await worker.start()
    try:
        await stop.wait()
    finally:
        await worker.stop()

"""The EPG worker process: the update loop, plus ``/health`` and ``/metrics``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import msgspec
import prometheus_client
import redis.asyncio as aioredis
from aiohttp import web

from catena import db, ids, tasks
from catena import redis as catena_redis
from catena.settings import EpgSettings, var_path

from . import fetcher, update
from . import metrics as epg_metrics
from .scheduler import Worker

log = logging.getLogger("epg_worker")

SETTINGS = web.AppKey("settings", EpgSettings)
WORKER = web.AppKey("worker", Worker)
REDIS = web.AppKey("redis", aioredis.Redis)


class Health(msgspec.Struct):
    status: str
    postgres: str
    redis: str
    scheduler: str
    runningUpdates: int


def create_app(settings: EpgSettings) -> web.Application:
    """Build the application; the pool and the loop start in ``cleanup_ctx``."""
    app = web.Application()
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_worker)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def start_worker(settings: EpgSettings, pool: asyncpg.Pool, session: aiohttp.ClientSession) -> Worker:
    """The :class:`Worker` of this process (which makes ids on a node of its own)."""
    async with pool.acquire() as conn:
        await ids.claim_node(conn)
    download_dir = var_path(settings, "epg")
    remove_leftovers(download_dir, settings.epg_job_timeout)
    limits = fetcher.Limits(
        connect_timeout=settings.epg_connect_timeout,
        read_timeout=settings.epg_read_timeout,
        total_timeout=settings.epg_total_timeout,
        max_bytes=settings.epg_max_bytes,
        max_redirects=settings.epg_max_redirects,
    )
    downloader = fetcher.Downloader(session, limits)
    ctx = update.Context(settings, pool, downloader, worker_name(), download_dir)
    return Worker(ctx)


def remove_leftovers(directory: Path, job_timeout: float) -> None:
    """Delete downloads left by dead workers.

    A download is written from start to end and read by one update, which is over
    within the job timeout; a file untouched for twice that long has no owner.
    """
    cutoff = time.time() - 2 * job_timeout
    for path in directory.glob("fetch-*.download"):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < cutoff:
                path.unlink()


async def _worker(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool = await db.create_pool(settings.database_url, max_size=settings.database_pool_size)
    session = aiohttp.ClientSession()
    worker = await start_worker(settings, pool, session)
    app[WORKER] = worker
    # The worker does not use Redis; /health reports it like every service does.
    app[REDIS] = catena_redis.connect(settings)
    loops = [asyncio.create_task(worker.run()), asyncio.create_task(worker.prune_forever())]
    log.info("EPG worker started", extra={"worker": worker.ctx.worker})
    yield
    await tasks.cancel_all(loops)
    await worker.stop()
    await session.close()
    await app[REDIS].aclose()
    with contextlib.suppress(Exception):
        await pool.close()


async def health(request: web.Request) -> web.Response:
    worker = request.app[WORKER]
    pg_ok = await db.ping(worker.ctx.pool)
    redis_ok = await catena_redis.ping(request.app[REDIS])
    # Redis is reported but not required: no EPG work depends on it.  The loop wakes
    # at least every poll interval; much longer means it is stuck.
    stale_after = 3 * worker.ctx.settings.epg_poll_interval + 30
    loop_ok = time.monotonic() - worker.last_loop < stale_after
    body = Health(
        status="ok" if pg_ok and loop_ok else "degraded",
        postgres="up" if pg_ok else "down",
        redis="up" if redis_ok else "down",
        scheduler="running" if loop_ok else "stuck",
        runningUpdates=len(worker.running),
    )
    return web.Response(
        body=msgspec.json.encode(body),
        status=200 if pg_ok and loop_ok else 503,
        content_type="application/json",
    )


# Per source: its last attempt's status and its last success (or creation) time.
_SOURCE_STATE = """
SELECT count(*) FILTER (WHERE last.status IN ('error', 'timeout')) AS failing,
       coalesce(extract(epoch FROM now() - min(coalesce(ok.at, s.created_at))), 0) AS stalest
FROM epg_sources s
LEFT JOIN epg_fetches last ON last.id = s.last_fetch_id
LEFT JOIN LATERAL (SELECT max(f.fetched_at) AS at FROM epg_fetches f
                   WHERE f.epg_source_id = s.id AND f.status = 'success') ok ON true
"""


async def metrics(request: web.Request) -> web.Response:
    with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        row = await request.app[WORKER].ctx.pool.fetchrow(_SOURCE_STATE, timeout=5)
        epg_metrics.SOURCES_FAILING.set(row["failing"])
        epg_metrics.STALEST_SOURCE.set(float(row["stalest"]))
    return web.Response(
        body=prometheus_client.generate_latest(),
        headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST},
    )

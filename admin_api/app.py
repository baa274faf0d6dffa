"""The admin API application factory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
from aiohttp import web

from catena import db, ids, tasks
from catena import redis as catena_redis
from catena.pagination import Cursors
from catena.settings import AdminSettings
from catena.tokens import TokenCodec

from . import (
    channels,
    console,
    epg_sources,
    free_packages,
    health,
    keys,
    login,
    managers,
    openapi,
    operations_log,
    packages,
    play_sessions,
    portal,
    stats,
    subscribers,
    subscriptions,
    webhook_delivery,
    webhooks,
)
from .client import channels as client_channels
from .client import login as client_login
from .client import playlists as client_playlists
from .client import portal as client_portal
from .errors import error_middleware
from .routing import Api
from .services import Services

log = logging.getLogger("admin_api")

BASE = "/tv-management/api/v1"
OPENAPI_PATH = BASE + "/openapi.json"

# Every module that declares endpoints.  Each one's `api` is mounted under BASE
# unless it carries its own prefix.
MODULES = [
    portal,
    managers,
    login,
    channels,
    packages,
    free_packages,
    epg_sources,
    subscribers,
    subscriptions,
    operations_log,
    play_sessions,
    stats,
    webhooks,
    client_portal,
    client_login,
    client_channels,
    client_playlists,
]


def apis() -> list[Api]:
    return [module.api for module in MODULES]


def create_app(settings: AdminSettings) -> web.Application:
    """Build the application; connections open in ``cleanup_ctx`` when it starts."""
    app = web.Application(
        middlewares=[health.metrics_middleware, error_middleware, console.middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[keys.SETTINGS] = settings
    app[keys.TOKENS] = TokenCodec(settings.token_secrets)
    app[keys.CURSORS] = Cursors(settings.token_secrets)
    app.cleanup_ctx.append(_resources)
    app.cleanup_ctx.append(_partition_maintenance)
    app.cleanup_ctx.append(stats.background)
    if settings.webhooks_enabled:
        app.cleanup_ctx.append(webhook_delivery.background)
    health.add_routes(app)
    for api in apis():
        if not api.prefix:
            api.prefix = BASE
            for endpoint in api.endpoints:
                endpoint.path = BASE + endpoint.path
        api.add_to(app)
    document = msgspec.json.encode(openapi.build(e for a in apis() for e in a.endpoints))
    app.router.add_get(OPENAPI_PATH, _serve_bytes(document))
    # The staff web console at "/", beside the APIs (docs/console.md).
    console.setup(app, settings.token_secrets)
    return app


def _serve_bytes(document: bytes) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    return serve


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    pool = await db.create_pool(settings.database_url, max_size=settings.database_pool_size)
    async with pool.acquire() as conn:
        await ids.claim_node(conn)
    app[keys.DB] = pool
    app[keys.REDIS] = catena_redis.connect(settings)
    app[keys.SERVICES] = Services(pool, app[keys.REDIS], settings, app[keys.CURSORS], app[keys.TOKENS])
    yield
    await app[keys.REDIS].aclose()
    await pool.close()


async def _partition_maintenance(app: web.Application) -> AsyncIterator[None]:
    """Keep monthly partitions of the time-partitioned tables created ahead of time."""

    async def loop() -> None:
        while True:
            try:
                async with app[keys.DB].acquire() as conn:
                    for table in ("operations", "play_sessions"):
                        await conn.execute("SELECT catena_ensure_partitions($1::regclass, 3)", table)
            except Exception:
                log.exception("partition maintenance failed; will retry")
            await asyncio.sleep(6 * 3600)

    task = asyncio.create_task(loop())
    yield
    await tasks.cancel_all([task])

"""The admin API application factory."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
from aiohttp import web

from catena import db, ids, service, tasks
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
    limiter,
    login,
    managers,
    openapi,
    operations,
    packages,
    packages_subscribers,
    play_sessions,
    portal,
    stats,
    subscribers,
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
    packages_subscribers,
    operations,
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
        middlewares=[
            service.guard_middleware,
            health.metrics_middleware,
            error_middleware,
            console.middleware,
        ],
        client_max_size=settings.max_body_bytes,
    )
    app[keys.SETTINGS] = settings
    app[service.LIMITS] = connection_limits(settings)
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


def connection_limits(settings: AdminSettings) -> service.ConnectionLimits:
    proxies = [p.strip() for p in settings.client_trusted_proxies.split(",") if p.strip()]
    return service.ConnectionLimits(
        header_timeout=settings.admin_header_timeout,
        body_timeout=settings.admin_body_timeout,
        unauthenticated=settings.admin_unauthenticated_connections,
        exempt=tuple(ipaddress.ip_network(p, strict=False) for p in proxies),
    )


def _serve_bytes(document: bytes) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    return serve


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    pool = await db.create_pool(
        settings.database_url, max_size=settings.database_pool_size, timeout=settings.database_timeout
    )
    async with pool.acquire() as conn:
        await ids.claim_node(conn)
    app[keys.DB] = pool
    app[keys.REDIS] = catena_redis.connect(settings)
    app[limiter.LIMITER] = limiter.Limiter.connect(settings)
    app[limiter.PASSWORDS] = limiter.PasswordChecker(bcrypt_threads(settings))
    app[keys.SERVICES] = Services(
        pool,
        app[keys.REDIS],
        settings,
        app[keys.CURSORS],
        app[keys.TOKENS],
        app[limiter.LIMITER],
        app[limiter.PASSWORDS],
    )
    yield
    app[limiter.PASSWORDS].close()
    await app[limiter.LIMITER].close()
    await app[keys.REDIS].aclose()
    await pool.close()


def bcrypt_threads(settings: AdminSettings) -> int:
    return settings.bcrypt_concurrency or max(1, (os.cpu_count() or 2) // 2)


async def _partition_maintenance(app: web.Application) -> AsyncIterator[None]:
    """Keep monthly partitions of the time-partitioned tables created ahead of time."""

    async def loop() -> None:
        while True:
            pause = 6 * 3600.0
            try:
                async with app[keys.DB].acquire() as conn:
                    for table in ("operations", "play_sessions"):
                        await conn.execute("SELECT catena_ensure_partitions($1::regclass, 3)", table)
            except db.UNAVAILABLE as exc:
                # An outage is not a fault of this loop: say so once and try again soon.
                log.warning(
                    "partition maintenance postponed: database unavailable", extra={"error": str(exc)}
                )
                pause = 60.0
            except Exception:
                log.exception("partition maintenance failed; will retry")
            await asyncio.sleep(pause)

    task = asyncio.create_task(loop())
    yield
    await tasks.cancel_all([task])

"""``GET /health`` and ``GET /metrics`` of the admin API."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import msgspec
import prometheus_client
from aiohttp import web

from catena import db
from catena import redis as catena_redis

from . import keys

REQUESTS = prometheus_client.Counter(
    "catena_admin_requests_total", "Management API requests", ["method", "route", "status"]
)
LATENCY = prometheus_client.Histogram(
    "catena_admin_request_seconds", "Management API request latency", ["route"]
)


class Health(msgspec.Struct):
    status: str
    postgres: str
    redis: str


async def health(request: web.Request) -> web.Response:
    pg_ok = await db.ping(request.app[keys.DB])
    redis_ok = await catena_redis.ping(request.app[keys.REDIS])
    body = Health(
        status="ok" if pg_ok and redis_ok else "degraded",
        postgres="up" if pg_ok else "down",
        redis="up" if redis_ok else "down",
    )
    return web.Response(
        body=msgspec.json.encode(body),
        status=200 if pg_ok and redis_ok else 503,
        content_type="application/json",
    )


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=prometheus_client.generate_latest(),
        headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST},
    )


@web.middleware
async def metrics_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    started = time.perf_counter()
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    response = await handler(request)
    LATENCY.labels(name).observe(time.perf_counter() - started)
    REQUESTS.labels(request.method, name, str(response.status)).inc()
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)

"""Fixtures shared by every test: real PostgreSQL and Redis, a fresh database per run.

``CATENA_TEST_DATABASE_URL`` / ``CATENA_TEST_REDIS_URL`` point the suite at
existing servers; without them it starts the embedded ones under ``var/test/``.
Each run creates its own database (dropped at the end) and its own Redis key
prefix, so runs never see each other; a test that uses ``pool`` starts with empty
tables, one that uses ``redis`` (or the admin API) with none of this run's keys.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web import BaseRunner

from catena import db, ids, portals, testing
from catena import redis as catena_redis
from catena.embedded import EmbeddedPostgres, EmbeddedRedis, LocalCluster, LocalSentinel
from catena.pagination import Cursors
from catena.service import AppRunner
from catena.settings import AdminSettings, load
from tests.redis_servers import start_cluster, start_sentinel

ROOT = Path(__file__).resolve().parent.parent
BASE = "/tv-management/api/v1"
# Cursors signed as the test admin API signs them (admin_settings keeps the default
# CATENA_TOKEN_SECRETS); for tests that build a cursor by hand.
CURSORS = Cursors(AdminSettings().token_secrets)
# aiohttp's test client of an in-process application.
AppClient = TestClient[web.Request, web.Application]


@pytest.fixture(scope="session")
def server_database_url() -> Iterator[str]:
    """A PostgreSQL server to create test databases on."""
    url = os.environ.get("CATENA_TEST_DATABASE_URL")
    if url:
        yield url
        return
    server = EmbeddedPostgres(ROOT / "var" / "test" / "pg")
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("CATENA_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedRedis(ROOT / "var" / "test" / "redis")
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A Redis Cluster of 3 primaries and 3 replicas for the whole run (started on first use)."""
    cluster = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSentinel]:
    """A primary, a replica and three sentinels for the whole run (started on first use)."""
    group = start_sentinel(tmp_path_factory.mktemp("redis-sentinel"))
    yield group
    group.stop()


@pytest.fixture(scope="session")
def redis_prefix() -> str:
    return "catena-test-" + secrets.token_hex(4)


@pytest.fixture(scope="session")
async def database_url(server_database_url: str) -> AsyncIterator[str]:
    """A database made for this run, with every migration applied."""
    async with testing.scratch_database(server_database_url, "catena_test_", migrate=True) as url:
        yield url


@pytest.fixture(scope="session")
async def session_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(database_url, max_size=5)
    async with pool.acquire() as conn:
        await ids.claim_node(conn)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def session_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = catena_redis.connect(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def pool(session_pool: asyncpg.Pool) -> asyncpg.Pool:
    """The test database, every table emptied before the test."""
    await truncate_all(session_pool)
    return session_pool


@pytest.fixture
async def redis(session_redis: aioredis.Redis, redis_prefix: str) -> aioredis.Redis:
    """A Redis client; this run's keys deleted before the test."""
    await delete_prefixed(session_redis, redis_prefix)
    return session_redis


_TABLES = """
SELECT array_agg(format('%I', c.relname))
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND c.relname <> 'schema_migrations'
"""


async def truncate_all(pool: asyncpg.Pool) -> None:
    """Empty every table.  DELETE with foreign-key triggers off is a hundred times
    faster than TRUNCATE on tables this small (TRUNCATE rewrites files)."""
    async with pool.acquire() as conn, conn.transaction():
        tables = await conn.fetchval(_TABLES)
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute("; ".join(f"DELETE FROM {table}" for table in tables))


async def delete_prefixed(client: aioredis.Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=prefix + ":*", count=1000)]
    for start in range(0, len(keys), 1000):
        async with client.pipeline(transaction=False) as pipe:
            for key in keys[start : start + 1000]:
                pipe.execute_command("UNLINK", key)
            await pipe.execute()


@pytest.fixture
def admin_settings(
    database_url: str, redis_url: str, redis_prefix: str, redis: aioredis.Redis
) -> AdminSettings:
    # bcrypt cost 4 keeps the suite fast; the production default (12) has its own test.
    # A generous database deadline: a test machine shared with other suites can run a
    # heavy statement for more than the default 5 s; the deadline has its own tests
    # (tests/admin_api/test_database_down.py).
    return load(
        AdminSettings,
        environ={},
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        bcrypt_rounds=4,
        webhooks_enabled=False,
        database_timeout=30.0,
    )


class Api:
    """A Management API client bound to one ``X-Auth-Token``."""

    def __init__(self, client: AppClient, token: str | None) -> None:
        self.client = client
        self.token = token

    def as_(self, token: str | None) -> Api:
        return Api(self.client, token)

    async def call(self, method: str, path: str, json: Any = None, **kwargs: Any) -> tuple[int, Any]:
        headers = dict(kwargs.pop("headers", {}))
        if self.token is not None:
            headers.setdefault("X-Auth-Token", self.token)
        data = kwargs.pop("data", None)
        if json is not None:
            data = msgspec.json.encode(json)
            headers.setdefault("Content-Type", "application/json")
        url = path if path.startswith(("/health", "/metrics", "/client")) else BASE + path
        async with self.client.request(method, url, data=data, headers=headers, **kwargs) as resp:
            raw = await resp.read()
            body = msgspec.json.decode(raw) if raw and resp.content_type.endswith("json") else raw
            return resp.status, body

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("GET", path, **kwargs)

    async def post(self, path: str, json: Any = None, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("POST", path, json, **kwargs)

    async def put(self, path: str, json: Any = None, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("PUT", path, json, **kwargs)

    async def delete(self, path: str, json: Any = None, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("DELETE", path, json, **kwargs)


class AdminTestServer(TestServer):
    """A test server running the admin API as ``python -m admin_api`` does (its runner
    and connection handler, so requests aiohttp cannot parse get our JSON errors)."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        from admin_api.errors import JsonErrorRequestHandler

        # aiohttp's test server cancels a handler whose client went away; the service
        # does not (aiohttp's default), so neither does this one.
        kwargs.pop("handler_cancellation", None)
        return AppRunner(self.app, handler_class=JsonErrorRequestHandler.for_app(self.app), **kwargs)


@pytest.fixture
async def client(aiohttp_client: Any, admin_settings: AdminSettings, pool: asyncpg.Pool) -> AppClient:
    """An admin API served in-process against the test database."""
    from admin_api.app import create_app

    served: AppClient = await aiohttp_client(AdminTestServer(create_app(admin_settings)))
    return served


@pytest.fixture
async def make_portal(pool: asyncpg.Pool):  # type: ignore[no-untyped-def]
    """Create a portal with its owner; returns what ``catena portal create`` prints."""
    counter = 0

    async def make(name: str | None = None, **kwargs: Any) -> portals.CreatedPortal:
        nonlocal counter
        counter += 1
        name = name or f"portal-{counter}-{secrets.token_hex(3)}"
        kwargs.setdefault("domain", f"{name}.example.com")
        kwargs.setdefault("owner_email", f"owner@{name}.example.com")
        kwargs.setdefault("owner_password", "Owner-Pass-123")
        async with pool.acquire() as conn:
            return await portals.create(conn, name=name, bcrypt_rounds=4, **kwargs)

    return make


@pytest.fixture
async def portal(make_portal: Any) -> portals.CreatedPortal:
    made: portals.CreatedPortal = await make_portal()
    return made


@pytest.fixture
def api(client: AppClient, portal: portals.CreatedPortal) -> Api:
    """The Management API as the portal's API key."""
    return Api(client, portal.apiKey)

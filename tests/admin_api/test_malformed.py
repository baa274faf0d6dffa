"""A corpus of malformed requests against every endpoint: never a 500, always a JSON error."""

from __future__ import annotations

import io
import re
from typing import Any

import asyncpg

from admin_api.app import apis
from admin_api.auth import authenticate_manager
from admin_api.routing import Endpoint

BASE = "/tv-management/api/v1"

BODIES: list[bytes] = [
    b"{",
    b"[]",
    b"null",
    b'"text"',
    b"12345",
    b"{}",
    b'{"unknown": 1}',
    b'{"name": ["not", "a", "string"], "email": 5, "password": null}',
    b'{"name": "' + b"x" * 100_000 + b'"}',
    b"\xff\xfe\x00garbage",
    b"[" * 5000 + b"]" * 5000,
    b'{"settings": {"maxSessions": -1}, "branding": {"logo": 7}}',
    b'{"id": "\\u0000", "channelId": "../../etc", "packageId": "AAAAAAAAAAA."}',
]
IDS = ["x", "%00", "AAAAAAAAAAA.", "A" * 500, "pK19SW3AAAF.", "%F0%9F%98%80", "..%2F..%2Fportal"]
QUERIES = [
    "limit=abc",
    "limit=0",
    "limit=5000",
    "limit=-1",
    "limit=1e3",
    "cursor=garbage",
    "cursor=%FF%FE",
    "cursor=WyJ4Il0",
    "date=2024-13-45",
    "active=maybe",
    "type=noSuchType",
    "subscriberId=x",
    "opened_at_gte=yesterday",
    "created_at_gte=2024-13-01",
    "epgSourceId=x",
    "force=perhaps",
]


def every_endpoint() -> list[Endpoint]:
    return [e for a in apis() for e in a.endpoints]


def fill(path: str, value: str) -> str:
    return re.sub(r"{\w+}", value, path)


async def current_key(pool: asyncpg.Pool, portal: Any) -> str:
    return str(await pool.fetchval("SELECT api_key FROM portals WHERE name = $1", portal.name))


def check(status: int, content_type: str, raw: bytes, label: str) -> None:
    assert status < 500, label
    if status >= 400:
        assert content_type == "application/json", label
        assert b'"message"' in raw and b'"error"' in raw, label


async def send(client: Any, method: str, url: str, token: str | None, **kwargs: Any) -> None:
    headers = dict(kwargs.pop("headers", {}))
    if token:
        headers["X-Auth-Token"] = token
    async with client.request(method, url, headers=headers, **kwargs) as resp:
        raw = await resp.read()
        check(resp.status, resp.content_type, raw, f"{method} {url} {kwargs} → {resp.status} {raw[:200]!r}")


async def test_bodies(client: Any, portal: Any, pool: asyncpg.Pool) -> None:
    for endpoint in every_endpoint():
        if endpoint.body is None:
            continue
        for body in BODIES:
            token = await current_key(pool, portal)
            url = fill(endpoint.path, "AAAAAAAAAAA.")
            headers = {"Content-Type": "application/json"}
            await send(client, endpoint.method, url, token, data=body, headers=headers)


async def test_wrong_media_type_and_oversized_bodies(client: Any, portal: Any, pool: asyncpg.Pool) -> None:
    for endpoint in every_endpoint():
        if endpoint.body is None:
            continue
        token = await current_key(pool, portal)
        url = fill(endpoint.path, "AAAAAAAAAAA.")
        await send(client, endpoint.method, url, token, data=b"a=1", headers={"Content-Type": "text/plain"})
        huge = io.BytesIO(b"{" + b" " * (5 * 1024 * 1024) + b"}")
        await send(
            client, endpoint.method, url, token, data=huge, headers={"Content-Type": "application/json"}
        )


async def test_path_ids_and_queries(client: Any, portal: Any, pool: asyncpg.Pool) -> None:
    for endpoint in every_endpoint():
        if endpoint.method not in ("GET", "DELETE"):
            continue
        values = IDS if "{" in endpoint.path else [""]
        for value in values:
            for query in QUERIES:
                token = await current_key(pool, portal)
                await send(client, endpoint.method, fill(endpoint.path, value) + "?" + query, token)


async def test_tokens_and_unknown_routes(client: Any) -> None:
    for endpoint in every_endpoint():
        if endpoint.auth is not authenticate_manager:
            continue
        url = fill(endpoint.path, "AAAAAAAAAAA.")
        for token in ("", "x" * 4_000, "' OR 1=1 --", "\u0416"):
            await send(client, endpoint.method, url, None, headers={"X-Auth-Token": token})
    for url in (BASE + "/nope", BASE + "/portal/../../etc/passwd", "/", BASE + "/managers/x/y"):
        await send(client, "GET", url, None)
    await send(client, "PATCH", BASE + "/portal", None)


async def test_oversized_header_is_refused_by_the_server(client: Any) -> None:
    # Refused by aiohttp's HTTP parser before any handler runs: a plain-text 400.
    async with client.get(BASE + "/portal", headers={"X-Auth-Token": "x" * 10_000}) as resp:
        assert resp.status == 400

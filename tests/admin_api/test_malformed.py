"""A corpus of malformed requests against every endpoint: never a 500, always a JSON error."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from typing import Any

import asyncpg
import msgspec
import pytest

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


# JSON cut short or followed by more bytes, after a value that is wrong for any endpoint.
BROKEN_JSON = [
    b'{"name": "x",',
    b'{"unknownField": 1, "name": "x',
    b'{"name": 5, "email": [',
    b'{"name": ["x"]} trailing',
]


async def test_broken_json_is_malformed_json_whatever_it_holds(
    client: Any, portal: Any, pool: asyncpg.Pool
) -> None:
    for endpoint in every_endpoint():
        if endpoint.body is None:
            continue
        url = fill(endpoint.path, "AAAAAAAAAAA.")
        for body in BROKEN_JSON:
            headers = {"Content-Type": "application/json", "X-Auth-Token": await current_key(pool, portal)}
            async with client.request(endpoint.method, url, data=body, headers=headers) as resp:
                error = await resp.json()
            label = f"{endpoint.method} {url} {body!r} → {resp.status} {error}"
            assert (resp.status, error["error"], error.get("field")) == (400, "malformed_json", None), label


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


# Requests aiohttp's HTTP parser refuses before any handler or middleware runs.
UNPARSABLE = {
    "two Content-Type headers": (
        b"POST /tv-management/api/v1/channels HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    ),
    "two Content-Length headers": (
        b"POST /tv-management/api/v1/channels HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
    ),
    "a control byte in a header name": (
        b"GET /tv-management/api/v1/portal HTTP/1.1\r\nHost: x\r\nX-A\x01b: 1\r\n\r\n"
    ),
    "a header line too long": (
        b"GET /tv-management/api/v1/portal HTTP/1.1\r\nHost: x\r\nX-Auth-Token: "
        + b"x" * 10_000
        + b"\r\n\r\n"
    ),
    "bytes that are not HTTP": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
}


async def raw_exchange(client: Any, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` over a plain socket; the status, headers and body of the answer."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(request)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)  # the server closes the connection
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("request_bytes", UNPARSABLE.values(), ids=UNPARSABLE.keys())
async def test_unparsable_requests_get_a_json_400_and_a_quiet_log(
    client: Any, request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    status, headers, body = await raw_exchange(client, request_bytes)
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    error = msgspec.json.decode(body)
    assert error["error"] == "bad_request"
    assert error["message"].startswith("malformed HTTP request: ")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert any("malformed HTTP request refused" in r.getMessage() for r in caplog.records)


async def test_duplicate_content_type_names_the_header(client: Any) -> None:
    status, _, body = await raw_exchange(client, UNPARSABLE["two Content-Type headers"])
    assert status == 400
    assert "Duplicate 'Content-Type' header" in msgspec.json.decode(body)["message"]

"""Odd requests of every kind against every client endpoint: never a 500, always a JSON error."""

from __future__ import annotations

import re
from typing import Any

from admin_api.app import apis
from catena.tokens import TokenCodec

from .conftest import App, Made

NAMES = ["x", "%00", "A" * 500, "%F0%9F%98%80", "..%2F..%2Fportal", "demo1"]
QUERIES = [
    "",
    "date=2024-13-45",
    "date=",
    "tz=",
    "tz=%00",
    "days=1e3",
    "pastDays=x",
    "portalId=%FF",
    "token=",
    "token=a.b.c",
    "date=2024-01-01&date=x",
    "v=1",
]
BODIES = [
    b"{",
    b"[]",
    b"null",
    b'"x"',
    b"{}",
    b'{"phone": "1"}',
    b'{"code": 1234}',
    b"\xff\xfe",
    b'{"phoneCountryCode": "7", "phone": "9000000001", "code": "0000", "portalId": "AAAAAAAAAAA."}',
]
HOSTS = ["", "a" * 300, "[::1]:80", "demo.localhost:99999", "UPPER.example"]


def client_endpoints() -> list[Any]:
    return [e for a in apis() for e in a.endpoints if e.path.startswith("/client/")]


def check(status: int, content_type: str, raw: bytes, label: str) -> None:
    assert status < 500, label
    if status >= 400:
        assert content_type == "application/json", label
        assert b'"message"' in raw and b'"error"' in raw, label


async def send(app: App, method: str, path: str, **kwargs: Any) -> None:
    async with app.client.request(method, path, **kwargs) as resp:
        raw = await resp.read()
        check(resp.status, resp.content_type, raw, f"{method} {path} {kwargs} → {resp.status} {raw[:200]!r}")


async def test_paths_and_queries(app: App, made: Made, codec: TokenCodec, portal_id: int) -> None:
    await made.package("basic", await made.channel("demo1"), free=True)
    token = codec.sign(await made.subscriber(), portal_id, 1)
    headers = {"Authorization": f"Bearer {token}", "Host": app.host or ""}
    for endpoint in client_endpoints():
        if endpoint.method != "GET":
            continue
        for name in NAMES if "{" in endpoint.path else [""]:
            for query in QUERIES:
                path = re.sub(r"{\w+}", name, endpoint.path) + "?" + query
                await send(app, "GET", path, headers=headers)


async def test_bodies_and_hosts(app: App, made: Made) -> None:
    await made.subscriber()
    for endpoint in client_endpoints():
        if endpoint.body is None:
            continue
        for body in BODIES:
            await send(
                app,
                endpoint.method,
                endpoint.path,
                data=body,
                headers={"Content-Type": "application/json", "Host": app.host or ""},
            )
        for host in HOSTS:
            await send(
                app,
                endpoint.method,
                endpoint.path,
                json={"phoneCountryCode": "7", "phone": "900"},
                headers={"Host": host},
            )


async def test_authorization_headers(app: App) -> None:
    for value in [
        "Bearer",
        "Bearer ",
        "bearer x",
        "Basic Zm9vOmJhcg==",
        "Bearer " + "a" * 7000,
        "Bearer \u00e9",
    ]:
        for endpoint in client_endpoints():
            if endpoint.auth is None:
                continue
            await send(
                app,
                endpoint.method,
                re.sub(r"{\w+}", "x", endpoint.path),
                headers={"Authorization": value.encode("latin-1", "replace").decode("latin-1")},
            )

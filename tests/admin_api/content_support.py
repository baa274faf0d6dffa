"""Helpers shared by the content API tests: images, staff sessions, operations, signals."""

from __future__ import annotations

import asyncio
import base64
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from catena import entitlements, ids
from tests.conftest import Api

PASSWORD = "Staff-Pass-123!"


def png(width: int = 2, height: int = 2, noise: bytes = b"") -> bytes:
    """A real PNG image (RGB, no filter); ``noise`` goes into a text chunk to vary or grow it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xff\x80\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    extra = chunk(b"tEXt", b"Comment\x00" + noise) if noise else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + extra
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


# The start of a baseline JPEG (SOI, APP0/JFIF) — what the magic-byte check looks at.
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 64 + b"\xff\xd9"
GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,"


def data_uri(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64," + base64.b64encode(data).decode()


async def login_staff(api: Api, email: str, **flags: bool) -> Api:
    """Create a manager with ``flags`` through the API and sign in as them."""
    status, body = await api.post(
        "/managers", {"email": email, "name": email.split("@")[0], "password": PASSWORD, **flags}
    )
    assert status == 200, body
    status, body = await api.as_(None).post("/login", {"email": email, "password": PASSWORD})
    assert status == 200, body
    return api.as_(body["portals"][0]["sessionId"])


def portal_id(portal: Any) -> int:
    value = ids.decode(portal.portalId)
    assert value is not None
    return value


async def operations_of(pool: asyncpg.Pool, portal: Any) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return list(
            await conn.fetch(
                "SELECT type, subscriber_id, package_id, payload FROM operations "
                "WHERE portal_id = $1 ORDER BY id",
                portal_id(portal),
            )
        )


async def op_types(pool: asyncpg.Pool, portal: Any) -> list[str]:
    return [row["type"] for row in await operations_of(pool, portal)]


class Signals:
    """Entitlement notifications received on a LISTEN connection."""

    def __init__(self) -> None:
        self.received: list[entitlements.Signal] = []
        self._arrived = asyncio.Event()

    def on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self.received.append(entitlements.decode(payload))
        self._arrived.set()

    async def wait_for(self, count: int) -> list[entitlements.Signal]:
        """The first ``count`` signals, waiting up to a few seconds for them to arrive."""
        async with asyncio.timeout(5):
            while len(self.received) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.received[:count]

    def kinds(self) -> list[tuple[str, list[int]]]:
        return [(s.kind, s.ids) for s in self.received]


@asynccontextmanager
async def listening(database_url: str) -> AsyncIterator[Signals]:
    """Collect ``catena_entitlements`` notifications while the block runs."""
    signals = Signals()
    conn = await asyncpg.connect(database_url)
    await conn.add_listener(entitlements.CHANNEL, signals.on_notify)
    try:
        yield signals
    finally:
        await conn.remove_listener(entitlements.CHANNEL, signals.on_notify)
        await conn.close()


async def entitlement_version(pool: asyncpg.Pool, portal: Any) -> int:
    async with pool.acquire() as conn:
        return await entitlements.current_version(conn, portal_id(portal))


@asynccontextmanager
async def fault(pool: asyncpg.Pool, table: str, event: str) -> AsyncIterator[None]:
    """Make every ``event`` (INSERT, UPDATE, DELETE) on ``table`` fail while the block runs."""
    async with pool.acquire() as conn:
        await conn.execute(
            "CREATE FUNCTION injected_fault() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'injected fault'; END $$"
        )
        await conn.execute(
            f"CREATE TRIGGER injected_fault BEFORE {event} ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION injected_fault()"
        )
    try:
        yield
    finally:
        async with pool.acquire() as conn:
            await conn.execute(f"DROP TRIGGER injected_fault ON {table}; DROP FUNCTION injected_fault()")

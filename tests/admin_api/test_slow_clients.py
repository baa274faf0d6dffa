"""Slow and abandoned requests against the admin API, with real slow sockets (issue 15 item 8).

Headers must arrive within ``CATENA_ADMIN_HEADER_TIMEOUT`` and a body within
``CATENA_ADMIN_BODY_TIMEOUT`` (else ``408`` and the connection closes); an address
may hold at most ``CATENA_ADMIN_UNAUTHENTICATED_CONNECTIONS`` connections that have
not authenticated; a client that goes away is a debug line, not a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import msgspec
import pytest

from catena.portals import CreatedPortal
from catena.settings import AdminSettings
from tests.conftest import BASE, AdminTestServer

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
CAP = 4
# Longer than any deadline above: a read that waits this long means the server held on.
HELD = 8.0


@pytest.fixture
async def server(admin_settings: AdminSettings, portal: CreatedPortal) -> AsyncIterator[AdminTestServer]:
    from admin_api.app import create_app

    settings = msgspec.structs.replace(
        admin_settings,
        admin_header_timeout=HEADER_TIMEOUT,
        admin_body_timeout=BODY_TIMEOUT,
        admin_unauthenticated_connections=CAP,
    )
    running = AdminTestServer(create_app(settings), host="127.0.0.1")
    await running.start_server()
    yield running
    await Raw.close_all()
    await running.close()


class Raw:
    """A TCP client that sends exactly the bytes it is told to, when it is told to."""

    opened: ClassVar[list[Raw]] = []

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, server: AdminTestServer) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        client = cls(reader, writer)
        cls.opened.append(client)
        return client

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, within: float = HELD) -> tuple[int, dict[str, str], bytes] | None:
        """The status, headers and body of the answer, or ``None`` when none came in time."""
        try:
            async with asyncio.timeout(within):
                head = await self.reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
                length = int(headers.get("Content-Length", "0"))
                body = await self.reader.readexactly(length) if length else b""
                return int(lines[0].split()[1]), headers, body
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            return None

    async def closed_by_server(self, within: float = HELD) -> bool:
        try:
            async with asyncio.timeout(within):
                while await self.reader.read(1024):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        return True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    @classmethod
    async def close_all(cls) -> None:
        for client in cls.opened:
            client.close()
            with contextlib.suppress(Exception):
                await client.writer.wait_closed()
        cls.opened.clear()


def error_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_headers_that_never_finish_get_408(server: AdminTestServer, caplog: Any) -> None:
    client = await Raw.open(server)
    await client.send(b"GET /tv-management/api/v1/portal HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    answer = await client.answer()
    print(f"half-sent headers answered after {time.monotonic() - started:.1f} s: {answer}")
    assert answer is not None, "the server held a half-sent request"
    status, headers, body = answer
    assert status == 408 and msgspec.json.decode(body)["error"] == "request_timeout"
    assert await client.closed_by_server(2.0)
    assert error_lines(caplog) == []


async def test_headers_trickled_byte_by_byte_get_408(server: AdminTestServer) -> None:
    client = await Raw.open(server)
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n"

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            for byte in request:
                await client.send(bytes([byte]))
                await asyncio.sleep(0.05)

    sending = asyncio.create_task(trickle())
    answer = await client.answer()
    sending.cancel()
    assert answer is not None and answer[0] == 408


async def test_a_connection_that_sends_nothing_is_closed(server: AdminTestServer) -> None:
    client = await Raw.open(server)
    answer = await client.answer()
    assert answer is not None and answer[0] == 408
    assert await client.closed_by_server(2.0)


async def test_a_body_that_never_finishes_gets_408(
    server: AdminTestServer, portal: CreatedPortal, caplog: Any
) -> None:
    client = await Raw.open(server)
    await client.send(
        f"POST {BASE}/packages HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {portal.apiKey}\r\n"
        'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"name": "sl'.encode()
    )
    answer = await client.answer()
    assert answer is not None, "the server held a half-sent body"
    assert answer[0] == 408 and msgspec.json.decode(answer[2])["error"] == "request_timeout"
    assert await client.closed_by_server(2.0)
    assert error_lines(caplog) == []


async def test_a_client_that_leaves_mid_body_is_a_debug_line(
    server: AdminTestServer, portal: CreatedPortal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="admin_api")
    for _ in range(20):
        client = await Raw.open(server)
        await client.send(
            f"POST {BASE}/packages HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {portal.apiKey}\r\n"
            'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"na'.encode()
        )
        await asyncio.sleep(0.05)
        client.close()
    await asyncio.sleep(0.5)
    assert error_lines(caplog) == []
    assert any("client disconnected" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)


async def test_unauthenticated_connections_per_address_are_capped(
    server: AdminTestServer, portal: CreatedPortal
) -> None:
    # An authenticated keep-alive connection first: it does not count.
    billing = await Raw.open(server)
    portal_request = (
        f"GET {BASE}/portal HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {portal.apiKey}\r\n\r\n".encode()
    )
    await billing.send(portal_request)
    assert (await billing.answer(5.0) or (0,))[0] == 200
    idle = [await Raw.open(server) for _ in range(CAP)]
    await asyncio.sleep(0.1)
    extra = await Raw.open(server)
    answer = await extra.answer(5.0)
    assert answer is not None and answer[0] == 429, answer
    assert msgspec.json.decode(answer[2])["error"] == "too_many_connections"
    # The authenticated connection still works, and a freed slot is taken again.
    await billing.send(portal_request)
    assert (await billing.answer(5.0) or (0,))[0] == 200
    idle.pop().close()
    await asyncio.sleep(0.2)
    again = await Raw.open(server)
    await again.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await again.answer(5.0) or (0,))[0] in (200, 503)
    for client in [*idle, again, billing, extra]:
        client.close()


async def test_settings_are_validated() -> None:
    from catena.settings import SettingsError, load

    settings = load(AdminSettings, environ={})
    assert (settings.admin_header_timeout, settings.admin_body_timeout) == (10.0, 60.0)
    assert settings.admin_unauthenticated_connections == 64
    with pytest.raises(SettingsError, match="CATENA_ADMIN_HEADER_TIMEOUT"):
        load(AdminSettings, environ={"CATENA_ADMIN_HEADER_TIMEOUT": "-1"})

"""The HTTP server: keep-alive, pipelining, bodies, limits, timeouts, bad input, fuzzing."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time

import msgspec
import pytest

from .conftest import Gateway, Launcher, Portal, Sub, World

pytestmark = pytest.mark.slow

STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ")


@pytest.fixture(scope="module")
async def server(launcher: Launcher) -> Gateway:
    """A gateway with small limits, so that tests can cross them quickly."""
    return await launcher.start(
        auth_max_header_bytes=8192, auth_max_body_bytes=65536, auth_idle_timeout=2, auth_request_timeout=2
    )


@pytest.fixture
async def viewer(world: World) -> tuple[Portal, Sub]:
    portal = await world.portal(maxSessions=50)
    await world.package(portal, "basic")
    await world.channel(portal, "sport", ["basic"])
    return portal, await world.subscriber(portal, ["basic"])


class Raw:
    """A raw TCP connection to the gateway."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, gateway: Gateway) -> Raw:
        return cls(*await asyncio.open_connection("127.0.0.1", gateway.port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, timeout: float = 10.0) -> tuple[int, dict[bytes, bytes], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        status = int(head[9:12])
        headers = dict(
            (k.strip().lower(), v.strip())
            for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)
        )
        body = await self.reader.readexactly(int(headers.get(b"content-length", b"0")))
        return status, headers, body

    async def closed(self, timeout: float = 10.0) -> bool:
        """Whether the server closes the connection (EOF) within ``timeout``."""
        try:
            rest = await asyncio.wait_for(self.reader.read(), timeout)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
        finally:
            self.close()
        return rest == b""

    def close(self) -> None:
        self.writer.close()

    async def __aenter__(self) -> Raw:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def auth_get(sub: Sub, session: str, extra: str = "", close: bool = False) -> bytes:
    connection = b"Connection: close\r\n" if close else b""
    return (
        (
            f"GET /auth?name=sport&session_id={session}&token={sub.token}{extra} HTTP/1.1\r\nHost: gw\r\n"
        ).encode()
        + connection
        + b"\r\n"
    )


async def test_keep_alive_and_pipelining_answer_in_order(server: Gateway, viewer: tuple[Portal, Sub]) -> None:
    _, sub = viewer
    raw = await Raw.open(server)
    # New sessions wait for Redis, known ones do not: the answers must still come in order.
    pipeline = b"".join(auth_get(sub, f"p-{i % 3}") for i in range(9))
    pipeline += b"GET /auth?name=nosuch&session_id=x&token=" + sub.token.encode() + b" HTTP/1.1\r\n\r\n"
    await raw.send(pipeline)
    answers = [await raw.response() for _ in range(10)]
    assert [a[0] for a in answers] == [200] * 9 + [403]
    assert msgspec.json.decode(answers[-1][2])["error"] == "unknown_channel"
    await raw.send(auth_get(sub, "p-0", close=True))
    status, headers, _ = await raw.response()
    assert status == 200 and headers[b"connection"] == b"close"
    assert await raw.closed()


async def test_http_10_closes_after_the_answer(server: Gateway, viewer: tuple[Portal, Sub]) -> None:
    _, sub = viewer
    raw = await Raw.open(server)
    await raw.send(f"GET /auth?name=sport&session_id=h10&token={sub.token} HTTP/1.0\r\n\r\n".encode())
    assert (await raw.response())[0] == 200
    assert await raw.closed()


async def test_post_bodies_with_content_length_and_chunked(
    server: Gateway,
    viewer: tuple[Portal, Sub],
) -> None:
    _, sub = viewer
    body = msgspec.json.encode({"name": "sport", "session_id": "chunky", "token": sub.token})
    raw = await Raw.open(server)
    await raw.send(b"POST /auth HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    assert (await raw.response())[0] == 200
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7]) for i in range(0, len(body), 7)
    )
    await raw.send(b"POST /auth HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
    assert (await raw.response())[0] == 200
    await raw.send(b"POST /auth HTTP/1.1\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body))
    assert (await raw.response())[0] == 100
    await raw.send(body)
    assert (await raw.response())[0] == 200
    raw.close()


async def test_too_large_headers_are_431_and_close(server: Gateway) -> None:
    raw = await Raw.open(server)
    await raw.send(b"GET /auth?name=x HTTP/1.1\r\n" + b"X-Filler: " + b"a" * 100_000 + b"\r\n\r\n")
    status, headers, body = await raw.response()
    assert status == 431 and msgspec.json.decode(body)["error"] == "headers_too_large"
    assert headers[b"connection"] == b"close" and await raw.closed()


@pytest.mark.parametrize("chunked", [False, True])
async def test_too_large_bodies_are_413_and_close(server: Gateway, chunked: bool) -> None:
    raw = await Raw.open(server)
    big = b"x" * (10 * 1024 * 1024)
    if chunked:
        head = b"POST /events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunks = (b"10000\r\n" + big[i : i + 65536] + b"\r\n" for i in range(0, 4 * 65536, 65536))
        payload = head + b"".join(chunks)
    else:
        payload = b"POST /events HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(big) + big[:65536]
    with_reset = False
    try:
        await raw.send(payload)
    except (ConnectionResetError, BrokenPipeError):
        with_reset = True
    if not with_reset:
        status, _, body = await raw.response()
        assert status == 413 and msgspec.json.decode(body)["error"] == "body_too_large"
        assert await raw.closed()


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x01\x02\x03\r\n\r\n",
        b"GET /auth HTTP/9.9\r\n\r\n",
        b"BREW /auth HTTP/1.1\r\n\r\n",
        b"GET /auth HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"GET /auth HTTP/1.1\r\nBad Header Without Colon\r\n\r\n",
        b"POST /auth HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
async def test_malformed_requests_are_400_and_close(server: Gateway, garbage: bytes) -> None:
    raw = await Raw.open(server)
    await raw.send(garbage)
    status, _, body = await raw.response()
    assert status == 400 and msgspec.json.decode(body)["error"] == "bad_request"
    assert await raw.closed()


async def test_upgrade_offers_are_answered_in_http_1_1_then_closed(server: Gateway) -> None:
    raw = await Raw.open(server)
    await raw.send(
        b"GET /health HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x85garbage"
    )
    status, headers, _ = await raw.response()
    assert status == 200 and headers[b"connection"] == b"close"
    assert await raw.closed()


async def test_half_sent_request_times_out_with_408(server: Gateway) -> None:
    raw = await Raw.open(server)
    await raw.send(b"GET /auth?name=sport&sess")
    started = time.monotonic()
    status, _, _ = await raw.response(timeout=10)
    assert status == 408 and time.monotonic() - started < 6
    assert await raw.closed()


async def test_idle_connections_are_closed(server: Gateway) -> None:
    raw = await Raw.open(server)
    await raw.send(b"GET /health HTTP/1.1\r\n\r\n")
    assert (await raw.response())[0] == 200
    assert await raw.closed(timeout=8)


async def test_unknown_paths_and_methods(server: Gateway) -> None:
    assert (await server.request("GET", "/nope"))[0] == 404
    assert (await server.request("DELETE", "/auth"))[0] == 405
    assert (await server.request("GET", "/events"))[0] == 405


async def test_a_client_vanishing_mid_request_harms_nobody(
    server: Gateway,
    viewer: tuple[Portal, Sub],
) -> None:
    _, sub = viewer
    for _ in range(20):
        raw = await Raw.open(server)
        await raw.send(auth_get(sub, "gone")[:30])
        raw.writer.transport.abort()
    assert (await server.auth(sub, "sport", session="after")).status == 200


async def test_fuzz_random_bytes_and_query_strings(server: Gateway, viewer: tuple[Portal, Sub]) -> None:
    """Ten seconds of random input; never a 500, and valid checks stay right throughout."""
    _, sub = viewer
    rng = random.Random(20241016)
    fields = [
        "name",
        "session_id",
        "token",
        "request_type",
        "bytes",
        "dvr",
        "media_request",
        "qs",
        "ip",
        "portal",
        "user_agent",
        "duration",
        "x",
    ]
    values = [
        sub.token,
        "sport",
        "update_session",
        "new_session",
        "true",
        "%",
        "%zz",
        "%00",
        "\u00e9",
        "-1",
        "9" * 40,
        "a" * 3000,
        "",
        "=",
        "&&",
        "dvr_session-x-1-2",
        "BVR0q48AAAA.",
    ]
    deadline = time.monotonic() + 10.0
    statuses: dict[int, int] = {}
    rounds = 0
    while time.monotonic() < deadline:
        rounds += 1
        raw = await Raw.open(server)
        try:
            if rng.random() < 0.5:
                await raw.send(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 600))) + b"\r\n\r\n")
            else:
                pairs = (f"{rng.choice(fields)}={rng.choice(values)}" for _ in range(rng.randint(0, 12)))
                query = "&".join(pairs)
                target = "".join(c if c.isascii() and c.isprintable() and c != " " else "%41" for c in query)
                await raw.send(f"GET /auth?{target} HTTP/1.1\r\n\r\n".encode())
            status = (await raw.response(timeout=10))[0]
            statuses[status] = statuses.get(status, 0) + 1
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError):
            statuses[0] = statuses.get(0, 0) + 1  # closed without an answer: allowed for garbage
        finally:
            raw.close()
        if rounds % 50 == 0:
            assert (await server.auth(sub, "sport", session="fuzz-check")).status == 200
    assert not any(500 <= status for status in statuses), statuses
    assert statuses.get(400, 0) > 0 and statuses.get(403, 0) > 0
    assert (await server.auth(sub, "sport", session="fuzz-check")).status == 200
    status, _, body = await server.request("GET", "/health")
    assert status == 200 and msgspec.json.decode(body)["status"] == "ok"


async def test_metrics_report_answers_latency_and_caches(server: Gateway, viewer: tuple[Portal, Sub]) -> None:
    _, sub = viewer
    await server.auth(sub, "sport", session="m-1")
    await server.auth(sub, "nosuch", session="m-2")
    status, headers, text = await server.request("GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    body = text.decode()
    for needle in (
        'authgate_requests_total{worker="0",status="200",reason="allowed"}',
        'authgate_requests_total{worker="0",status="403",reason="unknown_channel"}',
        "authgate_request_seconds_bucket",
        "authgate_token_cache_misses_total",
        "authgate_redis_cache_hits_total",
        "authgate_redis_round_trips_total",
        "authgate_record_batch_rows_total",
        "authgate_spool_bytes",
        "authgate_sessions_tracked",
    ):
        assert needle in body, needle

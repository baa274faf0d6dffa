"""The private parts of aiohttp and redis-py that Catena uses still work.

Each test names the module to fix: an upgrade that moves one of them fails here,
loudly, rather than in production.
"""

from __future__ import annotations

import asyncio
import inspect

import aiohttp
import pytest
import redis
from aiohttp import web

from catena import private_aiohttp, private_redis

AIOHTTP = f"aiohttp {aiohttp.__version__} changed what catena/private_aiohttp.py relies on"
REDIS = f"redis-py {redis.__version__} changed what catena/private_redis.py relies on"


class _Marked(web.RequestHandler):
    """Answers requests aiohttp cannot parse with a status no default handler sends."""

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:  # fmt: skip
        return web.Response(status=418, text="custom handler")


async def test_aiohttp_runner_hook_and_server_attributes_exist() -> None:
    assert inspect.iscoroutinefunction(getattr(web.BaseRunner, "_make_server", None)), AIOHTTP

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response()

    server = web.Server(answer, debug=True)
    assert server._loop is asyncio.get_running_loop(), AIOHTTP
    assert server._kwargs == {"debug": True}, AIOHTTP
    copy = private_aiohttp.server_making(server, _Marked)
    assert isinstance(copy(), _Marked), AIOHTTP
    assert copy.request_handler is server.request_handler, AIOHTTP


async def test_aiohttp_unparsable_requests_reach_our_handler_class(unused_tcp_port: int) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = private_aiohttp.AppRunner(app, handler_class=_Marked, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
        reader, writer = await asyncio.open_connection("127.0.0.1", unused_tcp_port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        status_line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        assert status_line.split(b" ")[1] == b"418", (AIOHTTP, status_line)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis://user:pw@cache.example:6380/3",
            {
                "host": "cache.example",
                "port": 6380,
                "username": "user",
                "password": "pw",
                "db": 3,
                "tls": False,
            },
        ),
        (
            "rediss://cache.example?ssl_cert_reqs=none&ssl_ca_certs=/etc/ca.pem",
            {"host": "cache.example", "ssl_cert_reqs": "none", "ssl_ca_certs": "/etc/ca.pem", "tls": True},
        ),
        (
            "unix:///run/redis.sock?db=2&password=pw",
            {"path": "/run/redis.sock", "db": 2, "password": "pw", "tls": False},
        ),
    ],
)
def test_redis_url_options(url: str, expected: dict[str, object]) -> None:
    options = private_redis.url_options(url)
    assert {k: v for k, v in options.items() if v is not None} == expected, REDIS

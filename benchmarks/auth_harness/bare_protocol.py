"""Baseline (e): a bare uvloop ``asyncio.Protocol`` with the httptools parser.

It answers every request with the same constant ``200``, honouring keep-alive and
pipelining, so it is the ceiling any Python server on uvloop can reach here.

    python -m benchmarks.auth_harness.bare_protocol --port 8152
"""

from __future__ import annotations

import asyncio
from typing import cast

import httptools
import uvloop

from . import _serving

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nX-AuthDuration: 180\r\n\r\nok"
)
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class ConstantProtocol(asyncio.Protocol):
    """One connection: parse requests as they arrive, answer each with RESPONSE."""

    __slots__ = ("parser", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(BAD_REQUEST)
            self.transport.close()

    def on_message_complete(self) -> None:
        assert self.transport is not None
        self.transport.write(RESPONSE)
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(ConstantProtocol, host, port, reuse_port=True, backlog=1024)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    args = _serving.arguments(__doc__.splitlines()[0]).parse_args(argv)
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()

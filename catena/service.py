"""Running a service process: uvloop, signals, a clean stop."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import uvloop
from aiohttp import web


async def wait_for_stop_signal() -> None:
    """Return when SIGTERM or SIGINT arrives."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


class AppRunner(web.AppRunner):
    """aiohttp's ``AppRunner`` whose connections are handled by ``handler_class``.

    aiohttp answers a request it cannot parse inside its connection handler, before
    the application sees it, and has no hook for that answer (aio-libs/aiohttp#3287);
    a ``web.RequestHandler`` subclass overriding ``handle_error`` is the one way to
    answer it otherwise.  Connection handlers are made by the runner's ``Server``, so
    this runner builds one that makes ``handler_class``.
    """

    def __init__(
        self,
        app: web.Application,
        *,
        handler_class: type[web.RequestHandler] = web.RequestHandler,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self.handler_class = handler_class

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _Server(server, self.handler_class)


class _Server(web.Server):
    """A copy of aiohttp's ``Server`` (same handler, factory and options) making ``handler_class``."""

    def __init__(self, server: web.Server, handler_class: type[web.RequestHandler]) -> None:
        super().__init__(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )
        self.handler_class = handler_class

    def __call__(self) -> web.RequestHandler:
        return self.handler_class(self, loop=self._loop, **self._kwargs)


async def serve_app(
    app: web.Application,
    host: str,
    port: int,
    handler_class: type[web.RequestHandler] = web.RequestHandler,
) -> None:
    """Serve ``app`` until SIGTERM/SIGINT, then run its cleanup (flushes, closes pools)."""
    runner = AppRunner(app, handler_class=handler_class, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=True).start()
        await wait_for_stop_signal()
    finally:
        await runner.cleanup()


def run_app(
    app: web.Application,
    host: str,
    port: int,
    handler_class: type[web.RequestHandler] = web.RequestHandler,
) -> None:
    """Run ``app`` on uvloop in this process until it is told to stop."""
    uvloop.run(serve_app(app, host, port, handler_class))

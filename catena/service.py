"""Running a service process: uvloop, signals, a clean stop.

``AppRunner`` (re-exported) comes from :mod:`catena.private_aiohttp`, the one place
that touches aiohttp's private parts.
"""

from __future__ import annotations

import asyncio
import signal

import uvloop
from aiohttp import web

from .private_aiohttp import AppRunner as AppRunner


async def wait_for_stop_signal() -> None:
    """Return when SIGTERM or SIGINT arrives."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


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

"""Running a service process: uvloop, signals, a clean stop."""

from __future__ import annotations

import asyncio
import signal

import uvloop
from aiohttp import web


async def wait_for_stop_signal() -> None:
    """Return when SIGTERM or SIGINT arrives."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


async def serve_app(app: web.Application, host: str, port: int) -> None:
    """Serve ``app`` until SIGTERM/SIGINT, then run its cleanup (flushes, closes pools)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=True).start()
        await wait_for_stop_signal()
    finally:
        await runner.cleanup()


def run_app(app: web.Application, host: str, port: int) -> None:
    """Run ``app`` on uvloop in this process until it is told to stop."""
    uvloop.run(serve_app(app, host, port))

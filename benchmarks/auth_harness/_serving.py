"""What the harness's aiohttp servers share: arguments and a run loop on uvloop."""

from __future__ import annotations

import argparse
import asyncio

import uvloop
from aiohttp import web


def arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    return parser


def run(app: web.Application, host: str, port: int) -> None:
    """Serve ``app`` on uvloop until the process is killed, without access logging."""
    uvloop.run(_serve(app, host, port))


async def _serve(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_port=True, backlog=1024).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()

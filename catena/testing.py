"""Test support shared by the tests, the benchmarks and the load tests.

Scratch databases (create, migrate, drop), free loopback ports, database-URL
rewriting, and starting a service process and waiting until it answers.  It lives
in the package rather than in ``tests/`` because ``benchmarks/`` and ``loadtests/``
need it too and depend on ``catena`` only, never on the test suite; it imports
nothing but the standard library, asyncpg and aiohttp (runtime dependencies), so the
wheel carries it at no cost and the services never import it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg

from catena import db, migrations

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A loopback TCP port nothing listens on now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def replace_database(url: str, name: str) -> str:
    """``url`` with its database name replaced (keeps ``?host=`` of socket URLs)."""
    head, sep, query = url.partition("?")
    scheme, _, rest = head.partition("://")
    authority = rest.split("/", 1)[0]
    return f"{scheme}://{authority}/{name}{sep}{query}"


async def create_database(server_url: str, name: str, *, migrate: bool = False) -> str:
    """Create database ``name`` on ``server_url``'s server (every migration applied
    when ``migrate``); returns its URL."""
    await _on_server(server_url, f'CREATE DATABASE "{name}"')
    url = replace_database(server_url, name)
    if migrate:
        conn = await db.connect(url)
        try:
            await migrations.apply(conn)
        finally:
            await conn.close()
    return url


async def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name``, closing whatever is still connected to it."""
    await _on_server(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _on_server(server_url: str, statement: str) -> None:
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


@asynccontextmanager
async def scratch_database(
    server_url: str, prefix: str = "catena_scratch_", *, migrate: bool = False, keep: bool = False
) -> AsyncIterator[str]:
    """The URL of a database made for the block, dropped after it unless ``keep``."""
    name = prefix + secrets.token_hex(4)
    url = await create_database(server_url, name, migrate=migrate)
    try:
        yield url
    finally:
        if not keep:
            await drop_database(server_url, name)


def service_env(variables: Mapping[str, str], inherit: str = "CATENA_BENCH_") -> dict[str, str]:
    """This process's environment without names starting with ``inherit`` (a service
    refuses ``CATENA_*`` names it does not read), plus ``variables``."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(inherit)}
    return kept | dict(variables)


def start_service(module: str, env: Mapping[str, str], cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    """``python -m module`` with exactly ``env``."""
    return subprocess.Popen([sys.executable, "-m", module], cwd=cwd, env=dict(env))


async def wait_healthy(
    origin: str,
    process: subprocess.Popen[bytes] | None = None,
    *,
    ready: tuple[int, ...] = (200,),
    timeout: float = 30.0,
) -> None:
    """Poll ``origin``/health until it answers one of ``ready``; SystemExit when
    ``process`` exits first or nothing answers within ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as session:
        while asyncio.get_running_loop().time() < deadline:
            if process is not None and process.poll() is not None:
                raise SystemExit(f"{origin}: the service exited with {process.returncode}")
            if await _answers(session, origin + "/health", ready):
                return
            await asyncio.sleep(0.1)
    raise SystemExit(f"{origin}: the service did not become healthy")


async def _answers(session: aiohttp.ClientSession, url: str, ready: tuple[int, ...]) -> bool:
    try:
        async with session.get(url) as response:
            return response.status in ready
    except aiohttp.ClientError:
        return False


def bench_arguments(description: str | None) -> argparse.ArgumentParser:
    """A benchmark's parser, its docstring as help, with the servers it runs on:
    ``--database-url`` and ``--redis-url`` (``$CATENA_BENCH_*``, else the local ones)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("CATENA_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("CATENA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/1")
    )
    return parser

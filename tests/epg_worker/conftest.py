"""Fixtures of the EPG worker tests: a guide server, sources, a worker to run jobs.

Sources are created with SQL and updates are requested with ``jobs.enqueue`` exactly
as ``POST /epg-sources/{id}/update`` does, so these tests do not depend on the
Management API.  The guide server is a real HTTP server on 127.0.0.1 that the test
fills with files and misbehaviours.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import aiohttp
import asyncpg
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from catena import ids, jobs
from catena.settings import AdminSettings, EpgSettings, load
from epg_worker import app as worker_app
from epg_worker import fetcher
from epg_worker.scheduler import KIND, Worker

LOOPBACK = "127.0.0.0/8,::1/128"


@dataclass
class Served:
    body: bytes
    etag: str | None = None
    last_modified: str | None = None
    content_type: str = "application/xml"


@dataclass
class GuideServer:
    """Files by path, plus routes that misbehave; remembers every request's headers."""

    server: TestServer
    files: dict[str, Served] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    stall_after: bytes = b"<?xml version='1.0'?>\n<tv>\n"

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    def put(self, path: str, body: bytes, **kwargs: Any) -> str:
        self.files[path] = Served(body, **kwargs)
        return self.url(path)

    def headers_of(self, path: str) -> list[dict[str, str]]:
        return [headers for p, headers in self.requests if p == path]


def _routes(guides: GuideServer) -> web.Application:
    async def serve(request: web.Request) -> web.StreamResponse:
        guides.requests.append((request.path, dict(request.headers)))
        served = guides.files.get(request.path)
        if served is None:
            raise web.HTTPNotFound(text="no such guide")
        headers = {}
        if served.etag:
            headers["ETag"] = served.etag
            if request.headers.get("If-None-Match") == served.etag:
                return web.Response(status=304, headers=headers)
        if served.last_modified:
            headers["Last-Modified"] = served.last_modified
        return web.Response(body=served.body, headers=headers, content_type=served.content_type)

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="<html>server error</html>")

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def hop(request: web.Request) -> web.Response:
        left = int(request.match_info["n"])
        raise web.HTTPFound(f"/hop/{left - 1}" if left > 1 else "/guide.xml")

    async def stall(request: web.Request) -> web.StreamResponse:
        # Sends the start of a guide, then nothing, keeping the connection open.
        response = web.StreamResponse(headers={"Content-Type": "application/xml"})
        await response.prepare(request)
        await response.write(guides.stall_after)
        await asyncio.sleep(3600)
        return response

    async def short(request: web.Request) -> web.StreamResponse:
        # Announces more bytes than it sends, then closes the connection.
        response = web.StreamResponse(headers={"Content-Length": "100000"})
        await response.prepare(request)
        await response.write(b"<?xml version='1.0'?>\n<tv>\n")
        request.transport.close()  # type: ignore[union-attr]
        return response

    application = web.Application()
    application.router.add_get("/status/{code}", status)
    application.router.add_get("/loop", loop)
    application.router.add_get("/hop/{n}", hop)
    application.router.add_get("/stall", stall)
    application.router.add_get("/short", short)
    application.router.add_get("/{path:.*}", serve)
    return application


@pytest.fixture
async def guides() -> AsyncIterator[GuideServer]:
    holder = GuideServer(server=None)  # type: ignore[arg-type]
    server = TestServer(_routes(holder), host="127.0.0.1")
    await server.start_server()
    holder.server = server
    yield holder
    await server.close()


@pytest.fixture
def epg_settings(database_url: str, tmp_path: Path) -> EpgSettings:
    return load(
        EpgSettings,
        environ={},
        database_url=database_url,
        var_dir=str(tmp_path),
        database_pool_size=4,
        epg_connect_timeout=2.0,
        epg_read_timeout=1.0,
        epg_total_timeout=20.0,
        epg_job_timeout=60.0,
        epg_heartbeat_interval=0.2,
        epg_progress_interval=0.1,
        epg_poll_interval=0.1,
        epg_schedule_interval=0.1,
        epg_max_redirects=3,
        # The guide server listens on 127.0.0.1: this deployment allows loopback.
        outbound_allow=LOOPBACK,
    )


@pytest.fixture
def admin_settings(admin_settings: AdminSettings) -> AdminSettings:
    """Sources made through the Management API point at the guide server on 127.0.0.1."""
    return msgspec.structs.replace(admin_settings, outbound_allow=LOOPBACK)


@pytest.fixture
async def session(epg_settings: EpgSettings) -> AsyncIterator[aiohttp.ClientSession]:
    """The session the worker process uses (``catena.outbound``'s guard, loopback allowed)."""
    async with fetcher.client_session(epg_settings) as client:
        yield client


@pytest.fixture
async def make_worker(
    epg_settings: EpgSettings, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> AsyncIterator[Callable[..., Any]]:
    """Workers sharing the test database; each has its own name, like separate processes."""
    made: list[Worker] = []

    async def make(name: str | None = None, **overrides: Any) -> Worker:
        settings = epg_settings
        if overrides:
            settings = load(EpgSettings, environ={}, **{**_fields(epg_settings), **overrides})
        worker = await worker_app.start_worker(settings, pool, session)
        worker.ctx.worker = name or f"test-worker-{len(made) + 1}"
        made.append(worker)
        return worker

    yield make
    for worker in made:
        await worker.stop()


def _fields(settings: EpgSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__struct_fields__}


@pytest.fixture
async def worker(make_worker: Callable[..., Any]) -> Worker:
    result: Worker = await make_worker()
    return result


@dataclass
class Sources:
    """EPG sources of one portal, created and updated the way the Management API does."""

    pool: asyncpg.Pool
    portal_id: int

    async def create(self, url: str, name: str | None = None, **columns: Any) -> int:
        source_id = ids.new_id()
        names = ["id", "portal_id", "name", "url", *columns]
        values = [source_id, self.portal_id, name or f"src-{source_id}", url, *columns.values()]
        marks = ", ".join(f"${n}" for n in range(1, len(values) + 1))
        await self.pool.execute(f"INSERT INTO epg_sources ({', '.join(names)}) VALUES ({marks})", *values)
        return source_id

    async def request_update(self, source_id: int) -> int:
        async with self.pool.acquire() as conn:
            return await jobs.enqueue(conn, KIND, self.portal_id, source_id)

    async def update(self, worker: Worker, source_id: int) -> asyncpg.Record:
        """Request an update, let ``worker`` run it, return the finished fetch record."""
        await self.request_update(source_id)
        await run_queued(worker)
        return await self.last_fetch(source_id)

    async def last_fetch(self, source_id: int) -> asyncpg.Record:
        row = await self.pool.fetchrow(
            "SELECT f.* FROM epg_fetches f JOIN epg_sources s ON s.last_fetch_id = f.id WHERE s.id = $1",
            source_id,
        )
        assert row is not None, "the source has no last fetch"
        return row

    async def programmes(self, source_id: int) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(
            "SELECT * FROM epg_programs WHERE epg_source_id = $1 ORDER BY epg_channel_name, start_at",
            source_id,
        )
        return rows


async def run_queued(worker: Worker) -> None:
    """Let ``worker`` claim what is queued and wait until those updates end."""
    await worker.claim_all()
    while worker.running:
        await asyncio.gather(*list(worker.running))


@pytest.fixture
async def sources(pool: asyncpg.Pool, portal: Any) -> Sources:
    return Sources(pool, ids.decode(portal.portalId) or 0)


# -- XMLTV documents -------------------------------------------------------------

NOW = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)


def stamp(moment: dt.datetime, offset: str = "+0000") -> str:
    shift = dt.timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
    local = moment + shift if offset[0] == "+" else moment - shift
    return local.strftime("%Y%m%d%H%M%S") + " " + offset


@dataclass
class Prog:
    channel: str | None
    start: str | None
    stop: str | None
    title: str | None
    desc: str | None = None
    categories: tuple[str, ...] = ()
    rating: str | None = None
    lang: str | None = "ru"

    def xml(self) -> str:
        attrs = "".join(
            f" {name}={quoteattr(value)}"
            for name, value in (("start", self.start), ("stop", self.stop), ("channel", self.channel))
            if value is not None
        )
        parts = [f"<programme{attrs}>"]
        if self.title is not None:
            lang = f" lang={quoteattr(self.lang)}" if self.lang else ""
            parts.append(f"<title{lang}>{escape(self.title)}</title>")
        if self.desc is not None:
            parts.append(f"<desc>{escape(self.desc)}</desc>")
        parts.extend(f"<category>{escape(c)}</category>" for c in self.categories)
        if self.rating is not None:
            parts.append(f'<rating system="RU"><value>{escape(self.rating)}</value></rating>')
        parts.append("</programme>")
        return "".join(parts)


def schedule(channels: list[str], hours: int, first: dt.datetime | None = None, tag: str = "") -> list[Prog]:
    """Hour-long programmes back to back on each channel, starting at ``first``."""
    first = first or NOW
    programmes = []
    for channel in channels:
        for hour in range(hours):
            start = first + dt.timedelta(hours=hour)
            programmes.append(
                Prog(
                    channel=channel,
                    start=stamp(start, "+0300"),
                    stop=stamp(start + dt.timedelta(hours=1), "+0300"),
                    title=f"Передача {hour} {tag}".strip(),
                    desc=f"Описание «{channel}» №{hour}",
                    categories=("Новости", "News"),
                    rating="16+",
                )
            )
    return programmes


def document(programmes: list[Prog], channels: list[str] | None = None) -> bytes:
    names = channels if channels is not None else sorted({p.channel for p in programmes if p.channel})
    head = "".join(
        f"<channel id={quoteattr(c)}><display-name>{escape(c)}</display-name></channel>" for c in names
    )
    body = "\n".join(p.xml() for p in programmes)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<tv>\n{head}\n{body}\n</tv>\n'.encode()


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data)


def generated(channels: int, days: int, seed: int = 1) -> bytes:
    """A realistic guide from the benchmark generator (~440 bytes a programme)."""
    import io

    from benchmarks import xmltv_gen

    out = io.StringIO()
    first = dt.datetime.combine(NOW.date(), dt.time(), tzinfo=dt.UTC)
    xmltv_gen.write(out, channels, days, first, seed)
    return out.getvalue().encode()


@pytest.fixture(scope="session")
def big_guide() -> bytes:
    """About 40,000 programmes (~18 MB): an import that takes a few seconds."""
    return generated(200, 7)

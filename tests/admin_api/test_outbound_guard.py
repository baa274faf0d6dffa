"""Tenants cannot aim our servers inward (issue 15 item 3): EPG sources, webhooks, SMS gateways.

Each attack is sent for real against the running services: a URL on 127.0.0.1 (where
a real "internal" server listens) is refused when it is stored, and a URL stored
before the guard existed (written with SQL here) is refused when the service
connects, with a message that neither echoes the internal server's answer nor tells
an open port from a closed one.  ``CATENA_OUTBOUND_ALLOW`` stays at its default
(``none``) in these tests; the last ones set it to reach the loopback server.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from catena import ids, jobs
from catena.portals import CreatedPortal
from catena.settings import AdminSettings, EpgSettings, load
from epg_worker import app as worker_app
from tests.conftest import AdminTestServer, Api

INTERNAL_GUIDE = (
    b"<?xml version='1.0'?>\n<tv><channel id='secret'><display-name>S</display-name></channel>"
    b"<programme start='20300101000000 +0000' stop='20300101010000 +0000' channel='secret'>"
    b"<title>internal-only-secret</title></programme></tv>\n"
)


class Internal:
    """An "internal" service on 127.0.0.1: an XMLTV file, a metrics page, a webhook sink."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        if request.path == "/guide.xml":
            return web.Response(body=INTERNAL_GUIDE, content_type="application/xml")
        return web.Response(text="# HELP internal_secret_metric 42\n", status=200)

    def url(self, path: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(path))


@pytest.fixture
async def internal() -> AsyncIterator[Internal]:
    service = Internal()
    application = web.Application()
    application.router.add_route("*", "/{tail:.*}", service.handle)
    service.server = TestServer(application, host="127.0.0.1")
    await service.server.start_server()
    yield service
    await service.server.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def running_admin(aiohttp_client: Any, settings: AdminSettings, token: str | None) -> Api:
    from admin_api.app import create_app

    return Api(await aiohttp_client(AdminTestServer(create_app(settings))), token)


# ------------------------------------------------------------------ refused when stored


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8081/metrics",
        "http://localhost/guide.xml",
        "http://10.1.2.3/guide.xml",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "http://2130706433/",
        "http://127.1/",
    ],
)
async def test_internal_urls_are_refused_when_stored(api: Api, url: str) -> None:
    status, body = await api.post("/epg-sources", {"name": "guide", "url": url})
    assert status == 400 and body["field"] == "url", body
    status, body = await api.post("/webhooks", {"url": url})
    assert status == 400 and body["field"] == "url", body
    gateway = {"type": "http", "url": url}
    status, body = await api.put("/portal", {"settings": {"smsGateway": gateway}})
    assert status == 400 and body["field"] == "settings.smsGateway.url", body
    assert (await api.get("/epg-sources"))[1]["epgSources"] == []
    assert (await api.get("/webhooks"))[1]["webhooks"] == []


async def test_an_epg_source_moved_inward_is_refused(api: Api) -> None:
    status, body = await api.post("/epg-sources", {"name": "guide", "url": "https://epg.example.com/g.xml"})
    assert status == 200, body
    source = body["epgSourceId"]
    status, body = await api.put(f"/epg-sources/{source}", {"url": "http://192.168.0.10/guide.xml"})
    assert status == 400 and body["field"] == "url" and "192.168.0.10" in body["message"], body
    # A change that leaves the URL alone is not refused.
    assert (await api.put(f"/epg-sources/{source}", {"period": 3}))[0] == 200


# ------------------------------------------------------------------ refused when connecting


@pytest.fixture
def worker_settings(database_url: str, tmp_path: Path) -> EpgSettings:
    return load(
        EpgSettings,
        environ={},
        database_url=database_url,
        var_dir=str(tmp_path),
        epg_poll_interval=0.1,
        epg_schedule_interval=3600,
        epg_connect_timeout=2.0,
        epg_read_timeout=2.0,
    )


async def fetched(
    pool: asyncpg.Pool, settings: EpgSettings, portal: CreatedPortal, url: str
) -> asyncpg.Record:
    """Store a source with SQL (as one made before the guard), run the real worker app, wait."""
    portal_id = ids.decode(portal.portalId)
    source_id = ids.new_id()
    await pool.execute(
        "INSERT INTO epg_sources (id, portal_id, name, url) VALUES ($1, $2, $3, $4)",
        source_id,
        portal_id,
        f"src-{source_id}",
        url,
    )
    async with pool.acquire() as conn:
        await jobs.enqueue(conn, "epg_update", portal_id, source_id)
    server = TestServer(worker_app.create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        for _ in range(200):
            row = await pool.fetchrow(
                "SELECT f.* FROM epg_fetches f JOIN epg_sources s ON s.last_fetch_id = f.id "
                "WHERE s.id = $1 AND f.status <> 'pending'",
                source_id,
            )
            if row is not None:
                return row
            await asyncio.sleep(0.1)
    finally:
        await server.close()
    raise AssertionError("the worker did not finish the update")


async def test_epg_worker_refuses_an_internal_guide(
    pool: asyncpg.Pool, worker_settings: EpgSettings, portal: CreatedPortal, internal: Internal
) -> None:
    row = await fetched(pool, worker_settings, portal, internal.url("/guide.xml"))
    assert row["status"] == "error", row["message"]
    assert "not allowed" in row["message"] and "127.0.0.1" in row["message"], row["message"]
    assert internal.requests == []
    assert await pool.fetchval("SELECT count(*) FROM epg_programs") == 0


async def test_epg_error_does_not_echo_an_internal_page(
    pool: asyncpg.Pool, worker_settings: EpgSettings, portal: CreatedPortal, internal: Internal
) -> None:
    row = await fetched(pool, worker_settings, portal, internal.url("/metrics"))
    assert row["status"] == "error"
    assert "internal_secret_metric" not in row["message"] and internal.requests == [], row["message"]


async def test_epg_redirect_inward_is_refused(
    pool: asyncpg.Pool, worker_settings: EpgSettings, portal: CreatedPortal, internal: Internal
) -> None:
    """A source on an allowed address that redirects to a forbidden one."""

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(internal.url("/guide.xml"))

    application = web.Application()
    application.router.add_get("/guide.xml", redirect)
    allowed = TestServer(application, host="127.0.0.2")
    await allowed.start_server()
    try:
        settings = msgspec.structs.replace(worker_settings, outbound_allow="127.0.0.2/32")
        row = await fetched(pool, settings, portal, str(allowed.make_url("/guide.xml")))
    finally:
        await allowed.close()
    assert row["status"] == "error" and "not allowed" in row["message"], row["message"]
    assert internal.requests == []


async def test_sms_gateway_on_an_internal_address_sends_nothing(
    aiohttp_client: Any,
    admin_settings: AdminSettings,
    pool: asyncpg.Pool,
    portal: CreatedPortal,
    internal: Internal,
    redis: Any,
) -> None:
    gateway = {"type": "http", "url": internal.url("/send?to={phone}"), "retries": 0}
    portal_id = ids.decode(portal.portalId)
    await pool.execute(
        "UPDATE portals SET settings = settings || $2::jsonb WHERE id = $1",
        portal_id,
        {"smsGateway": gateway},
    )
    await pool.execute(
        "INSERT INTO subscribers (id, portal_id, name, phone_country_code, phone) "
        "VALUES ($1, $2, 'v', '7', '9001')",
        ids.new_id(),
        portal_id,
    )
    app = await running_admin(aiohttp_client, admin_settings, None)
    body = {"phoneCountryCode": "7", "phone": "9001", "portalId": portal.portalId}
    status, answer = await app.post("/client/api/v1/login/sms", body)
    assert status == 503 and answer["error"] == "sms_send_failed", answer
    assert internal.requests == []


async def test_webhook_errors_do_not_tell_open_ports_from_closed(
    aiohttp_client: Any,
    admin_settings: AdminSettings,
    pool: asyncpg.Pool,
    portal: CreatedPortal,
    internal: Internal,
) -> None:
    portal_id = ids.decode(portal.portalId)
    urls = [internal.url("/hook"), f"http://127.0.0.1:{closed_port()}/hook"]
    for url in urls:
        await pool.execute(
            "INSERT INTO webhooks (id, portal_id, url, secret, last_delivered_seq) "
            "VALUES ($1, $2, $3, 's', 0)",
            ids.new_id(),
            portal_id,
            url,
        )
    settings = msgspec.structs.replace(
        admin_settings, webhooks_enabled=True, webhook_poll_interval=0.05, webhook_timeout=1.0
    )
    api = await running_admin(aiohttp_client, settings, portal.apiKey)
    status, _ = await api.post("/packages", {"name": "trigger"})
    assert status == 200
    for _ in range(100):
        errors = await pool.fetch("SELECT url, last_error FROM webhooks ORDER BY url")
        if all(row["last_error"] for row in errors):
            break
        await asyncio.sleep(0.1)
    messages = {re.sub(r":\d+", ":PORT", row["last_error"]) for row in errors}
    assert len(messages) == 1, messages
    assert "not allowed" in messages.pop()
    assert internal.requests == []


# ------------------------------------------------------------------ allowed by the deployment


async def test_the_deployment_may_allow_loopback(
    pool: asyncpg.Pool, worker_settings: EpgSettings, portal: CreatedPortal, internal: Internal
) -> None:
    settings = msgspec.structs.replace(worker_settings, outbound_allow="127.0.0.0/8,::1/128")
    row = await fetched(pool, settings, portal, internal.url("/guide.xml"))
    assert row["status"] == "success", row["message"]
    assert internal.requests == ["/guide.xml"]

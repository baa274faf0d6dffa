"""PostgreSQL stopped or hung under the admin API: 503 with Retry-After, never a 500 (issue 15 item 7).

The admin API runs in-process against a private PostgreSQL cluster that the tests
really stop (``pg_ctl stop``) and really hang (``SIGSTOP`` on every process of the
cluster).  A request must get a JSON ``503`` with ``Retry-After`` instead of a
``500`` or an answer that waits for the database to come back, and nothing may be
logged at error level per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import msgspec
import pytest

from catena import db, migrations, portals
from catena.settings import AdminSettings
from tests.authgate.conftest import Hung, PrivatePostgres
from tests.conftest import BASE, AdminTestServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PrivatePostgres.available(), reason="needs PostgreSQL's initdb and pg_ctl"),
]

# The deadline the admin API gets; a hung request is one that outlives it by far.
TIMEOUT = 1.0
HANG = aiohttp.ClientTimeout(total=20)


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    server.init()
    server.start()
    yield server
    server.remove()


@pytest.fixture
async def portal_on_private(private_pg: PrivatePostgres) -> portals.CreatedPortal:
    """A fresh portal on the private cluster (which is started when a test left it stopped)."""
    with contextlib.suppress(Exception):
        private_pg.start()
    conn = await db.connect(private_pg.url)
    try:
        await migrations.apply(conn)
        return await portals.create(
            conn,
            name=f"down-{time.monotonic_ns()}",
            domain=f"down-{time.monotonic_ns()}.example.com",
            owner_email="owner@down.example.com",
            owner_password="Owner-Pass-123",
            bcrypt_rounds=4,
        )
    finally:
        await conn.close()


@pytest.fixture
async def server(
    admin_settings: AdminSettings, private_pg: PrivatePostgres, portal_on_private: Any
) -> AsyncIterator[str]:
    from admin_api.app import create_app

    settings = msgspec.structs.replace(admin_settings, database_url=private_pg.url, database_timeout=TIMEOUT)
    running = AdminTestServer(create_app(settings))
    await running.start_server()
    yield f"http://127.0.0.1:{running.port}"
    await running.close()


async def call(
    url: str, method: str, path: str, token: str | None, json: Any = None
) -> tuple[int, dict[str, str], Any, float]:
    """One request on a fresh connection: status, headers, JSON body, seconds taken."""
    headers = {"X-Auth-Token": token} if token else {}
    started = time.monotonic()
    async with (
        aiohttp.ClientSession(timeout=HANG) as session,
        session.request(method, url + path, headers=headers, json=json) as response,
    ):
        body = await response.json(content_type=None)
        return response.status, dict(response.headers), body, time.monotonic() - started


# Periodic background work (a pass a minute or so, not one per request) reports its
# own failures; what is checked here is what requests log.
BACKGROUND = {"admin_api.stats", "admin_api.webhooks"}


def error_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name not in BACKGROUND
    ]


def assert_unavailable(status: int, headers: dict[str, str], body: Any) -> None:
    assert status == 503, body
    assert body["error"] == "database_unavailable", body
    assert int(headers["Retry-After"]) >= 1
    assert "database" in body["message"]


async def wait_until_answers(url: str, token: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            if (await call(url, "GET", BASE + "/portal", token))[0] == 200:
                return
        await asyncio.sleep(0.2)
    raise AssertionError("the admin API did not recover after PostgreSQL came back")


async def test_stopped_postgres_gives_503_then_recovers(
    server: str, private_pg: PrivatePostgres, portal_on_private: Any, caplog: pytest.LogCaptureFixture
) -> None:
    key = portal_on_private.apiKey
    assert (await call(server, "GET", BASE + "/portal", key))[0] == 200
    private_pg.stop()
    try:
        answers = [
            await call(server, "GET", BASE + "/portal", key),
            await call(server, "GET", BASE + "/channels", key),
            await call(server, "POST", BASE + "/packages", key, {"name": "sports"}),
            await call(
                server, "POST", "/client/api/v1/login/sms", None, {"phoneCountryCode": "7", "phone": "9001"}
            ),
            await call(server, "POST", BASE + "/login", None, {"email": "a@b.c", "password": "Whatever-1"}),
        ]
    finally:
        private_pg.start()
    for status, headers, body, _ in answers:
        assert_unavailable(status, headers, body)
    assert error_lines(caplog) == []
    await wait_until_answers(server, key)


async def test_hung_postgres_gives_503_within_the_deadline(
    server: str, private_pg: PrivatePostgres, portal_on_private: Any, caplog: pytest.LogCaptureFixture
) -> None:
    key = portal_on_private.apiKey
    assert (await call(server, "GET", BASE + "/portal", key))[0] == 200
    with Hung(private_pg):
        answers = await asyncio.gather(
            call(server, "GET", BASE + "/portal", key),
            call(server, "POST", BASE + "/packages", key, {"name": "sports"}),
            call(server, "PUT", BASE + "/portal", key, {"branding": {"title": "Hung"}}),
            call(
                server, "POST", "/client/api/v1/login/sms", None, {"phoneCountryCode": "7", "phone": "9001"}
            ),
            call(server, "GET", BASE + "/channels", key),
            call(server, "POST", BASE + "/login", None, {"email": "a@b.c", "password": "Whatever-1"}),
        )
    for status, headers, body, _ in answers:
        assert_unavailable(status, headers, body)
    print("seconds to the 503 while PostgreSQL hung:", [round(a[3], 2) for a in answers])
    assert error_lines(caplog) == []
    await wait_until_answers(server, key)
    # The write that got a 503 may or may not have committed; nothing else changed.
    status, _, body, _ = await call(server, "GET", BASE + "/packages", key)
    assert status == 200 and [p["name"] for p in body["packages"]] in ([], ["sports"])


async def test_a_503_is_logged_once_per_outage(
    server: str, private_pg: PrivatePostgres, portal_on_private: Any, caplog: pytest.LogCaptureFixture
) -> None:
    key = portal_on_private.apiKey
    caplog.set_level(logging.INFO)
    private_pg.stop()
    try:
        for _ in range(5):
            assert (await call(server, "GET", BASE + "/portal", key))[0] == 503
    finally:
        private_pg.start()
    await wait_until_answers(server, key)
    for _ in range(50):
        outage = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "catena.db"]
        if outage[-1][0] == "INFO":
            break
        await asyncio.sleep(0.1)
    assert outage[0] == ("WARNING", "database unavailable; answering 503 until it is back"), outage
    assert [line for line in outage if line[0] != "DEBUG"][1:] == [("INFO", "database reachable again")]
    assert error_lines(caplog) == []


async def test_database_timeout_setting_is_validated() -> None:
    from catena.settings import SettingsError, load

    assert load(AdminSettings, environ={}).database_timeout == 5.0
    with pytest.raises(SettingsError, match="CATENA_DATABASE_TIMEOUT"):
        load(AdminSettings, environ={"CATENA_DATABASE_TIMEOUT": "0"})

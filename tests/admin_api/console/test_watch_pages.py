"""Dashboard, Play sessions and Operations through the test client: figures, filters, pages, CSV."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import asyncpg

from catena import ids, portals
from tests.admin_api._subscribers_support import create_subscriber
from tests.admin_api.test_play_sessions import insert_session
from tests.conftest import Api

from .conftest import Console, make_manager, owner_console

NOW = int(time.time())


async def _channel(api: Api, name: str, title: str) -> dict[str, Any]:
    status, body = await api.post("/channels", {"name": name, "title": title})
    assert status == 200, body
    return dict(body)


async def test_smoke(console: Console, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool) -> None:
    sport = await _channel(api, "sport1", "Sport One")
    sub = await create_subscriber(api)
    await insert_session(
        pool,
        portal.portalId,
        NOW - 60,
        subscriber=ids.decode(sub["subscriberId"]),
        channel=ids.decode(sport["channelId"]),
        active=True,
    )
    await owner_console(console, portal)
    for path in ("/", "/play-sessions", "/operations", "/play-sessions/export", "/operations/export"):
        page = await console.get(path)
        print(path, page.status)
        open(f"/tmp/cw/{path.replace('/', '_')}.html", "w").write(page.text)
        assert page.status == 200, page.text

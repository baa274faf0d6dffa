"""Webhook delivery holds no database connection while a receiver takes its time."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import msgspec
import prometheus_client
from aiohttp import web

from admin_api import webhook_delivery
from catena.settings import AdminSettings
from tests.admin_api._subscribers_support import create_subscriber
from tests.conftest import Api

SLOW_RECEIVER = 5.0
WEBHOOKS = 4


class SlowReceiver:
    """Answers every POST after five seconds; counts the ones it is holding."""

    def __init__(self) -> None:
        self.open = 0
        self.answered = 0
        self.all_open = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.open += 1
        if self.open == WEBHOOKS:
            self.all_open.set()
        try:
            await asyncio.sleep(SLOW_RECEIVER)
        finally:
            self.open -= 1
        self.answered += 1
        return web.Response(status=204)


async def test_slow_receivers_leave_the_pool_to_api_requests(
    aiohttp_server: Any, aiohttp_client: Any, admin_settings: AdminSettings, api: Api
) -> None:
    receiver = SlowReceiver()
    app = web.Application()
    app.router.add_post("/hook/{n}", receiver.handle)
    server = await aiohttp_server(app)
    for n in range(WEBHOOKS):
        status, _ = await api.post("/webhooks", {"url": str(server.make_url(f"/hook/{n}"))})
        assert status == 200
    await create_subscriber(api, phone="700")

    from admin_api.app import create_app

    settings = msgspec.structs.replace(
        admin_settings,
        database_pool_size=2,
        webhooks_enabled=True,
        webhook_concurrency=WEBHOOKS,
        webhook_timeout=30.0,
        webhook_poll_interval=0.05,
    )
    busy = api.as_(api.token)
    busy.client = await aiohttp_client(create_app(settings))
    # Four deliveries in flight at once: with a connection held per delivery, a pool
    # of two would never let more than two start.
    await asyncio.wait_for(receiver.all_open.wait(), SLOW_RECEIVER * 4)
    answers = await asyncio.gather(*(busy.get("/webhooks") for _ in range(10)))
    assert [status for status, _ in answers] == [200] * 10
    # Every API request was answered while all four POSTs were still waiting.
    assert receiver.open == WEBHOOKS and receiver.answered == 0
    # Nothing is recorded before its 2xx: webhook n still has the later registrations
    # and the subscriber's operation waiting.
    backlog = [hook["backlog"] for hook in answers[-1][1]["webhooks"]]
    assert backlog == [WEBHOOKS + 1 - n for n in range(WEBHOOKS)]


async def test_deliveries_and_backlog_are_exported(
    api: Api, pool: Any, admin_settings: AdminSettings
) -> None:
    def sample(name: str, **labels: str) -> float:
        return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0

    await api.post("/webhooks", {"url": "http://127.0.0.1:9/nobody-listens"})
    await create_subscriber(api, phone="701")
    async with aiohttp.ClientSession() as session:
        deliverer = webhook_delivery.Deliverer(pool, admin_settings, session)
        failed_before = sample("catena_webhook_deliveries_total", result="failed")
        await deliverer.run_once()
        await deliverer.measure()
    assert sample("catena_webhook_deliveries_total", result="failed") == failed_before + 1
    assert sample("catena_webhook_backlog_operations") == 2  # its own createWebhook, the subscriber
    assert sample("catena_webhook_failing") == 1

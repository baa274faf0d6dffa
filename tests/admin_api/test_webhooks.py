from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import asyncpg
import msgspec
import pytest
from aiohttp import web

from admin_api.webhook_delivery import Deliverer
from catena import ids, operations, outbound
from catena.settings import AdminSettings
from tests.admin_api._subscribers_support import count, create_subscriber, manager_session
from tests.conftest import Api


class Receiver:
    """A billing system's webhook endpoint, started by the test."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.failures_left = 0
        self.status = 500
        self.delay = 0.0
        self.arrived = asyncio.Event()

    async def wait_for(self, n: int, timeout: float = 15.0) -> None:
        """Wait until ``n`` requests have arrived (for workers running on their own)."""
        async with asyncio.timeout(timeout):
            while len(self.requests) < n:
                self.arrived.clear()
                await self.arrived.wait()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        self.requests.append((dict(request.headers), body))
        self.arrived.set()
        if self.failures_left > 0:
            self.failures_left -= 1
            return web.Response(status=self.status, text="billing is down")
        return web.Response(status=204)

    @property
    def operation_ids(self) -> list[str]:
        return [headers["X-Catena-Operation-Id"] for headers, _ in self.requests]


async def moved(request: web.Request) -> web.Response:
    raise web.HTTPFound("/hook")


@pytest.fixture
def admin_settings(admin_settings: AdminSettings) -> AdminSettings:
    """The receivers are test servers on 127.0.0.1: this deployment allows loopback."""
    return msgspec.structs.replace(admin_settings, outbound_allow="127.0.0.0/8,::1/128")


@pytest.fixture
async def receiver(aiohttp_server: Any) -> tuple[Receiver, str]:
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    app.router.add_post("/moved", moved)
    server = await aiohttp_server(app)
    return hook, str(server.make_url("/hook"))


@pytest.fixture
def delivery_settings(admin_settings: AdminSettings) -> AdminSettings:
    return msgspec.structs.replace(
        admin_settings,
        webhook_timeout=0.5,
        webhook_retry_base=0.05,
        webhook_retry_max=0.2,
        webhook_poll_interval=0.05,
        webhook_batch=20,
    )


@pytest.fixture
async def deliverer(pool: asyncpg.Pool, delivery_settings: AdminSettings) -> AsyncIterator[Deliverer]:
    # The session the application gives the deliverer: catena.outbound's guard.
    async with outbound.client_session(outbound.policy(delivery_settings.outbound_allow)) as session:
        yield Deliverer(pool, delivery_settings, session)


async def drain(deliverer: Deliverer, done: Callable[[], bool], timeout: float = 15.0) -> None:
    """Run delivery passes until ``done()``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not done():
        assert loop.time() < deadline, "delivery did not finish in time"
        await deliverer.run_once()
        await asyncio.sleep(0.01)


async def operation_ids(api: Api, after: str | None = None) -> list[str]:
    _, body = await api.get("/operations?limit=1000")
    found = [op["operationId"] for op in body["operations"]]
    return found[found.index(after) :] if after else found


def signed(secret: str, headers: dict[str, str], body: bytes) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["X-Catena-Signature"], expected)


async def register(api: Api, url: str) -> dict[str, Any]:
    status, body = await api.post("/webhooks", {"url": url})
    assert status == 200, body
    return dict(body)


async def test_crud_and_secret_shown_once(api: Api, pool: asyncpg.Pool, make_portal: Any) -> None:
    url = "https://billing.example.com/catena?key=hidden"
    status, made = await api.post("/webhooks", {"url": url})
    assert status == 200 and made["url"] == url and len(made["secret"]) >= 43
    assert made["failures"] == 0 and made["lastDeliveredOperationId"] is None and made["lastError"] is None
    status, listed = await api.get("/webhooks")
    assert status == 200 and [w["webhookId"] for w in listed["webhooks"]] == [made["webhookId"]]
    assert "secret" not in listed["webhooks"][0]
    status, one = await api.get(f"/webhooks/{made['webhookId']}")
    assert status == 200 and "secret" not in one and one["url"] == url
    status, body = await api.post("/webhooks", {"url": url})
    assert status == 409 and body["field"] == "url"
    other = await make_portal()
    assert (await api.as_(other.apiKey).get(f"/webhooks/{made['webhookId']}"))[0] == 404
    assert (await api.as_(other.apiKey).delete(f"/webhooks/{made['webhookId']}"))[0] == 404
    assert (await api.delete(f"/webhooks/{made['webhookId']}"))[0] == 201
    assert (await api.get(f"/webhooks/{made['webhookId']}"))[0] == 404
    assert (await api.delete(f"/webhooks/{made['webhookId']}"))[0] == 404
    logged = await pool.fetch("SELECT type, payload FROM operations ORDER BY id")
    assert [r["type"] for r in logged] == ["createWebhook", "deleteWebhook"]
    for row in logged:
        assert "hidden" not in str(row["payload"]) and made["secret"] not in str(row["payload"])
        assert row["payload"]["url"] == "https://billing.example.com/catena"


async def test_bad_urls(api: Api, pool: asyncpg.Pool) -> None:
    for url in [
        "ftp://billing.example.com/hook",
        "javascript:alert(1)",
        "billing.example.com/hook",
        "http://",
        "https:///path-only",
        "http://exa mple.com/",
        "",
        "http://example.com:99999/",
        "https://example.com/" + "x" * 2000,
    ]:
        status, body = await api.post("/webhooks", {"url": url})
        assert (status, body.get("field")) == (400, "url"), (url, body)
    status, body = await api.post("/webhooks", {"url": "ftp://billing.example.com/hook"})
    assert "http(s)" in body["message"] and "ftp://billing.example.com/hook" in body["message"]
    assert (await api.post("/webhooks", {}))[1]["field"] == "url"
    assert await count(pool, "webhooks") == 0 and await count(pool, "operations") == 0


async def test_needs_admin(api: Api) -> None:
    made = await register(api, "https://billing.example.com/hook")
    for flags in ({}, {"isSubscriberAdmin": True, "isContentAdmin": True}):
        manager = await manager_session(api, f"m{len(flags)}@b.co", **flags)
        assert (await manager.get("/webhooks")) == (
            403,
            {"error": "permission_denied", "message": "reading this needs the isAdmin permission"},
        )
        assert (await manager.post("/webhooks", {"url": "https://x.example.com/"}))[0] == 403
        assert (await manager.delete(f"/webhooks/{made['webhookId']}"))[0] == 403
    admin = await manager_session(api, "admin@b.co", isAdmin=True)
    assert (await admin.get("/webhooks"))[0] == 200
    assert (await admin.delete(f"/webhooks/{made['webhookId']}"))[0] == 201


async def test_every_operation_delivered_signed_in_order(
    api: Api, receiver: tuple[Receiver, str], deliverer: Deliverer, make_portal: Any
) -> None:
    hook, url = receiver
    await create_subscriber(api, phone="100")  # before the webhook: not delivered
    made = await register(api, url)
    first = await create_subscriber(api, phone="200")
    await api.post(f"/subscribers/{first['subscriberId']}/disable", {"reason": "неоплата"})
    await api.post(f"/subscribers/{first['subscriberId']}/enable")
    await create_subscriber(api.as_((await make_portal()).apiKey), phone="300")  # another portal
    for n in range(30):
        await create_subscriber(api, phone=f"4{n:03d}")
    expected = (await operation_ids(api))[1:]
    await drain(deliverer, lambda: len(hook.requests) >= len(expected))
    assert hook.operation_ids == expected  # every one, once, in order, from the webhook's creation on
    assert hook.requests[0][0]["X-Catena-Operation-Id"] == expected[0]
    for headers, body in hook.requests:
        assert signed(made["secret"], headers, body)
        assert headers["Content-Type"] == "application/json"
        assert headers["X-Catena-Webhook-Id"] == made["webhookId"]
        _, answer = await api.get(f"/operations/{headers['X-Catena-Operation-Id']}")
        assert msgspec.json.decode(body) == answer
    _, state = await api.get(f"/webhooks/{made['webhookId']}")
    assert state["lastDeliveredOperationId"] == expected[-1] and state["backlog"] == 0
    assert state["lastError"] is None and state["lastDeliveredAt"]


async def test_failed_delivery_is_retried_and_blocks_later_ones(
    api: Api, receiver: tuple[Receiver, str], deliverer: Deliverer
) -> None:
    hook, url = receiver
    made = await register(api, url)
    hook.failures_left = 3
    for n in range(5):
        await create_subscriber(api, phone=f"5{n}")
    expected = await operation_ids(api)
    await deliverer.run_once()
    _, state = await api.get(f"/webhooks/{made['webhookId']}")
    assert state["failures"] == 1 and state["lastError"].startswith("HTTP 500")
    assert state["lastDeliveredOperationId"] is None and state["backlog"] == len(expected)
    await drain(deliverer, lambda: len(hook.requests) >= len(expected) + 3)
    # The failed operation came again until it was taken; later ones waited behind it.
    assert hook.operation_ids == [expected[0]] * 4 + expected[1:]
    assert all(signed(made["secret"], h, b) for h, b in hook.requests)
    _, state = await api.get(f"/webhooks/{made['webhookId']}")
    assert state["failures"] == 0 and state["lastError"] is None
    assert state["lastDeliveredOperationId"] == expected[-1]


async def test_timeouts_redirects_and_backoff(
    api: Api, receiver: tuple[Receiver, str], deliverer: Deliverer, pool: asyncpg.Pool
) -> None:
    hook, url = receiver
    made = await register(api, url)
    hook.delay = 1.0  # longer than webhook_timeout (0.5 s)
    await deliverer.run_once()
    _, state = await api.get(f"/webhooks/{made['webhookId']}")
    assert state["lastError"] == "no answer within 0.5 s" and state["failures"] == 1
    hook.delay = 0.0
    hook.failures_left = 10
    delays = []
    for _ in range(4):
        await pool.execute("UPDATE webhooks SET next_attempt_at = now()")
        await deliverer.run_once()
        row = await pool.fetchrow("SELECT next_attempt_at - last_attempt_at AS wait FROM webhooks")
        delays.append(round(row["wait"].total_seconds(), 2))
    assert delays == [0.1, 0.2, 0.2, 0.2]  # doubled per failure (0.05 s base), capped at 0.2 s
    hook.failures_left = 0
    moved = await register(api, url.replace("/hook", "/moved"))
    await deliverer.run_once()
    _, state = await api.get(f"/webhooks/{moved['webhookId']}")
    assert state["lastError"].startswith("HTTP 302")  # redirects are not followed


async def test_retry_now(
    api: Api, receiver: tuple[Receiver, str], deliverer: Deliverer, pool: asyncpg.Pool
) -> None:
    hook, url = receiver
    made = await register(api, url)
    hook.failures_left = 1
    await pool.execute("UPDATE webhooks SET next_attempt_at = now()")
    await deliverer.run_once()
    await pool.execute("UPDATE webhooks SET next_attempt_at = now() + interval '1 hour'")
    await deliverer.run_once()
    assert len(hook.requests) == 1  # waiting for its next attempt
    status, state = await api.post(f"/webhooks/{made['webhookId']}/retry")
    assert status == 200 and state["failures"] == 1
    await deliverer.run_once()
    assert len(hook.requests) == 2 and hook.operation_ids[0] == hook.operation_ids[1]


async def test_two_workers_at_once_deliver_each_once_in_order(
    api: Api, receiver: tuple[Receiver, str], pool: asyncpg.Pool, delivery_settings: AdminSettings
) -> None:
    hook, url = receiver
    await register(api, url)
    for n in range(60):
        await create_subscriber(api, phone=f"6{n:03d}")
    expected = await operation_ids(api)
    async with aiohttp.ClientSession() as one, aiohttp.ClientSession() as two:
        workers = [Deliverer(pool, delivery_settings, one), Deliverer(pool, delivery_settings, two)]
        tasks = [asyncio.create_task(w.run()) for w in workers]
        try:
            await hook.wait_for(len(expected))
            await asyncio.sleep(0.3)  # time enough for a duplicate to show up, if there were one
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    assert hook.operation_ids == expected


async def test_late_commit_is_not_skipped(
    api: Api, portal: Any, receiver: tuple[Receiver, str], deliverer: Deliverer, pool: asyncpg.Pool
) -> None:
    hook, url = receiver
    await register(api, url)
    await drain(deliverer, lambda: len(hook.requests) == 1)  # createWebhook
    portal_id = ids.decode(portal.portalId) or 0
    slow = await pool.acquire()
    try:
        transaction = slow.transaction()
        await transaction.start()
        # The slow transaction's operation has the older id but commits last.
        older = await operations.record(slow, portal_id, "updatePortal", "apiKey", payload={"n": 1})
        async with pool.acquire() as fast:
            newer = await operations.record(fast, portal_id, "updatePortal", "apiKey", payload={"n": 2})
        assert older < newer
        await drain(deliverer, lambda: len(hook.requests) == 2)
        await transaction.commit()
    finally:
        await pool.release(slow)
    await drain(deliverer, lambda: len(hook.requests) == 3)
    assert hook.operation_ids[1:] == [ids.encode(newer), ids.encode(older)]  # commit order, none lost


async def test_feed_is_pruned_and_deletion_stops_delivery(
    api: Api, receiver: tuple[Receiver, str], deliverer: Deliverer, pool: asyncpg.Pool
) -> None:
    hook, url = receiver
    await create_subscriber(api, phone="1")
    assert await count(pool, "operation_feed") == 0  # no webhook, nothing numbered
    made = await register(api, url)
    await create_subscriber(api, phone="2")
    await drain(deliverer, lambda: len(hook.requests) == 2)
    await deliverer.prune()
    assert await count(pool, "operation_feed") == 0
    await api.delete(f"/webhooks/{made['webhookId']}")
    await create_subscriber(api, phone="3")
    await deliverer.run_once()
    assert len(hook.requests) == 2
    await deliverer.prune()
    assert await count(pool, "operation_feed") == 0


async def test_the_application_runs_the_worker(
    aiohttp_client: Any, delivery_settings: AdminSettings, api: Api, receiver: tuple[Receiver, str]
) -> None:
    from admin_api.app import create_app

    hook, url = receiver
    settings = msgspec.structs.replace(delivery_settings, webhooks_enabled=True)
    running = api.as_(api.token)
    running.client = await aiohttp_client(create_app(settings))
    await register(running, url)
    await create_subscriber(running, phone="777")
    await hook.wait_for(2)
    assert hook.operation_ids == await operation_ids(running)

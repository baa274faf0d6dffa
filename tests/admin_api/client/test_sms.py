"""SMS gateways: the portal's HTTP gateway, its retries and failures, and its configuration."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import msgspec
import pytest
from aiohttp import web

from catena.portals import CreatedPortal
from catena.settings import AdminSettings
from tests.conftest import Api

from .conftest import App, Made

PHONE = {"phoneCountryCode": "7", "phone": "9000000001"}


@pytest.fixture
def admin_settings(admin_settings: AdminSettings) -> AdminSettings:
    """The receivers are test servers on 127.0.0.1: this deployment allows loopback."""
    return msgspec.structs.replace(admin_settings, outbound_allow="127.0.0.0/8,::1/128")


class Provider:
    """A stand-in SMS provider on a local port that answers with the statuses it is given."""

    def __init__(self, statuses: list[int], delay: float = 0.0) -> None:
        self.statuses = statuses
        self.delay = delay
        self.requests: list[tuple[str, str, dict[str, str], str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path_qs, dict(request.headers), await request.text()))
        await asyncio.sleep(self.delay)
        status = self.statuses[min(len(self.requests), len(self.statuses)) - 1]
        return web.Response(status=status, text="queued" if status < 300 else "provider says no")


@pytest.fixture
def provider_server(aiohttp_server: Any):  # type: ignore[no-untyped-def]
    async def start(provider: Provider) -> str:
        application = web.Application()
        application.router.add_route("*", "/{tail:.*}", provider.handle)
        server = await aiohttp_server(application)
        return f"http://127.0.0.1:{server.port}"

    return start


async def use_gateway(api: Api, **config: Any) -> None:
    status, body = await api.put("/portal", {"settings": {"smsGateway": {"type": "http", **config}}})
    assert status == 200, body


async def test_http_gateway_sends_the_templated_request(
    app: App, api: Api, made: Made, provider_server: Any
) -> None:
    provider = Provider([200])
    base = await provider_server(provider)
    await use_gateway(
        api,
        url=base + "/send?to={phone}",
        headers={"X-Api-Key": "k-123"},
        body='{"to": "{phone}", "text": "Your code: {code}"}',
    )
    await made.subscriber()
    status, _ = await app.post("/login/sms", PHONE)
    assert status == 200
    [(method, path, headers, body)] = provider.requests
    assert method == "POST" and path == "/send?to=79000000001"
    assert headers["X-Api-Key"] == "k-123" and headers["Content-Type"] == "application/json"
    code = body.removeprefix('{"to": "79000000001", "text": "Your code: ').removesuffix('"}')
    assert len(code) == 4 and code.isdigit()
    status, answer = await app.post("/login/verify", {**PHONE, "code": code})
    assert status == 200, answer


async def test_http_gateway_retries_server_errors(
    app: App, api: Api, made: Made, provider_server: Any
) -> None:
    provider = Provider([503, 500, 200])
    await use_gateway(api, url=await provider_server(provider) + "/sms", retries=2, retryDelay=0)
    await made.subscriber()
    assert (await app.post("/login/sms", PHONE))[0] == 200
    assert len(provider.requests) == 3


async def test_failed_send_is_a_clear_error_and_a_log_line(
    app: App,
    api: Api,
    made: Made,
    provider_server: Any,
    caplog: pytest.LogCaptureFixture,
    pool: asyncpg.Pool,
) -> None:
    provider = Provider([500])
    await use_gateway(api, url=await provider_server(provider) + "/sms", retries=1, retryDelay=0)
    await made.subscriber()
    status, body = await app.post("/login/sms", PHONE)
    assert status == 503
    assert body == {
        "error": "sms_send_failed",
        "message": "the SMS with your code could not be sent; try again in a minute",
    }
    assert len(provider.requests) == 2
    [line] = [r for r in caplog.records if r.getMessage() == "sms not sent"]
    assert line.levelname == "ERROR" and "HTTP 500: provider says no" in line.reason  # type: ignore[attr-defined]
    # The code that did not go out is withdrawn: asking again is not held by the cooldown.
    assert await pool.fetchval("SELECT count(*) FROM client_sms_codes") == 0
    provider.statuses = [200]
    assert (await app.post("/login/sms", PHONE))[0] == 200


async def test_client_errors_are_not_retried(app: App, api: Api, made: Made, provider_server: Any) -> None:
    provider = Provider([401])
    await use_gateway(api, url=await provider_server(provider) + "/sms", retries=3, retryDelay=0)
    await made.subscriber()
    assert (await app.post("/login/sms", PHONE))[0] == 503
    assert len(provider.requests) == 1


async def test_slow_provider_times_out(
    app: App, api: Api, made: Made, provider_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    provider = Provider([200], delay=2.0)
    await use_gateway(api, url=await provider_server(provider) + "/sms", timeout=0.2, retries=1, retryDelay=0)
    await made.subscriber()
    assert (await app.post("/login/sms", PHONE))[0] == 503
    [line] = [r for r in caplog.records if r.getMessage() == "sms not sent"]
    assert "no answer within 0.2 s" in line.reason  # type: ignore[attr-defined]


async def test_unreachable_provider_fails_cleanly(app: App, api: Api, made: Made) -> None:
    await use_gateway(api, url="http://127.0.0.1:1/sms", retries=0)
    await made.subscriber()
    status, body = await app.post("/login/sms", PHONE)
    assert status == 503 and body["error"] == "sms_send_failed"


async def test_unknown_phone_sends_nothing_through_the_gateway(
    app: App, api: Api, provider_server: Any
) -> None:
    provider = Provider([200])
    await use_gateway(api, url=await provider_server(provider) + "/sms")
    assert (await app.post("/login/sms", PHONE))[0] == 200
    assert provider.requests == []


@pytest.mark.parametrize(
    ("gateway", "field"),
    [
        ({"type": "http"}, "settings.smsGateway"),
        ({"type": "http", "url": "ftp://x"}, "settings.smsGateway.url"),
        ({"type": "http", "url": "http://x", "method": "DELETE"}, "settings.smsGateway.method"),
        ({"type": "http", "url": "http://x", "timeout": 0}, "settings.smsGateway.timeout"),
        ({"type": "http", "url": "http://x", "retries": 9}, "settings.smsGateway.retries"),
        ({"type": "http", "url": "http://x", "headers": {"Bad Name": "v"}}, "settings.smsGateway.headers"),
        ({"type": "carrier-pigeon"}, "settings.smsGateway.type"),
        ({"type": "log", "url": "http://x"}, "settings.smsGateway"),
    ],
)
async def test_invalid_gateway_configuration_is_400(
    api: Api, gateway: dict[str, Any], field: str, portal: CreatedPortal
) -> None:
    status, body = await api.put("/portal", {"settings": {"smsGateway": gateway}})
    assert status == 400, body
    assert body["field"].startswith(field)
    status, body = await api.get("/portal")
    assert body["settings"]["smsGateway"] is None


async def test_gateway_configuration_round_trips(api: Api) -> None:
    await use_gateway(api, url="https://sms.example.com/send", body="{code}")
    status, body = await api.get("/portal")
    assert body["settings"]["smsGateway"] == {
        "type": "http",
        "url": "https://sms.example.com/send",
        "method": "POST",
        "headers": {},
        "body": "{code}",
        "contentType": "application/json",
        "timeout": 5.0,
        "retries": 2,
        "retryDelay": 0.5,
    }
    status, body = await api.put("/portal", {"settings": {"smsGateway": {"type": "log"}}})
    assert status == 200 and body["settings"]["smsGateway"] == {"type": "log"}
    status, body = await api.put("/portal", {"settings": {"smsGateway": None}})
    assert status == 200 and body["settings"]["smsGateway"] is None


async def test_broken_stored_configuration_is_503_not_500(
    app: App, made: Made, caplog: pytest.LogCaptureFixture
) -> None:
    await made.settings(smsGateway={"type": "http"})
    await made.subscriber()
    status, body = await app.post("/login/sms", PHONE)
    assert status == 503 and body["error"] == "sms_send_failed"
    assert [r for r in caplog.records if r.getMessage() == "sms not sent"]

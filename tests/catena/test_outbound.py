"""The outbound guard: which addresses are refused, and that the check happens at connect time."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer

from catena import outbound
from catena.settings import AdminSettings, EpgSettings, SettingsError, load

PUBLIC_ONLY = outbound.Policy.parse("none")


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "non-public"),
        ("224.0.0.251", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "private"),
        ("192.0.2.10", "private"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fd12:3456::1", "private"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "(127.0.0.1) is a loopback"),
        ("::ffff:10.1.1.1", "(10.1.1.1) is a private"),
        ("2002:a00:1::", "(10.0.0.1) is a private"),
        ("64:ff9b::a9fe:a9fe", "(169.254.169.254) is a link-local"),
        ("::7f00:1", "reserved"),
    ],
)
def test_internal_addresses_are_refused(address: str, kind: str) -> None:
    reason = PUBLIC_ONLY.refusal(address)
    assert reason is not None and kind in reason and outbound.REFUSED in reason


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert PUBLIC_ONLY.refusal(address) is None


def test_an_allowance_opens_exactly_its_networks() -> None:
    policy = outbound.Policy.parse("127.0.0.0/8, fd00::/8")
    assert policy.refusal("127.0.0.1") is None
    assert policy.refusal("::ffff:127.0.0.1") is None  # the same address, mapped
    assert policy.refusal("fd00::5") is None
    assert policy.refusal("::1") is not None
    assert policy.refusal("10.0.0.1") is not None
    assert policy.refusal("8.8.8.8") is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8081/metrics",
        "http://2130706433/",
        "http://0x7f.0.0.1/",
        "http://127.1/",
        "http://localhost./",
        "http://tv.localhost/",
        "https://[::1]/",
        "https://[::ffff:169.254.169.254]/",
        "http://user:pass@10.0.0.1:8080/x?y=1",
    ],
)
def test_urls_whose_host_is_plainly_internal_are_refused(url: str) -> None:
    assert PUBLIC_ONLY.url_refusal(url) is not None


@pytest.mark.parametrize("url", ["https://epg.example.com/guide.xml", "http://8.8.8.8/x", "not a url"])
def test_other_urls_wait_for_connect_time(url: str) -> None:
    assert PUBLIC_ONLY.url_refusal(url) is None


def test_the_setting_is_validated_and_defaults_to_public_only() -> None:
    assert load(AdminSettings, environ={}).outbound_allow == "none"
    assert load(EpgSettings, environ={"CATENA_OUTBOUND_ALLOW": "10.0.0.0/8,::1"}).outbound_allow
    with pytest.raises(SettingsError, match=r"CATENA_OUTBOUND_ALLOW: .*'10\.0\.0\.0/33'"):
        load(AdminSettings, environ={"CATENA_OUTBOUND_ALLOW": "10.0.0.0/33"})


# ------------------------------------------------------------------ at connect time


@pytest.fixture
async def loopback_server() -> AsyncIterator[TestServer]:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="internal")

    application = web.Application()
    application.router.add_get("/", hello)
    server = TestServer(application, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


async def get(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as response:
        return await response.text()


async def test_a_literal_address_is_refused_without_connecting(loopback_server: TestServer) -> None:
    async with outbound.client_session(PUBLIC_ONLY) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await get(session, str(loopback_server.make_url("/")))
    assert outbound.refused(caught.value) == "127.0.0.1 is a loopback address; requests to it are not allowed"


async def test_a_name_resolving_inward_is_refused(loopback_server: TestServer) -> None:
    async with outbound.client_session(PUBLIC_ONLY) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await get(session, f"http://localhost:{loopback_server.port}/")
    assert "localhost resolves to" in str(outbound.refused(caught.value))


async def test_an_allowed_address_is_reached(loopback_server: TestServer) -> None:
    async with outbound.client_session(outbound.Policy.parse("127.0.0.0/8")) as session:
        assert await get(session, str(loopback_server.make_url("/"))) == "internal"


class Rebinding(AbstractResolver):
    """A DNS server whose answer for one name changes: first an allowed address, then not."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        address = self.answers.pop(0)
        return [
            ResolveResult(hostname=host, host=address, port=port, family=socket.AF_INET, proto=0, flags=0)
        ]

    async def close(self) -> None:
        pass


async def test_a_dns_answer_that_changes_is_checked_again(loopback_server: TestServer) -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="allowed")

    application = web.Application()
    application.router.add_get("/", hello)
    allowed = TestServer(application, host="127.0.0.2", port=loopback_server.port)
    await allowed.start_server()
    policy = outbound.Policy.parse("127.0.0.2/32")
    connector = outbound.connector(
        policy, resolver=Rebinding(["127.0.0.2", "127.0.0.1"]), use_dns_cache=False, force_close=True
    )
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            url = f"http://rebind.example:{loopback_server.port}/"
            assert await get(session, url) == "allowed"
            with pytest.raises(aiohttp.ClientConnectorError) as caught:
                await get(session, url)
    finally:
        await allowed.close()
    assert "127.0.0.1 is a loopback address" in str(outbound.refused(caught.value))

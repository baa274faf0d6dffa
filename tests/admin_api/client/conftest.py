"""Fixtures of the client API tests: a subscriber app, and content made with plain SQL.

Subscribers, packages, channels and programmes are written straight into the
tables of ``catena/migrations/0001_core.sql``: the Management API modules that make them
are built elsewhere, and the client API must work with whatever they write.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
import pytest
from multidict import CIMultiDict

from catena import ids
from catena.portals import CreatedPortal
from catena.tokens import TokenCodec
from tests.conftest import Api, AppClient

PREFIX = "/client/api/v1"


class App(Api):
    """A subscriber app: talks to the client API under a portal's domain."""

    def __init__(self, client: AppClient, host: str | None, token: str | None = None) -> None:
        super().__init__(client, None)
        self.host = host
        self.bearer = token

    def with_token(self, token: str | None) -> App:
        return App(self.client, self.host, token)

    def at(self, host: str | None) -> App:
        return App(self.client, host, self.bearer)

    async def call(self, method: str, path: str, json: Any = None, **kwargs: Any) -> tuple[int, Any]:
        headers = dict(kwargs.pop("headers", {}))
        if self.host is not None:
            headers.setdefault("Host", self.host)
        if self.bearer is not None:
            headers.setdefault("Authorization", f"Bearer {self.bearer}")
        return await super().call(method, PREFIX + path, json, headers=headers, **kwargs)

    async def raw(self, path: str, **kwargs: Any) -> tuple[int, CIMultiDict[str], bytes]:
        """GET a non-JSON document: status, headers, body."""
        headers = dict(kwargs.pop("headers", {}))
        if self.host is not None:
            headers.setdefault("Host", self.host)
        if self.bearer is not None:
            headers.setdefault("Authorization", f"Bearer {self.bearer}")
        async with self.client.get(PREFIX + path, headers=headers, **kwargs) as resp:
            return resp.status, CIMultiDict(resp.headers), await resp.read()


@pytest.fixture
def app(client: AppClient, portal: CreatedPortal, redis: Any) -> App:
    # Asking for ``redis`` makes the suite's clean-up drop the throttling counters.
    return App(client, portal.domain)


@pytest.fixture
def portal_id(portal: CreatedPortal) -> int:
    value = ids.decode(portal.portalId)
    assert value is not None
    return value


@pytest.fixture
def codec(admin_settings: Any) -> TokenCodec:
    return TokenCodec(admin_settings.token_secrets)


@dataclass
class Made:
    """Content of one portal, written with SQL."""

    pool: asyncpg.Pool
    portal_id: int

    async def subscriber(self, phone: str = "9000000001", cc: str = "7", *, disabled: bool = False) -> int:
        subscriber_id = ids.new_id()
        await self.pool.execute(
            "INSERT INTO subscribers (id, portal_id, name, phone_country_code, phone, disabled) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            subscriber_id,
            self.portal_id,
            f"Subscriber {phone}",
            cc,
            phone,
            disabled,
        )
        return subscriber_id

    async def channel(
        self, name: str, title: str | None = None, *, epg: tuple[str, str] | None = None
    ) -> int:
        channel_id = ids.new_id()
        source, epg_name = epg or (None, None)
        await self.pool.execute(
            "INSERT INTO channels (id, portal_id, name, title, epg_source_name, epg_channel_name) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            channel_id,
            self.portal_id,
            name,
            title or name.title(),
            source,
            epg_name,
        )
        return channel_id

    async def package(self, name: str, *channel_ids: int, free: bool = False) -> int:
        package_id = ids.new_id()
        await self.pool.execute(
            "INSERT INTO packages (id, portal_id, name) VALUES ($1, $2, $3)", package_id, self.portal_id, name
        )
        for channel_id in channel_ids:
            await self.pool.execute(
                "INSERT INTO channel_packages (package_id, channel_id, portal_id) VALUES ($1, $2, $3)",
                package_id,
                channel_id,
                self.portal_id,
            )
        if free:
            await self.pool.execute(
                "INSERT INTO portal_free_packages (portal_id, package_id) VALUES ($1, $2)",
                self.portal_id,
                package_id,
            )
        return package_id

    async def subscribe(self, subscriber_id: int, package_id: int) -> None:
        await self.pool.execute(
            "INSERT INTO subscriptions (subscriber_id, package_id, portal_id) VALUES ($1, $2, $3)",
            subscriber_id,
            package_id,
            self.portal_id,
        )

    async def epg_source(self, name: str) -> int:
        source_id = ids.new_id()
        await self.pool.execute(
            "INSERT INTO epg_sources (id, portal_id, name, url) VALUES ($1, $2, $3, $4)",
            source_id,
            self.portal_id,
            name,
            f"http://127.0.0.1:1/{name}.xml",
        )
        return source_id

    async def program(
        self, source_id: int, epg_name: str, start: datetime, end: datetime | None, title: str, **extra: Any
    ) -> int:
        program_id = ids.new_id()
        await self.pool.execute(
            "INSERT INTO epg_programs (id, portal_id, epg_source_id, epg_channel_name, start_at, end_at, "
            "title, description, genre, rating, language) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            program_id,
            self.portal_id,
            source_id,
            epg_name,
            start,
            end,
            title,
            extra.get("description"),
            extra.get("genre"),
            extra.get("rating"),
            extra.get("language"),
        )
        return program_id

    async def logo(self, channel_id: int, data: bytes, etag: str = "logo-v1") -> None:
        await self.pool.execute(
            "INSERT INTO channel_logos (channel_id, content_type, data, etag) "
            "VALUES ($1, 'image/png', $2, $3)",
            channel_id,
            data,
            etag,
        )

    async def settings(self, **settings: Any) -> None:
        await self.pool.execute(
            "UPDATE portals SET settings = settings || $2::jsonb WHERE id = $1", self.portal_id, settings
        )


@pytest.fixture
def made(pool: asyncpg.Pool, portal_id: int) -> Made:
    return Made(pool, portal_id)


@pytest.fixture
def sms_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The log gateway's lines, where the codes are."""
    caplog.set_level("INFO", logger="admin_api.client.sms")
    yield caplog


def codes_sent(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """``(phone, code)`` of every code the log gateway wrote, oldest first."""
    return [
        (record.phone, record.code)  # type: ignore[attr-defined]
        for record in caplog.records
        if record.name == "admin_api.client.sms" and record.getMessage() == "sms code (log gateway)"
    ]


@pytest.fixture
def make_app(aiohttp_client: Any, admin_settings: Any, pool: asyncpg.Pool, redis: Any, portal: CreatedPortal):  # type: ignore[no-untyped-def]
    """A client API with some settings changed, e.g. ``await make_app(client_sms_per_ip=3)``."""
    from admin_api.app import create_app

    async def make(**overrides: Any) -> App:
        settings = msgspec.structs.replace(admin_settings, **overrides)
        return App(await aiohttp_client(create_app(settings)), portal.domain)

    return make


def wrong(code: str) -> str:
    """A code that is not ``code``."""
    return f"{(int(code) + 1) % 10000:04d}"

"""Helpers for the subscriber, subscription, operations and webhook tests."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import asyncpg

from catena import entitlements, ids
from tests.conftest import Api

GOOD_PASSWORD = "Secure-Pass-123"


def person(phone: str = "9161234567", name: str = "Иван Петров", code: str = "7") -> dict[str, Any]:
    return {"name": name, "phoneCountryCode": code, "phone": phone}


async def make_package(pool: asyncpg.Pool, portal_id: str, name: str) -> str:
    """A package made directly in the database (the packages API is another module's)."""
    package_id = ids.new_id()
    await pool.execute(
        "INSERT INTO packages (id, portal_id, name) VALUES ($1, $2, $3)",
        package_id,
        ids.decode(portal_id),
        name,
    )
    return ids.encode(package_id)


async def make_free(pool: asyncpg.Pool, portal_id: str, package_id: str) -> None:
    await pool.execute(
        "INSERT INTO portal_free_packages (portal_id, package_id) VALUES ($1, $2)",
        ids.decode(portal_id),
        ids.decode(package_id),
    )


async def create_subscriber(api: Api, **kwargs: Any) -> dict[str, Any]:
    status, body = await api.post("/subscribers", person(**kwargs))
    assert status == 200, body
    return dict(body)


async def op_types(pool: asyncpg.Pool) -> list[str]:
    return [r["type"] for r in await pool.fetch("SELECT type FROM operations ORDER BY id")]


async def count(pool: asyncpg.Pool, table: str) -> int:
    return int(await pool.fetchval(f"SELECT count(*) FROM {table}"))


async def manager_session(api: Api, email: str, **flags: bool) -> Api:
    """An Api acting as a new manager of the portal with the given flags."""
    body = {"email": email, "name": "Биллинг", "password": GOOD_PASSWORD, **flags}
    status, answer = await api.post("/managers", body)
    assert status == 200, answer
    status, answer = await api.as_(None).post("/login", {"email": email, "password": GOOD_PASSWORD})
    assert status == 200, answer
    return api.as_(answer["portals"][0]["sessionId"])


class Signals:
    """Listens to the entitlement change channel, as a gateway does."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.received: list[entitlements.Signal] = []

    @classmethod
    async def listen(cls, database_url: str) -> Signals:
        signals = cls(await asyncpg.connect(database_url))
        await signals.conn.add_listener(entitlements.CHANNEL, signals._on)
        return signals

    def _on(self, conn: object, pid: int, channel: str, payload: str) -> None:
        self.received.append(entitlements.decode(payload))

    async def take(self) -> list[tuple[str, list[str]]]:
        """Signals received so far, as (kind, text ids); waits for delivery to settle."""
        await self.conn.execute("SELECT 1")
        await asyncio.sleep(0.05)
        taken = [(s.kind, [ids.encode(i) for i in s.ids]) for s in self.received]
        self.received.clear()
        return taken

    async def close(self) -> None:
        await self.conn.close()


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def op_id_at(at: datetime, n: int, node: int = 0) -> int:
    """An id made at ``at`` by ``node`` (``n`` tells ids of one millisecond apart)."""
    return ids.lowest_at(int(at.timestamp() * 1000)) + (node << 12) + n


async def insert_operations(
    pool: asyncpg.Pool,
    portal_id: str,
    instants: list[datetime],
    type: str = "createSubscriber",
    node: int = 0,
) -> list[int]:
    """Operations written straight into the table with COPY, at the given instants."""
    portal = ids.decode(portal_id)
    records = []
    for n, at in enumerate(instants):
        op_id = op_id_at(at, n % 4096, node)
        stamp = datetime.fromtimestamp(ids.timestamp_ms(op_id) / 1000, UTC)
        records.append((op_id, portal, type, stamp, stamp))
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "operations",
            records=records,
            columns=["id", "portal_id", "type", "created_at", "updated_at"],
        )
    return [r[0] for r in records]

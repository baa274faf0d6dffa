"""The data set of ``make bench-stats``: a large portal as the dashboard sees it.

``--subscribers`` subscribers (names and phones as the subscriber-search benchmark
makes them, 2 % disabled, 80 % with one or two of 50 packages),
``--channels`` channels (nine in ten linked to a guide that covers the next two
days, one in twenty linked to a guide that ended yesterday, the rest unlinked),
four EPG sources (fresh, three days old, failed, never fetched), and play sessions
written the way the gateway writes them, through ``authgate.recorder.write_batch``:
``--open`` sessions playing now and ``--closed`` more opened and closed over the
last 24 hours, on channels picked with a Zipf-like skew.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from authgate.recorder import write_batch
from benchmarks.bench_subscriber_search import people
from catena import ids, portals

PACKAGES = 50
WRITE_BATCH = 10_000


@dataclass
class Dataset:
    portal_id: int
    api_key: str
    channel_ids: list[int]
    subscriber_ids: list[int]
    # The owner's sign-in, for benchmarks that go through the console.
    owner_email: str = ""
    owner_password: str = ""


async def make(
    conn: asyncpg.Connection, *, subscribers: int, channels: int, open_sessions: int, closed: int
) -> Dataset:
    created = await portals.create(
        conn, name="bench", domain="bench.localhost", owner_email="owner@bench.localhost", bcrypt_rounds=4
    )
    portal_id = ids.decode(created.portalId)
    assert portal_id is not None
    channel_ids = await _channels(conn, portal_id, channels)
    subscriber_ids = await _subscribers(conn, portal_id, subscribers)
    await _sessions(conn, portal_id, channel_ids, subscriber_ids, open_sessions, closed)
    await conn.execute("VACUUM ANALYZE")
    return Dataset(
        portal_id, created.apiKey, channel_ids, subscriber_ids, created.ownerEmail, created.ownerPassword
    )


async def _channels(conn: asyncpg.Connection, portal_id: int, count: int) -> list[int]:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    sources = [
        ("main", now - timedelta(hours=1), "success"),
        ("old", now - timedelta(days=3), "success"),
        ("broken", now - timedelta(hours=2), "error"),
        ("never", None, None),
    ]
    source_ids = {}
    for name, fetched, status in sources:
        source_id = source_ids[name] = ids.new_id()
        await conn.execute(
            "INSERT INTO epg_sources (id, portal_id, name, url) VALUES ($1, $2, $3, 'http://epg.example.com/')",
            source_id,
            portal_id,
            name,
        )
        if status is not None:
            fetch_id = ids.new_id()
            await conn.execute(
                """INSERT INTO epg_fetches (id, portal_id, epg_source_id, status, created_at, fetched_at)
                   VALUES ($1, $2, $3, $4, $5, $5)""",
                fetch_id,
                portal_id,
                source_id,
                status,
                fetched,
            )
            await conn.execute("UPDATE epg_sources SET last_fetch_id = $1 WHERE id = $2", fetch_id, source_id)
    channel_ids = [ids.new_id() for _ in range(count)]
    rows, programmes = [], []
    for n, channel_id in enumerate(channel_ids):
        linked = n % 10 != 9
        source = "old" if n % 20 == 3 else "main"
        rows.append(
            (
                channel_id,
                portal_id,
                f"ch{n:05d}",
                f"Канал {n}",
                source if linked else None,
                f"epg-{n}" if linked else None,
            )
        )
        if linked:
            first, last = (-48, 48) if source == "main" else (-72, -24)
            for hour in range(first, last):
                start = now + timedelta(hours=hour)
                programmes.append(
                    (
                        ids.new_id(),
                        portal_id,
                        source_ids[source],
                        f"epg-{n}",
                        start,
                        start + timedelta(hours=1),
                        f"Передача {hour}",
                    )
                )
    await conn.copy_records_to_table(
        "channels",
        records=rows,
        columns=["id", "portal_id", "name", "title", "epg_source_name", "epg_channel_name"],
    )
    await conn.copy_records_to_table(
        "epg_programs",
        records=programmes,
        columns=["id", "portal_id", "epg_source_id", "epg_channel_name", "start_at", "end_at", "title"],
    )
    return channel_ids


async def _subscribers(conn: asyncpg.Connection, portal_id: int, count: int) -> list[int]:
    package_ids = [ids.new_id() for _ in range(PACKAGES)]
    await conn.copy_records_to_table(
        "packages",
        records=[(p, portal_id, f"package-{i}") for i, p in enumerate(package_ids)],
        columns=["id", "portal_id", "name"],
    )
    subscriber_ids = [ids.new_id() for _ in range(count)]
    # Real-looking names and phones, as the subscriber-search benchmark makes them.
    made = people(random.Random(11), count)
    records = [(s, portal_id, *made[n], n % 50 == 0) for n, s in enumerate(subscriber_ids)]
    await conn.copy_records_to_table(
        "subscribers",
        records=records,
        columns=["id", "portal_id", "name", "phone_country_code", "phone", "disabled"],
    )
    links = []
    for n, s in enumerate(subscriber_ids):
        if n % 5 != 4:
            links.append((s, package_ids[n % PACKAGES], portal_id))
            if n % 3 == 0:
                links.append((s, package_ids[(n + 7) % PACKAGES], portal_id))
    await conn.copy_records_to_table(
        "subscriptions", records=links, columns=["subscriber_id", "package_id", "portal_id"]
    )
    return subscriber_ids


def _channel_picker(channel_ids: list[int], rng: random.Random) -> Any:
    weights = [1 / (rank + 1) for rank in range(len(channel_ids))]
    return lambda k: rng.choices(channel_ids, weights=weights, k=k)


async def _sessions(
    conn: asyncpg.Connection,
    portal_id: int,
    channel_ids: list[int],
    subscriber_ids: list[int],
    open_sessions: int,
    closed: int,
) -> None:
    rng = random.Random(5)
    now_ms = int(time.time() * 1000)
    channel_names = {c: f"ch{n:05d}" for n, c in enumerate(channel_ids)}
    pick = _channel_picker(channel_ids, rng)
    rows = []
    for n, channel in enumerate(pick(open_sessions + closed)):
        playing = n < open_sessions
        opened = now_ms - rng.randrange(4 * 3_600_000 if playing else 86_000_000)
        updated = now_ms - rng.randrange(30_000) if playing else opened + rng.randrange(60_000, 600_000)
        rows.append(
            session_row(
                portal_id,
                rng.choice(subscriber_ids),
                channel,
                channel_names[channel],
                opened,
                updated,
                None if playing else updated,
                n,
            )
        )
    rows.sort(key=lambda r: r[6])  # opened in order, as gateways see them
    for start in range(0, len(rows), WRITE_BATCH):
        await write_batch(conn, rows[start : start + WRITE_BATCH])


def session_row(
    portal_id: int,
    subscriber_id: int,
    channel_id: int,
    channel_name: str,
    opened_ms: int,
    updated_ms: int,
    closed_ms: int | None,
    n: int,
) -> tuple[Any, ...]:
    """A row of ``authgate.recorder.COLUMNS``, its id made when the session opened."""
    row_id = ids.lowest_at(opened_ms) + (n & 0x3FFFFF)
    return (
        f"bench-{n}",
        row_id,
        portal_id,
        subscriber_id,
        channel_id,
        channel_name,
        opened_ms,
        updated_ms,
        closed_ms,
        1_000_000,
        "10.0.0.1",
        "Bench/1.0",
        None,
        None,
        "hls",
        "edge-1",
    )

"""The worker process's HTTP side (/health, /metrics) and its run loop."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from catena.settings import EpgSettings
from epg_worker import app as worker_app
from tests.epg_worker.conftest import GuideServer, Sources, document, schedule


async def test_health_and_metrics(
    aiohttp_client: Any, epg_settings: EpgSettings, pool: asyncpg.Pool, redis_url: str
) -> None:
    settings = msgspec.structs.replace(epg_settings, redis_url=redis_url)
    client = await aiohttp_client(worker_app.create_app(settings))
    response = await client.get("/health")
    assert response.status == 200
    assert await response.json() == {
        "status": "ok",
        "postgres": "up",
        "redis": "up",
        "scheduler": "running",
        "runningUpdates": 0,
    }
    response = await client.get("/metrics")
    assert response.status == 200
    assert "catena_epg_fetches_total" in await response.text()


async def test_the_running_process_picks_up_requested_updates(
    aiohttp_client: Any, epg_settings: EpgSettings, guides: GuideServer, sources: Sources
) -> None:
    # No test code drives the worker here: its own loop claims the job.
    await aiohttp_client(worker_app.create_app(epg_settings))
    source = await sources.create(guides.put("/guide.xml", document(schedule(["one"], 3))))
    await sources.request_update(source)
    for _ in range(100):
        status = await sources.pool.fetchval(
            "SELECT f.status FROM epg_sources s JOIN epg_fetches f ON f.id = s.last_fetch_id WHERE s.id = $1",
            source,
        )
        if status:
            break
        await asyncio.sleep(0.1)
    assert status == "success"
    assert len(await sources.programmes(source)) == 3


def test_leftover_downloads_of_dead_workers_are_removed(tmp_path: Path) -> None:
    fresh = tmp_path / "fetch-123-1.download"
    stale = tmp_path / "fetch-456-2.download"
    other = tmp_path / "notes.txt"
    for path in (fresh, stale, other):
        path.write_bytes(b"x")
    old = time.time() - 3 * 3600
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    worker_app.remove_leftovers(tmp_path, job_timeout=3600)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, other.name])

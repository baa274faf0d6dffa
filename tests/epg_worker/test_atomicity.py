"""Readers see the old guide or the new one, never a mix; nothing half-done survives
a failed import, a timeout or a killed worker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from catena import jobs
from catena.testing import free_port
from epg_worker import fetches
from epg_worker.scheduler import KIND, Worker
from tests.conftest import ROOT
from tests.epg_worker.conftest import GuideServer, Sources, document, run_queued, schedule

_SNAPSHOT = """
SELECT count(*) AS n, count(DISTINCT fetch_id) AS versions
FROM epg_programs WHERE epg_source_id = $1
"""


async def _first_guide(guides: GuideServer, sources: Sources, worker: Worker) -> tuple[int, set[int]]:
    source = await sources.create(guides.put("/guide.xml", document(schedule(["one", "two"], 24))))
    fetch = await sources.update(worker, source)
    assert fetch["status"] == "success"
    return source, {r["id"] for r in await sources.programmes(source)}


async def _watch(pool: asyncpg.Pool, source: int, seen: list[tuple[int, int]], stop: asyncio.Event) -> None:
    """Read the source's programmes the way the programmes API does, over and over."""
    while not stop.is_set():
        row = await pool.fetchrow(_SNAPSHOT, source)
        seen.append((row["n"], row["versions"]))
        await asyncio.sleep(0.01)


async def _update_while_watching(
    sources: Sources, worker: Worker, source: int
) -> tuple[Any, list[tuple[int, int]]]:
    seen: list[tuple[int, int]] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch(sources.pool, source, seen, stop))
    try:
        fetch = await sources.update(worker, source)
    finally:
        stop.set()
        await watcher
    return fetch, seen


async def test_readers_see_the_old_guide_then_the_new_one(
    guides: GuideServer, sources: Sources, worker: Worker, big_guide: bytes
) -> None:
    source, _ = await _first_guide(guides, sources, worker)
    guides.put("/guide.xml", big_guide)

    fetch, seen = await _update_while_watching(sources, worker, source)

    assert fetch["status"] == "success", fetch["message"]
    new = fetch["imported_programs"]
    assert new > 30_000
    # Reads went on during the import (the parser yields to the event loop), and
    # each saw one whole guide.
    assert len(seen) >= 5
    assert {versions for _, versions in seen} == {1}
    assert 48 in {n for n, _ in seen} <= {48, new}
    assert await sources.pool.fetchval(_SNAPSHOT, source) == new


async def test_an_import_failing_late_leaves_the_old_guide(
    guides: GuideServer, sources: Sources, worker: Worker, big_guide: bytes
) -> None:
    source, before = await _first_guide(guides, sources, worker)
    # Cut near the end: tens of thousands of rows were copied before the error.
    guides.put("/guide.xml", big_guide[: len(big_guide) - 5000])

    fetch, seen = await _update_while_watching(sources, worker, source)

    assert fetch["status"] == "error"
    assert fetch["message"].startswith("the XML is not well-formed")
    assert "(after 3" in fetch["message"] or "(after 4" in fetch["message"]
    assert {n for n, _ in seen} == {48}
    assert {r["id"] for r in await sources.programmes(source)} == before
    assert await sources.pool.fetchval("SELECT count(*) FROM epg_programs") == 48


async def test_a_timeout_during_the_import_leaves_the_old_guide(
    guides: GuideServer, sources: Sources, make_worker: Callable[..., Any], big_guide: bytes
) -> None:
    worker = await make_worker()
    source, before = await _first_guide(guides, sources, worker)
    slow = await make_worker(epg_job_timeout=1.0)
    guides.put("/guide.xml", big_guide)

    # The guide's writes wait behind a lock until the job's time is up, so the
    # timeout lands in the import however fast this machine parses.
    async with sources.pool.acquire() as blocker, blocker.transaction():
        await blocker.execute("LOCK TABLE epg_programs IN SHARE MODE")
        fetch = await sources.update(slow, source)

    assert fetch["status"] == "timeout"
    assert fetch["message"].endswith("it was stopped while importing")
    assert {r["id"] for r in await sources.programmes(source)} == before
    # The worker carries on: the next update works.
    guides.put("/guide.xml", document(schedule(["three"], 5)))
    assert (await sources.update(slow, source))["imported_programs"] == 5


def _spawn_worker(database_url: str, redis_url: str, var_dir: Path) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        CATENA_DATABASE_URL=database_url,
        CATENA_REDIS_URL=redis_url,
        CATENA_TOKEN_SECRETS="epg:test-secret-of-the-epg-worker-0123456789",
        CATENA_VAR_DIR=str(var_dir),
        CATENA_EPG_PORT=str(free_port()),
        CATENA_EPG_POLL_INTERVAL="0.1",
        CATENA_EPG_SCHEDULE_INTERVAL="3600",
        CATENA_EPG_PROGRESS_INTERVAL="0.1",
        CATENA_EPG_HEARTBEAT_INTERVAL="0.2",
        CATENA_LOG_LEVEL="warning",
        CATENA_OUTBOUND_ALLOW="127.0.0.0/8",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "epg_worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def _wait_for_import(pool: asyncpg.Pool, process: subprocess.Popen[bytes]) -> dict[str, Any]:
    for _ in range(600):
        progress = await pool.fetchval("SELECT progress FROM epg_fetches WHERE status = 'pending'")
        if progress and progress.get("phase") == "importing" and progress.get("importedPrograms", 0) > 5000:
            return dict(progress)
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        await asyncio.sleep(0.05)
    pytest.fail("the worker never got into the import")


async def test_killing_a_worker_mid_import_keeps_the_old_guide_and_retries_the_job(
    guides: GuideServer,
    sources: Sources,
    make_worker: Callable[..., Any],
    big_guide: bytes,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    source, before = await _first_guide(guides, sources, await make_worker())
    guides.put("/guide.xml", big_guide)
    job_id = await sources.request_update(source)

    process = _spawn_worker(database_url, redis_url, tmp_path / "killed")
    try:
        progress = await _wait_for_import(sources.pool, process)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()
    assert progress["importedPrograms"] > 5000

    # The old guide is whole, and still the only one readers see.
    assert {r["id"] for r in await sources.programmes(source)} == before
    job = await sources.pool.fetchrow("SELECT state, attempts FROM jobs WHERE id = $1", job_id)
    assert (job["state"], job["attempts"]) == ("running", 1)

    # A surviving worker notices the silence, takes the job and finishes it.
    survivor = await make_worker(epg_stale_after=0.5)
    await asyncio.sleep(1.0)
    await survivor.maintain()
    await run_queued(survivor)

    job = await sources.pool.fetchrow("SELECT state, attempts FROM jobs WHERE id = $1", job_id)
    assert (job["state"], job["attempts"]) == ("done", 2)
    history = await sources.pool.fetch(
        "SELECT status, message FROM epg_fetches WHERE epg_source_id = $1 ORDER BY id", source
    )
    assert [h["status"] for h in history] == ["success", "error", "success"]
    assert history[1]["message"] == fetches.ABANDONED
    assert len(await sources.programmes(source)) > 30_000
    async with sources.pool.acquire() as conn:
        assert await jobs.claim(conn, KIND, "nobody") is None

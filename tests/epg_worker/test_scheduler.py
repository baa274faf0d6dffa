"""Scheduling, claiming and recovering updates with several workers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg

from catena import jobs
from epg_worker import update
from epg_worker.scheduler import KIND, Worker
from tests.epg_worker.conftest import GuideServer, Sources, document, run_queued, schedule

GUIDE = document(schedule(["one", "two"], 6))


async def _queued(pool: asyncpg.Pool) -> set[int]:
    rows = await pool.fetch("SELECT target_id FROM jobs WHERE kind = $1 AND state = 'queued'", KIND)
    return {r["target_id"] for r in rows}


async def test_sources_whose_period_passed_are_queued(
    guides: GuideServer, sources: Sources, worker: Worker
) -> None:
    url = guides.put("/guide.xml", GUIDE)
    never = await sources.create(url)
    overdue = await sources.create(url, period=2, last_attempt_at=_ago("49 hours"))
    recent = await sources.create(url, period=2, last_attempt_at=_ago("47 hours"))

    await worker.maintain()

    assert await _queued(sources.pool) == {never, overdue}
    assert recent  # attempted 47 h ago with a 2-day period: not due yet


async def test_a_failed_source_is_retried_after_retry_after(
    guides: GuideServer, sources: Sources, make_worker: Callable[..., Any]
) -> None:
    worker = await make_worker(epg_retry_after=3600)
    failing = await sources.create(guides.url("/status/503"))
    fetch = await sources.update(worker, failing)
    assert fetch["status"] == "error"

    await sources.pool.execute("UPDATE epg_sources SET last_attempt_at = now() - interval '59 minutes'")
    await worker.maintain()
    assert await _queued(sources.pool) == set()

    await sources.pool.execute("UPDATE epg_sources SET last_attempt_at = now() - interval '61 minutes'")
    await worker.maintain()
    assert await _queued(sources.pool) == {failing}


async def test_scheduling_twice_queues_one_job(guides: GuideServer, sources: Sources, worker: Worker) -> None:
    source = await sources.create(guides.put("/guide.xml", GUIDE))
    requested = await sources.request_update(source)
    await worker.maintain()
    await worker.maintain()
    rows = await sources.pool.fetch("SELECT id FROM jobs WHERE target_id = $1", source)
    assert [r["id"] for r in rows] == [requested]


async def test_two_workers_racing_import_each_source_once(
    guides: GuideServer, sources: Sources, make_worker: Callable[..., Any]
) -> None:
    url = guides.put("/guide.xml", GUIDE)
    ids = [await sources.create(url) for _ in range(6)]
    for source in ids:
        await sources.request_update(source)
    first, second = await make_worker("alpha"), await make_worker("beta")

    await asyncio.gather(first.claim_all(), second.claim_all(), first.claim_all(), second.claim_all())
    while first.running or second.running:
        await asyncio.gather(*first.running, *second.running)
        await asyncio.gather(first.claim_all(), second.claim_all())

    fetches = await sources.pool.fetch("SELECT epg_source_id, status FROM epg_fetches")
    assert sorted(f["epg_source_id"] for f in fetches) == sorted(ids)
    assert {f["status"] for f in fetches} == {"success"}
    workers = await sources.pool.fetch("SELECT DISTINCT locked_by FROM jobs")
    assert {w["locked_by"] for w in workers} == {"alpha", "beta"}
    for source in ids:
        assert len(await sources.programmes(source)) == 12


async def test_a_source_being_updated_elsewhere_is_postponed(
    guides: GuideServer, sources: Sources, worker: Worker, database_url: str
) -> None:
    source = await sources.create(guides.put("/guide.xml", GUIDE))
    job_id = await sources.request_update(source)
    # Another worker holds the source's update lock (its job was reclaimed while
    # it was still running).
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1, hashint8($2))", update.LOCK_CLASS, source)
        await run_queued(worker)
    finally:
        await holder.close()
    job = await sources.pool.fetchrow(
        "SELECT state, run_after > now() AS later, error FROM jobs WHERE id = $1", job_id
    )
    assert (job["state"], job["later"]) == ("queued", True)
    assert job["error"] == "the source is being updated by another worker"
    assert await sources.pool.fetchval("SELECT count(*) FROM epg_fetches") == 0


async def test_job_of_a_dead_worker_is_reclaimed_and_finished(
    guides: GuideServer, sources: Sources, make_worker: Callable[..., Any]
) -> None:
    source = await sources.create(guides.put("/guide.xml", GUIDE))
    job_id = await sources.request_update(source)
    async with sources.pool.acquire() as conn:
        claimed = await jobs.claim(conn, KIND, "dead-worker")
        assert claimed is not None and claimed["id"] == job_id
        # It got as far as opening its fetch record, then died.
        from epg_worker import fetches

        abandoned = await fetches.start(conn, sources.portal_id, source, job_id)
        await conn.execute(
            "UPDATE jobs SET heartbeat_at = now() - interval '10 minutes' WHERE id = $1", job_id
        )

    worker = await make_worker(epg_stale_after=60)
    await worker.maintain()
    await run_queued(worker)

    job = await sources.pool.fetchrow("SELECT state, attempts, locked_by FROM jobs WHERE id = $1", job_id)
    assert (job["state"], job["attempts"], job["locked_by"]) == ("done", 2, worker.ctx.worker)
    dead = await sources.pool.fetchrow("SELECT status, message FROM epg_fetches WHERE id = $1", abandoned)
    assert dead["status"] == "error" and dead["message"] == fetches.ABANDONED
    assert (await sources.last_fetch(source))["status"] == "success"


async def test_the_whole_update_is_bounded_by_the_job_timeout(
    guides: GuideServer, sources: Sources, make_worker: Callable[..., Any]
) -> None:
    worker = await make_worker(epg_job_timeout=1.0, epg_read_timeout=30.0)
    source = await sources.create(guides.url("/stall"))
    fetch = await sources.update(worker, source)
    assert fetch["status"] == "timeout"
    assert fetch["message"].startswith("the update did not finish within 1 s (CATENA_EPG_JOB_TIMEOUT)")


async def test_progress_of_a_running_update_is_visible(
    guides: GuideServer, sources: Sources, make_worker: Callable[..., Any]
) -> None:
    worker, _, _ = await _stalled_update(guides, sources, make_worker)
    progress = None
    for _ in range(100):
        progress = await sources.pool.fetchval("SELECT progress FROM epg_fetches WHERE status = 'pending'")
        if progress and progress.get("receivedBytes"):
            break
        await asyncio.sleep(0.05)
    assert progress is not None
    assert progress["phase"] == "downloading" and progress["receivedBytes"] == len(guides.stall_after)
    await worker.stop()


async def test_stopping_a_worker_requeues_its_updates(
    guides: GuideServer, sources: Sources, make_worker: Callable[..., Any]
) -> None:
    worker, source, job_id = await _stalled_update(guides, sources, make_worker)
    await asyncio.sleep(0.3)
    await worker.stop()

    fetch = await sources.last_fetch(source)
    assert fetch["status"] == "error"
    assert fetch["message"] == "the worker was stopped during the update; it will be retried"
    job = await sources.pool.fetchrow("SELECT state, locked_by FROM jobs WHERE id = $1", job_id)
    assert (job["state"], job["locked_by"]) == ("queued", None)


async def test_a_worker_that_lost_its_job_stops_its_update(
    guides: GuideServer, sources: Sources, make_worker: Callable[..., Any]
) -> None:
    worker, source, job_id = await _stalled_update(guides, sources, make_worker)
    await asyncio.sleep(0.2)
    # The job was reclaimed and claimed by someone else in the meantime.
    await sources.pool.execute("UPDATE jobs SET locked_by = 'someone-else' WHERE id = $1", job_id)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.gather(*worker.running), 5)
    fetch = await sources.last_fetch(source)
    assert (fetch["status"], fetch["message"]) == ("error", "another worker took this update over")
    job = await sources.pool.fetchrow("SELECT state, locked_by FROM jobs WHERE id = $1", job_id)
    assert (job["state"], job["locked_by"]) == ("running", "someone-else")


async def _stalled_update(
    guides: GuideServer, sources: Sources, make_worker: Callable[..., Any]
) -> tuple[Worker, int, int]:
    """A worker busy downloading from a server that stopped sending."""
    worker = await make_worker(epg_read_timeout=30.0)
    source = await sources.create(guides.url("/stall"))
    job_id = await sources.request_update(source)
    await worker.claim_all()
    return worker, source, job_id


def _ago(interval: str) -> Any:
    import datetime as dt

    hours = int(interval.split()[0])
    return dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)

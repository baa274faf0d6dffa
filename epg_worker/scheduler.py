"""The worker loop: claim update jobs, queue the due ones, requeue the abandoned ones.

Any number of worker processes may run this loop against one database.  Jobs are
claimed with ``FOR UPDATE SKIP LOCKED`` (:func:`catena.jobs.claim`), so each is taken
by one worker; a source has at most one queued or running job (the ``jobs_pending``
index), and its update holds an advisory lock (:mod:`epg_worker.update`), so it is
never fetched twice at once.  A running job whose worker stopped sending heartbeats
is queued again after ``epg_stale_after`` seconds and picked up by whoever is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg

from catena import jobs, portals

from . import importer, metrics, update

log = logging.getLogger("epg_worker.scheduler")

KIND = "epg_update"

_DUE = """
SELECT s.id, s.portal_id FROM epg_sources s
LEFT JOIN epg_fetches f ON f.id = s.last_fetch_id
WHERE (s.last_attempt_at IS NULL
       OR s.last_attempt_at <= now() - make_interval(days => s.period)
       OR (f.status IN ('error', 'timeout')
           AND s.last_attempt_at <= now() - make_interval(secs => $1)))
  AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.kind = $2 AND j.target_id = s.id
                  AND j.state IN ('queued', 'running'))
ORDER BY s.last_attempt_at NULLS FIRST
LIMIT 1000
"""
_SOURCES_WITH_SETTINGS = """
SELECT s.id, p.settings FROM epg_sources s JOIN portals p ON p.id = s.portal_id
"""
_PRUNE = """
DELETE FROM epg_programs
WHERE epg_source_id = $1 AND start_at < to_timestamp($2) AND coalesce(end_at, start_at) < to_timestamp($2)
"""

DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


class Worker:
    """Runs up to ``epg_concurrency`` updates at once."""

    def __init__(self, ctx: update.Context) -> None:
        self.ctx = ctx
        self.free_slots = ctx.settings.epg_concurrency
        self.running: set[asyncio.Task[None]] = set()
        self.last_loop = time.monotonic()
        self._wake = asyncio.Event()

    async def run(self) -> None:
        """Loop until cancelled; database outages are logged and waited out."""
        settings = self.ctx.settings
        next_maintenance = 0.0
        while True:
            try:
                if time.monotonic() >= next_maintenance:
                    await self.maintain()
                    next_maintenance = time.monotonic() + settings.epg_schedule_interval
                await self.claim_all()
            except DB_ERRORS:
                log.exception("database unavailable; retrying")
            self.last_loop = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), settings.epg_poll_interval)
            self._wake.clear()

    async def maintain(self) -> None:
        """Requeue jobs of dead workers and queue updates for sources whose period passed."""
        settings = self.ctx.settings
        async with self.ctx.pool.acquire() as conn:
            reclaimed = await jobs.reclaim_stale(conn, settings.epg_stale_after, KIND)
            if reclaimed:
                metrics.RECLAIMED.inc(len(reclaimed))
                log.warning("jobs of a stopped worker queued again", extra={"jobs": reclaimed})
            for row in await conn.fetch(_DUE, settings.epg_retry_after, KIND):
                await jobs.enqueue(conn, KIND, row["portal_id"], row["id"])
                metrics.SCHEDULED.inc()

    async def claim_all(self) -> None:
        """Start as many queued jobs as there are free slots."""
        while self.free_slots:
            # The slot is taken before the claim so that concurrent calls never
            # claim more jobs than there are slots.
            self.free_slots -= 1
            row = None
            try:
                async with self.ctx.pool.acquire() as conn:
                    row = await jobs.claim(conn, KIND, self.ctx.worker)
            finally:
                if row is None:
                    self.free_slots += 1
            if row is None:
                return
            job = update.Job(id=row["id"], portal_id=row["portal_id"], source_id=row["target_id"])
            task = asyncio.create_task(self._run(job))
            self.running.add(task)
            task.add_done_callback(self.running.discard)

    async def _run(self, job: update.Job) -> None:
        try:
            await update.run(self.ctx, job)
        except DB_ERRORS:
            # The job stays running without heartbeats and is reclaimed later.
            log.exception("update stopped by a database failure", extra={"job": job.id})
        finally:
            self.free_slots += 1
            self._wake.set()

    async def stop(self) -> None:
        """Interrupt running updates; each records the interruption and requeues its job."""
        for task in list(self.running):
            task.cancel()
        await asyncio.gather(*self.running, return_exceptions=True)

    async def prune(self) -> int:
        """Delete programmes older than their portal's archive depth; return how many."""
        deleted = 0
        async with self.ctx.pool.acquire() as conn:
            for row in await conn.fetch(_SOURCES_WITH_SETTINGS):
                days = portals.load_settings(row["settings"]).archiveDays
                status = await conn.execute(_PRUNE, row["id"], importer.archive_cutoff(days))
                deleted += int(status.split()[-1])
        metrics.PRUNED.inc(deleted)
        return deleted

    async def prune_forever(self) -> None:
        while True:
            try:
                deleted = await self.prune()
                if deleted:
                    log.info("old programmes pruned", extra={"deleted": deleted})
            except DB_ERRORS:
                log.exception("pruning failed; will retry")
            await asyncio.sleep(self.ctx.settings.epg_prune_interval)

"""One update of one EPG source: download, import, record — whatever happens.

:func:`run` is what a claimed ``epg_update`` job does.  It takes the source's update
lock (a PostgreSQL advisory lock on its own connection, so that a second worker can
never fetch the same source at the same time, and a dead worker's lock vanishes with
its connection), opens the pending fetch record, and ends it as ``success``,
``error`` or ``timeout`` with a message that says what happened.  Nothing a
provider sends can make it raise: the worker goes on with other sources.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from catena import db, ids, jobs, portals
from catena.settings import EpgSettings

from . import fetcher, fetches, importer, metrics
from .fetcher import FetchFailed
from .importer import ImportFailed

log = logging.getLogger("epg_worker.update")

# Advisory lock class of "an EPG source being updated" (docs/contracts.md lists the
# classes); the second key is hashint8(source id).
LOCK_CLASS = 4001
RELOCK_DELAY = 30.0

_SOURCE = """
SELECT s.id, s.portal_id, s.name, s.url, s.time_shift, s.http_etag, s.http_last_modified,
       s.imported_url, s.imported_time_shift, s.imported_sha256, p.settings
FROM epg_sources s JOIN portals p ON p.id = s.portal_id
WHERE s.id = $1 AND s.portal_id = $2
"""
_TRY_LOCK = "SELECT pg_try_advisory_lock($1, hashint8($2))"
_LINKED = """
SELECT name, epg_channel_name FROM channels
WHERE portal_id = $1 AND epg_source_name = $2 AND epg_channel_name IS NOT NULL
"""


@dataclass(frozen=True)
class Job:
    id: int
    portal_id: int
    source_id: int


@dataclass(frozen=True)
class Source:
    id: int
    portal_id: int
    name: str
    url: str
    time_shift: int
    archive_days: int
    previous: fetches.ImportedFile | None  # what the current guide was imported from


@dataclass
class Context:
    """What every update of one worker process shares."""

    settings: EpgSettings
    pool: asyncpg.Pool
    downloader: fetcher.Downloader
    worker: str
    download_dir: Path


@dataclass
class Phase:
    """Where a running update is, for its progress record and log."""

    name: str = "downloading"
    started: float = field(default_factory=time.monotonic)
    download: fetcher.Progress = field(default_factory=fetcher.Progress)
    stats: importer.Stats = field(default_factory=importer.Stats)
    file_size: int = 0


class LostJob(Exception):
    """Another worker took the job over (this one missed its heartbeats)."""


async def run(ctx: Context, job: Job) -> None:
    """Carry out one claimed job, recording the attempt; never raises for bad input."""
    source = await load_source(ctx.pool, job)
    if source is None:
        await _gone(ctx, job)
        return
    conn = await db.connect(ctx.settings.database_url)
    try:
        await importer.prepare(conn)
        if not await conn.fetchval(_TRY_LOCK, LOCK_CLASS, source.id):
            await _busy(ctx, job)
            return
        await Attempt(ctx, job, source, conn).run()
    except asyncpg.ForeignKeyViolationError:
        await _gone(ctx, job)  # the source was deleted before its fetch record was made
    finally:
        await _close(conn)


async def _gone(ctx: Context, job: Job) -> None:
    async with ctx.pool.acquire() as conn:
        await jobs.finish(conn, job.id, ctx.worker, ok=False, error="the EPG source no longer exists")


async def _close(conn: asyncpg.Connection) -> None:
    # Closing politely also ends the session's advisory lock; a connection left in
    # a bad state by a cancelled COPY is cut instead, which does the same.
    try:
        await conn.close(timeout=5)
    except Exception:
        conn.terminate()


async def load_source(pool: asyncpg.Pool, job: Job) -> Source | None:
    row = await pool.fetchrow(_SOURCE, job.source_id, job.portal_id)
    if row is None:
        return None
    previous = None
    if row["imported_url"] is not None:
        previous = fetches.ImportedFile(
            url=row["imported_url"],
            time_shift=row["imported_time_shift"],
            etag=row["http_etag"],
            last_modified=row["http_last_modified"],
            sha256=bytes(row["imported_sha256"] or b""),
        )
    return Source(
        id=row["id"],
        portal_id=row["portal_id"],
        name=row["name"],
        url=row["url"],
        time_shift=row["time_shift"],
        archive_days=portals.load_settings(row["settings"]).archiveDays,
        previous=previous,
    )


async def linked_channels(conn: asyncpg.Connection, portal_id: int, source_name: str) -> dict[str, str]:
    """The portal's channels that take their guide from this source: XMLTV id → channel name."""
    rows = await conn.fetch(_LINKED, portal_id, source_name)
    return {row["epg_channel_name"]: row["name"] for row in rows}


def describe_links(links: dict[str, str], stats: importer.Stats) -> str:
    """The mismatches between the file's channels and the channels linked to the source.

    Both are worth an operator's attention: a linked channel missing from the file
    shows no guide; a channel of the file nobody links is usually a typo in a link.
    """
    if stats.channels_overflow:
        return ""
    text = ""
    names = stats.channel_names
    missing = sorted((name, xmltv_id) for xmltv_id, name in links.items() if xmltv_id not in names)
    if missing:
        examples = ", ".join(f"{name} ({xmltv_id!r})" for name, xmltv_id in missing[:5])
        text += f"; {len(missing)} linked channels have no programmes in the file: {examples}"
    unlinked = len(stats.channel_names) - (len(links) - len(missing))
    if unlinked:
        text += f"; {unlinked} channels of the file are not linked to a Catena channel"
    return text


async def _busy(ctx: Context, job: Job) -> None:
    # Another worker is updating this source (its job was reclaimed while it was
    # still alive); try again once it is likely done.
    log.warning("source is being updated by another worker; job postponed", extra={"job": job.id})
    async with ctx.pool.acquire() as conn:
        await jobs.retry_later(
            conn, job.id, ctx.worker, "the source is being updated by another worker", RELOCK_DELAY
        )


class Attempt:
    """One attempt: its fetch record, its temporary file, its watchdogs."""

    def __init__(self, ctx: Context, job: Job, source: Source, conn: asyncpg.Connection) -> None:
        self.ctx = ctx
        self.job = job
        self.source = source
        self.conn = conn
        self.phase = Phase()
        self.fetch_id = 0
        # Unique among the processes sharing the directory, and says whose it is.
        self.path = ctx.download_dir / f"fetch-{os.getpid()}-{job.id}.download"
        self.lost = False

    async def run(self) -> None:
        self.fetch_id = await fetches.start(self.conn, self.source.portal_id, self.source.id, self.job.id)
        log.info("update started", extra=self._log_fields())
        metrics.ACTIVE.inc()
        body = asyncio.ensure_future(self._body())
        watchdogs = [asyncio.ensure_future(self._heartbeats(body)), asyncio.ensure_future(self._progress())]
        try:
            await body
        except asyncio.CancelledError:
            if not self.lost:
                raise
        finally:
            metrics.ACTIVE.dec()
            for task in watchdogs:
                task.cancel()
            await asyncio.gather(*watchdogs, return_exceptions=True)
            self.path.unlink(missing_ok=True)

    async def _body(self) -> None:
        try:
            async with asyncio.timeout(self.ctx.settings.epg_job_timeout):
                await self._update()
        except FetchFailed as exc:
            await self._failed(exc.status, exc.message)
        except ImportFailed as exc:
            await self._failed("error", str(exc))
        except TimeoutError:
            await self._failed("timeout", self._too_long())
        except asyncio.CancelledError:
            await self._interrupted()
            raise
        except Exception as exc:  # a bug or a database failure: record it, keep the worker up
            log.exception("update failed unexpectedly", extra=self._log_fields())
            await self._failed("error", f"internal error during the {self.phase.name} phase: {exc!r}")

    async def _update(self) -> None:
        download_started = time.monotonic()
        download = await self._download()
        fetched_at = time.time()
        fetch_duration = time.monotonic() - download_started
        unchanged = self._unchanged(download)
        if unchanged is not None:
            result = fetches.Result(
                "success", unchanged, fetch_duration=fetch_duration, fetched_at=fetched_at
            )
            await self._finish(result)
            self._finished(result)
            return
        await self._import(download, fetch_duration, fetched_at)

    async def _download(self) -> fetcher.Download:
        self.ctx.download_dir.mkdir(parents=True, exist_ok=True)
        return await self.ctx.downloader.download(
            self.source.url, self.path, self._validators(), self.phase.download
        )

    def _validators(self) -> fetcher.Validators:
        previous = self.source.previous
        if previous is None or not self._same_settings(previous):
            return fetcher.Validators()
        return fetcher.Validators(etag=previous.etag, last_modified=previous.last_modified)

    def _same_settings(self, previous: fetches.ImportedFile) -> bool:
        return previous.url == self.source.url and previous.time_shift == self.source.time_shift

    def _unchanged(self, download: fetcher.Download) -> str | None:
        """Why the current guide can stay as it is, or ``None`` when the file must be imported."""
        if download.unchanged:
            return f"not modified since the last import (HTTP 304 from {download.url}); the guide was kept"
        previous = self.source.previous
        if previous is not None and self._same_settings(previous) and previous.sha256 == download.sha256:
            return "the file is the same as the one last imported (same SHA-256); the guide was kept"
        return None

    async def _import(self, download: fetcher.Download, fetch_duration: float, fetched_at: float) -> None:
        self.phase.name = "importing"
        self.phase.file_size = download.size
        self.phase.started = time.monotonic()
        target = importer.Target(
            portal_id=self.source.portal_id,
            source_id=self.source.id,
            fetch_id=self.fetch_id,
            time_shift=self.source.time_shift,
            cutoff=importer.archive_cutoff(self.source.archive_days),
        )
        file = fetches.ImportedFile(
            self.source.url,
            self.source.time_shift,
            download.validators.etag,
            download.validators.last_modified,
            download.sha256,
        )

        results = []

        async def finish(conn: asyncpg.Connection, stats: importer.Stats) -> None:
            # Runs inside the import's transaction: the record commits with the guide.
            result = self._success(stats, download, fetch_duration, fetched_at)
            links = await linked_channels(conn, self.source.portal_id, self.source.name)
            result.message += describe_links(links, stats)
            await fetches.remember_file(conn, self.source.id, file)
            await self._finish(result, conn)
            results.append(result)

        await importer.import_guide(
            self.conn, self.path, target, self.phase.stats, finish, self.ctx.settings.epg_max_bytes
        )
        metrics.PROGRAMS.inc(self.phase.stats.imported)
        self._finished(results[0])

    def _success(
        self, stats: importer.Stats, download: fetcher.Download, fetch_duration: float, fetched_at: float
    ) -> fetches.Result:
        message = (
            f"imported {stats.imported} of {stats.found} programmes for {stats.channels} channels "
            f"({fetcher.human_size(download.size)}), replacing {stats.deleted} programmes of the "
            f"previous guide{importer.describe(stats)}"
        )
        return fetches.Result(
            "success",
            message,
            channels=stats.channels,
            found=stats.found,
            imported=stats.imported,
            deleted=stats.deleted,
            fetch_duration=fetch_duration,
            import_duration=time.monotonic() - self.phase.started,
            fetched_at=fetched_at,
        )

    async def _failed(self, status: fetches.Status, message: str) -> None:
        stats = self.phase.stats
        duration = time.monotonic() - self.phase.started
        result = fetches.Result(status, message, found=stats.found)
        if self.phase.name == "importing":
            result.import_duration = duration
        else:
            result.fetch_duration = duration
        async with self.ctx.pool.acquire() as conn:
            await self._finish(result, conn)
        self._finished(result)

    async def _finish(self, result: fetches.Result, conn: asyncpg.Connection | None = None) -> None:
        """Record the end of the attempt and of its job, in one transaction."""
        conn = conn or self.conn
        async with conn.transaction():
            await fetches.finish(conn, self.source.id, self.fetch_id, result)
            await jobs.finish(
                conn,
                self.job.id,
                self.ctx.worker,
                ok=result.status == "success",
                result={"epgFetchId": ids.encode(self.fetch_id), "status": result.status},
                error=None if result.status == "success" else result.message,
            )

    def _finished(self, result: fetches.Result) -> None:
        """Count and log an attempt whose record is committed."""
        metrics.FETCHES.labels(result.status).inc()
        metrics.DURATION.labels(result.status).observe(
            (result.fetch_duration or 0) + (result.import_duration or 0)
        )
        fields = {**self._log_fields(), "status": result.status, "result": result.message}
        if result.status == "success":
            log.info("update finished", extra=fields)
        else:
            log.warning("update failed", extra=fields)

    async def _interrupted(self) -> None:
        """The worker is stopping (or lost the job): record it, and let the job run again."""
        message = (
            "another worker took this update over"
            if self.lost
            else "the worker was stopped during the update; it will be retried"
        )
        with contextlib.suppress(Exception):
            async with self.ctx.pool.acquire() as conn, conn.transaction():
                await fetches.finish(conn, self.source.id, self.fetch_id, fetches.Result("error", message))
                if not self.lost:
                    await jobs.retry_later(conn, self.job.id, self.ctx.worker, message, 0.0)

    def _too_long(self) -> str:
        limit = self.ctx.settings.epg_job_timeout
        return (
            f"the update did not finish within {limit:g} s (CATENA_EPG_JOB_TIMEOUT); "
            f"it was stopped while {self.phase.name}"
        )

    async def _heartbeats(self, body: asyncio.Future[None]) -> None:
        interval = self.ctx.settings.epg_heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.ctx.pool.acquire() as conn:
                    alive = await jobs.heartbeat(conn, self.job.id, self.ctx.worker)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                log.warning("heartbeat failed; will retry", extra=self._log_fields())
                continue
            if not alive:
                self.lost = True
                body.cancel()
                return

    async def _progress(self) -> None:
        while True:
            await asyncio.sleep(self.ctx.settings.epg_progress_interval)
            state = self.progress()
            log.info("update progress", extra={**self._log_fields(), **state})
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await fetches.progress(self.ctx.pool, self.fetch_id, state)

    def progress(self) -> dict[str, Any]:
        """The ``progress`` object of the pending fetch record."""
        phase = self.phase
        state: dict[str, Any] = {"phase": phase.name, "elapsed": round(time.monotonic() - phase.started, 1)}
        if phase.name == "downloading":
            state["receivedBytes"] = phase.download.received
            state["totalBytes"] = phase.download.total
            return state
        stats = phase.stats
        if phase.file_size:
            state["percent"] = round(100.0 * stats.file_position / phase.file_size, 1)
        state["foundPrograms"] = stats.found
        state["importedPrograms"] = stats.imported
        return state

    def _log_fields(self) -> dict[str, Any]:
        return {"job": self.job.id, "source": self.source.id, "fetch": self.fetch_id, "url": self.source.url}

"""``/stats``: the portal at a glance, for the console's dashboard and for monitoring.

The session and subscriber figures come from counters the writers keep
(``catena/migrations/0800_stats.sql``): each statement that writes ``play_sessions``,
``subscribers`` or ``subscriptions`` adds small delta rows, which this module sums
and a background task folds every minute.  The guide figure costs an index probe
per channel, so each process keeps it per portal (:class:`GuideCache`): it is
made again at once when the portal's channels or imported guides change, and in
the background, while the last one is served, once it is a minute old.
Everything else is read in one ``REPEATABLE READ`` snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

import asyncpg
import msgspec
from aiohttp import web
from msgspec import Meta

from catena import ids, tasks

from . import keys
from .auth import authenticate_manager
from .client.catalog import OPEN_END
from .principal import Principal
from .routing import Api, Call
from .schema import Response, TextId
from .services import Services

api = Api("Statistics", auth=authenticate_manager)
log = logging.getLogger("admin_api.stats")

# Channels without programmes listed at most (the count covers them all).
MAX_LISTED = 100
COMPACT_EVERY = 60.0
# Seconds a portal's guide figure is served before it is made again in the background.
GUIDE_FRESH = 60.0
GUIDE_PORTALS = 10_000
GUIDE_AHEAD = timedelta(hours=24)
STALE_AFTER = timedelta(days=2)
UtcSeconds = Annotated[datetime, Meta(examples=["2024-10-16T14:00:00Z"])]


class StatsQuery(msgspec.Struct, kw_only=True):
    top: Annotated[int, Meta(ge=1, le=100, description="how many channels topChannels lists")] = 10


class ChannelViewers(Response):
    channelId: Annotated[TextId | None, Meta(description="null when the channel was deleted")]
    name: str
    title: str | None
    viewers: int


class SubscriberCounts(Response):
    total: int
    disabled: int
    withPackages: Annotated[int, Meta(description="subscribers with at least one explicit subscription")]


class HourOpens(Response):
    hour: UtcSeconds
    opened: int


class ChannelWithoutGuide(Response):
    channelId: TextId
    name: str
    title: str
    epgSourceName: str | None
    epgChannelName: str | None


class ChannelsWithoutProgrammes(Response):
    count: int
    channels: Annotated[list[ChannelWithoutGuide], Meta(description=f"the first {MAX_LISTED} by name")]


class EpgSourceProblem(Response):
    epgSourceId: TextId
    name: str
    problem: Annotated[str, Meta(extra_json_schema={"enum": ["failed", "stale", "never"]})]
    lastFetchAt: UtcSeconds | None
    lastFetchStatus: str | None
    message: str | None


class Stats(Response):
    generatedAt: UtcSeconds
    viewersNow: Annotated[int, Meta(description="open play sessions")]
    subscribersWatchingNow: Annotated[int, Meta(description="distinct subscribers with an open session")]
    topChannels: list[ChannelViewers]
    subscribers: SubscriberCounts
    sessionsOpenedPerHour: Annotated[
        list[HourOpens], Meta(description="24 hours, oldest first; the last is the current hour so far")
    ]
    channelsWithoutProgrammes: ChannelsWithoutProgrammes
    epgSourcesWithProblems: list[EpgSourceProblem]


# Custom plans cost more to make than these statements take to run, and the guide
# probe's custom plan is twice as slow as its generic one (transaction-local).
_GENERIC_PLANS_NOW = (
    "SELECT set_config('plan_cache_mode', 'force_generic_plan', true), date_trunc('second', now())"
)
_COUNTERS = "SELECT name, sum(value)::bigint AS value FROM stats_counters WHERE portal_id = $1 GROUP BY name"
# The total comes with the top rows: one pass over the per-channel counters.
_TOP = """
WITH v AS (
    SELECT channel_name, sum(viewers)::bigint AS viewers FROM stats_channel_viewers WHERE portal_id = $1
    GROUP BY channel_name HAVING sum(viewers) > 0
), t AS (SELECT * FROM v ORDER BY viewers DESC, channel_name LIMIT $2)
SELECT t.channel_name, t.viewers, c.id, c.title, (SELECT sum(viewers) FROM v)::bigint AS total
FROM t LEFT JOIN channels c ON c.portal_id = $1 AND c.name = t.channel_name
ORDER BY t.viewers DESC, t.channel_name
"""
_HOURS = """
SELECT h.hour, coalesce(sum(o.opened), 0)::bigint AS opened
FROM generate_series(date_trunc('hour', $2::timestamptz, 'UTC') - interval '23 hours',
                     date_trunc('hour', $2::timestamptz, 'UTC'), interval '1 hour') AS h(hour)
LEFT JOIN stats_session_opens o ON o.portal_id = $1 AND o.hour = h.hour
GROUP BY h.hour ORDER BY h.hour
"""
# A channel has a guide for the next 24 hours when the latest programme starting
# before then has not ended by now; one without an end runs at most OPEN_END
# (the client API's rule).  Unlinked channels, and those naming a source that
# does not exist, have none.
_WITHOUT_GUIDE = """
SELECT c.id, c.name, c.title, c.epg_source_name, c.epg_channel_name, count(*) OVER () AS total
FROM channels c
LEFT JOIN epg_sources s ON s.portal_id = c.portal_id AND s.name = c.epg_source_name
WHERE c.portal_id = $1 AND NOT coalesce((
    SELECT p.start_at >= $2 OR p.end_at > $2 OR (p.end_at IS NULL AND p.start_at > $2 - $4::interval)
    FROM epg_programs p
    WHERE p.epg_source_id = s.id AND p.epg_channel_name = c.epg_channel_name
      AND p.start_at < $2 + $3::interval
    ORDER BY p.start_at DESC LIMIT 1), false)
ORDER BY c.name LIMIT $5
"""
# What the guide figure depends on besides the clock: the portal's channels (any
# edit bumps updated_at; a deletion changes the count) and each source's imported
# guide (a new import changes its hash; a new or renamed source its row).
_GUIDE_VERSION = """
SELECT (SELECT count(*) || ':' || coalesce(max(updated_at)::text, '') FROM channels WHERE portal_id = $1)
    || '/' || coalesce((SELECT string_agg(concat_ws(':', id, name, encode(imported_sha256, 'hex'),
                                                    imported_time_shift), ',' ORDER BY id)
                        FROM epg_sources WHERE portal_id = $1), '')
"""
_EPG_PROBLEMS = """
SELECT s.id, s.name, f.status, nullif(f.message, '') AS message,
       date_trunc('second', coalesce(f.fetched_at, f.created_at)) AS fetched_at
FROM epg_sources s LEFT JOIN epg_fetches f ON f.id = s.last_fetch_id
WHERE s.portal_id = $1
  AND (f.id IS NULL OR f.status IN ('error', 'timeout')
       OR coalesce(f.fetched_at, f.created_at) < $2::timestamptz - $3::interval)
ORDER BY s.name
"""


# Actions: what the JSON handler below and the console call.


async def get_stats(services: Services, actor: Principal, query: StatsQuery) -> Stats:
    """The portal now: viewers, top channels, subscribers, opens per hour, guide and EPG problems."""
    async with services.db.acquire() as conn:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            now: datetime = (await conn.fetchrow(_GENERIC_PLANS_NOW))[1]
            counters = {r["name"]: r["value"] for r in await conn.fetch(_COUNTERS, actor.portal_id)}
            top = await conn.fetch(_TOP, actor.portal_id, query.top)
            hours = await conn.fetch(_HOURS, actor.portal_id, now)
            unguided = await _GUIDES.get(services.db, conn, actor.portal_id, now)
            problems = await conn.fetch(_EPG_PROBLEMS, actor.portal_id, now, STALE_AFTER)
    return Stats(
        generatedAt=now,
        viewersNow=top[0]["total"] if top else 0,
        subscribersWatchingNow=counters.get("watchers", 0),
        topChannels=[_viewers(r) for r in top],
        subscribers=SubscriberCounts(
            total=counters.get("subscribers", 0),
            disabled=counters.get("subscribers_disabled", 0),
            withPackages=counters.get("subscribers_with_packages", 0),
        ),
        sessionsOpenedPerHour=[HourOpens(hour=r["hour"], opened=r["opened"]) for r in hours],
        channelsWithoutProgrammes=unguided,
        epgSourcesWithProblems=[_problem(r) for r in problems],
    )


# The JSON API: decode, call the action, encode.


@api.get("/stats", response=Stats)
async def handle_get_stats(call: Call[None, StatsQuery]) -> Stats:
    """The portal now: viewers, top channels, subscribers, opens per hour, guide and EPG problems."""
    return await get_stats(call.services, call.caller, call.query)


def _viewers(row: asyncpg.Record) -> ChannelViewers:
    channel_id = row["id"]
    return ChannelViewers(
        channelId=None if channel_id is None else ids.encode(channel_id),
        name=row["channel_name"],
        title=row["title"],
        viewers=row["viewers"],
    )


@dataclass
class _Guide:
    version: str
    made: float
    figure: ChannelsWithoutProgrammes


class GuideCache:
    """Each portal's channels-without-programmes figure, kept while nothing it depends on changes.

    A changed version (channels or imported guides) is computed before answering;
    a figure only older than :data:`GUIDE_FRESH` is answered and remade in the
    background, so the clock's effect (a guide running out) shows within a minute
    or so and no dashboard refresh waits for the probes.
    """

    def __init__(self) -> None:
        self._entries: OrderedDict[int, _Guide] = OrderedDict()
        self._refreshing: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(
        self, pool: asyncpg.Pool, conn: asyncpg.Connection, portal_id: int, now: datetime
    ) -> ChannelsWithoutProgrammes:
        version: str = await conn.fetchval(_GUIDE_VERSION, portal_id)
        entry = self._entries.get(portal_id)
        if entry is None or entry.version != version:
            entry = await self._make(conn, portal_id, now, version)
        elif time.monotonic() - entry.made > GUIDE_FRESH and portal_id not in self._refreshing:
            self._refresh(pool, portal_id)
        self._entries.move_to_end(portal_id)
        return entry.figure

    async def _make(self, conn: asyncpg.Connection, portal_id: int, now: datetime, version: str) -> _Guide:
        rows = await conn.fetch(_WITHOUT_GUIDE, portal_id, now, GUIDE_AHEAD, OPEN_END, MAX_LISTED)
        figure = ChannelsWithoutProgrammes(
            count=rows[0]["total"] if rows else 0, channels=[_unguided(r) for r in rows]
        )
        entry = self._entries[portal_id] = _Guide(version, time.monotonic(), figure)
        while len(self._entries) > GUIDE_PORTALS:
            self._entries.popitem(last=False)
        return entry

    def _refresh(self, pool: asyncpg.Pool, portal_id: int) -> None:
        async def remake() -> None:
            try:
                async with pool.acquire() as conn:
                    async with conn.transaction(isolation="repeatable_read", readonly=True):
                        now = (await conn.fetchrow(_GENERIC_PLANS_NOW))[1]
                        await self._make(conn, portal_id, now, await conn.fetchval(_GUIDE_VERSION, portal_id))
            except Exception:
                log.exception("refreshing the guide figure failed", extra={"portal": portal_id})
            finally:
                self._refreshing.discard(portal_id)

        self._refreshing.add(portal_id)
        task = asyncio.create_task(remake())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def clear(self) -> None:
        self._entries.clear()


_GUIDES = GuideCache()


def _unguided(row: asyncpg.Record) -> ChannelWithoutGuide:
    return ChannelWithoutGuide(
        channelId=ids.encode(row["id"]),
        name=row["name"],
        title=row["title"],
        epgSourceName=row["epg_source_name"],
        epgChannelName=row["epg_channel_name"],
    )


def _problem(row: asyncpg.Record) -> EpgSourceProblem:
    status = row["status"]
    problem = "never" if status is None else "failed" if status in ("error", "timeout") else "stale"
    return EpgSourceProblem(
        epgSourceId=ids.encode(row["id"]),
        name=row["name"],
        problem=problem,
        lastFetchAt=row["fetched_at"],
        lastFetchStatus=status,
        message=row["message"],
    )


async def compact(pool: asyncpg.Pool) -> None:
    """Fold the counters' delta rows (``catena_stats_compact``)."""
    async with pool.acquire() as conn:
        await conn.execute("SELECT catena_stats_compact()")


async def background(app: web.Application) -> AsyncIterator[None]:
    """Compact the counters every minute while the application runs."""

    async def loop() -> None:
        while True:
            try:
                await compact(app[keys.DB])
            except Exception:
                log.exception("stats compaction failed; will retry")
            await asyncio.sleep(COMPACT_EVERY)

    task = asyncio.create_task(loop())
    yield
    await tasks.cancel_all([task])

"""Loading entries the in-process caches miss: from Redis, else from PostgreSQL.

One load per subscriber at a time (concurrent checks of one subscriber wait for
the same load).  A Redis entry is used when it is a record (or "does not exist")
built at or above the portal's floor; anything else is built from PostgreSQL and
written back.  While Redis is away the loader goes to PostgreSQL directly; while
both are away it keeps answering from in-process entries younger than
``auth_stale_limit`` and raises :class:`Unavailable` for the rest (``503``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import asyncpg
from redis.exceptions import RedisError

from catena import entitlement_map as emap_module
from catena.entitlement_map import EntitlementMap, Entry, PortalRecord, SubscriberRecord

from .batching import Batcher
from .caches import Caches, PortalEntry, PortalState, SubscriberEntry, TokenInfo
from .health import Health
from .metrics import Metrics

log = logging.getLogger("authgate.loader")

PG_TIMEOUT = 5.0
_PG_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


ReadRequest = tuple[int, int, bool, bool]
ReadResult = tuple[Entry | None, Entry | None, float]


class Unavailable(Exception):
    """Neither Redis nor PostgreSQL can give an entry, and none in memory may answer."""


class Loader:
    def __init__(
        self,
        caches: Caches,
        emap: EntitlementMap,
        pool: Callable[[], asyncpg.Pool | None],
        health: Health,
        metrics: Metrics,
        *,
        deny_duration: int,
        usable: Callable[[float], bool],
    ) -> None:
        self.caches = caches
        self.emap = emap
        self.pool = pool
        self.health = health
        self.metrics = metrics
        self.deny_duration = deny_duration
        # Whether an in-process entry loaded at a given time may still answer.
        self.usable = usable
        # Entries missing from the process are read from Redis in one MGET per turn.
        self._reads: Batcher[ReadRequest, ReadResult] = Batcher(self._read_batch)
        self._inflight: dict[tuple[int, int], asyncio.Future[tuple[SubscriberEntry, PortalEntry]]] = {}

    async def ensure(self, info: TokenInfo) -> tuple[SubscriberEntry, PortalEntry]:
        """Usable entries for the token's subscriber and portal (raises :class:`Unavailable`)."""
        key = (info.subscriber_id, info.portal_id)
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._load(info))
            self._inflight[key] = future
            future.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(future)

    async def _load(self, info: TokenInfo) -> tuple[SubscriberEntry, PortalEntry]:
        state = info.state
        epoch, generation = state.epoch, state.generation
        sub = self.caches.subscribers.get(info.subscriber_id)
        if sub is not None and (sub.dead or sub.generation != generation or not self.usable(sub.checked_at)):
            sub = None
        entry = state.entry if state.entry is not None and self.usable(state.entry.checked_at) else None
        if sub is None:
            self.metrics.subscriber_misses += 1
        if entry is None:
            self.metrics.portal_misses += 1
        if sub is None or entry is None:
            sub, entry = await self._fetch(info, state, sub, entry)
        if state.epoch == epoch:
            # No signal of the portal arrived meanwhile: what was read is current.
            self.caches.subscribers.put(sub.id, sub)
            state.entry = entry
        info.sub = sub
        return sub, entry

    async def _fetch(
        self, info: TokenInfo, state: PortalState, sub: SubscriberEntry | None, entry: PortalEntry | None
    ) -> tuple[SubscriberEntry, PortalEntry]:
        # While a signal's tombstones are on their way, Redis may still hold the entries
        # it dropped here: read before they land and cached, such an entry would outlive
        # the tombstone (a revoked subscriber allowed here until the next signal).
        if self.health.redis_up and not state.unsynced:
            found_sub, found_entry = await self._from_redis(info, state, sub is None, entry is None)
            sub = sub or found_sub
            entry = entry or found_entry
        if sub is None or entry is None:
            sub, entry = await self._from_postgres(info, state, sub, entry)
        return sub, entry

    async def _read_batch(self, requests: list[ReadRequest]) -> list[ReadResult]:
        self.metrics.redis_round_trips += 1
        return await self.emap.read(requests)

    async def _from_redis(
        self, info: TokenInfo, state: PortalState, want_sub: bool, want_portal: bool
    ) -> tuple[SubscriberEntry | None, PortalEntry | None]:
        try:
            raw_sub, raw_portal, floor = await self._reads.submit(
                (info.subscriber_id, info.portal_id, want_sub, want_portal)
            )
        except (RedisError, OSError) as exc:
            self._redis_failed("Redis read failed", exc)
            return None, None
        sub = self._subscriber(info, state, raw_sub, floor) if want_sub else None
        entry = self._portal(raw_portal, floor) if want_portal else None
        hits = (sub is not None) + (entry is not None)
        self.metrics.redis_hits += hits
        self.metrics.redis_misses += want_sub + want_portal - hits
        return sub, entry

    def _redis_failed(self, what: str, exc: Exception) -> None:
        # One server: Redis is down (the probe brings it back).  A cluster: one part of
        # it failed, which the probe and the slot map sort out; this read is a miss.
        if not self.emap.commands.clustered:
            if self.health.redis_up:
                log.warning(what, extra={"error": str(exc)})
            self.health.set_redis(False)

    def _subscriber(
        self, info: TokenInfo, state: PortalState, raw: Entry | None, floor: float
    ) -> SubscriberEntry | None:
        if raw is None or raw.version < floor or raw.tag not in (emap_module.SUBSCRIBER, emap_module.ABSENT):
            return None
        record = raw.record if isinstance(raw.record, SubscriberRecord) else None
        return SubscriberEntry(info.subscriber_id, raw.version, record, time.monotonic(), state.generation)

    def _portal(self, raw: Entry | None, floor: float) -> PortalEntry | None:
        if raw is None or raw.version < floor or raw.tag not in (emap_module.PORTAL, emap_module.ABSENT):
            return None
        record = raw.record if isinstance(raw.record, PortalRecord) else None
        return PortalEntry(raw.version, record, time.monotonic(), self.deny_duration)

    async def _from_postgres(
        self, info: TokenInfo, state: PortalState, sub: SubscriberEntry | None, entry: PortalEntry | None
    ) -> tuple[SubscriberEntry, PortalEntry]:
        pool = self.pool()
        if pool is None or not self.health.pg_up:
            raise Unavailable("PostgreSQL is unreachable")
        writes: list[tuple[str, int, bytes]] = []
        try:
            async with pool.acquire(timeout=PG_TIMEOUT) as conn:
                if sub is None:
                    version, record = await emap_module.load_subscriber(
                        conn, info.subscriber_id, info.portal_id
                    )
                    sub = SubscriberEntry(
                        info.subscriber_id, version, record, time.monotonic(), state.generation
                    )
                    writes.append(
                        (
                            self.emap.keys.subscriber(info.subscriber_id),
                            version,
                            emap_module.encode(version, record),
                        )
                    )
                if entry is None:
                    version, portal = await emap_module.load_portal(conn, info.portal_id)
                    entry = PortalEntry(version, portal, time.monotonic(), self.deny_duration)
                    writes.append(
                        (self.emap.keys.portal(info.portal_id), version, emap_module.encode(version, portal))
                    )
        except _PG_ERRORS as exc:
            log.warning("PostgreSQL load failed", extra={"error": str(exc)})
            self.health.set_pg(False)
            raise Unavailable("PostgreSQL is unreachable") from None
        self.metrics.pg_loads += len(writes)
        await self._write_back(writes)
        return sub, entry

    async def _write_back(self, writes: list[tuple[str, int, bytes]]) -> None:
        if not self.health.redis_up:
            return
        try:
            self.metrics.redis_round_trips += 1
            await self.emap.put(writes)
        except (RedisError, OSError) as exc:
            self._redis_failed("Redis write failed", exc)

    # ------------------------------------------------------------ for events

    async def portal_entry(self, portal_id: int) -> PortalEntry | None:
        """The portal's entry (to name a channel by stream name); ``None`` if it cannot be had."""
        state = self.caches.portal(portal_id)
        if state.entry is not None and self.usable(state.entry.checked_at):
            return state.entry
        epoch = state.epoch
        entry: PortalEntry | None = None
        if self.health.redis_up:
            try:
                self.metrics.redis_round_trips += 1
                ((_, raw, floor),) = await self.emap.read([(0, portal_id, False, True)])
                entry = self._portal(raw, floor)
            except (RedisError, OSError) as exc:
                self._redis_failed("Redis read failed", exc)
        if entry is None:
            entry = await self._portal_from_postgres(portal_id)
        if entry is not None and state.epoch == epoch:
            state.entry = entry
        return entry

    async def _portal_from_postgres(self, portal_id: int) -> PortalEntry | None:
        pool = self.pool()
        if pool is None or not self.health.pg_up:
            return None
        try:
            async with pool.acquire(timeout=PG_TIMEOUT) as conn:
                version, record = await emap_module.load_portal(conn, portal_id)
        except _PG_ERRORS:
            self.health.set_pg(False)
            return None
        self.metrics.pg_loads += 1
        return PortalEntry(version, record, time.monotonic(), self.deny_duration)

    async def portal_of(self, subscriber_id: int) -> int | None:
        """The portal of a subscriber (``None``: no such subscriber); raises :class:`Unavailable`."""
        sub = self.caches.subscribers.get(subscriber_id)
        if sub is not None and not sub.dead:
            return sub.portal_id if sub.exists else None
        pool = self.pool()
        if pool is None or not self.health.pg_up:
            raise Unavailable("PostgreSQL is unreachable")
        try:
            async with pool.acquire(timeout=PG_TIMEOUT) as conn:
                _, record = await emap_module.load_subscriber(conn, subscriber_id, 0)
        except _PG_ERRORS:
            self.health.set_pg(False)
            raise Unavailable("PostgreSQL is unreachable") from None
        return record.portal_id if record is not None else None

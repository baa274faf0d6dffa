"""Applying entitlement signals (``catena.entitlements``) to the caches, in process and in Redis.

One dedicated connection LISTENs on ``catena_entitlements``.  Each signal drops
what it names from the in-process caches at once, then tombstones the same keys in
Redis (in signal order, by one task).  Versions of a portal arrive consecutively;
a gap means a signal was missed, and then everything held for the portal is
dropped.  On every (re)connect the listener reads every portal's version: portals
that moved while it was away are dropped the same way, and Redis is told which
portals' entries it can no longer trust (``EntitlementMap.sync``).  Every second
it reads the versions again on the same connection, which both proves the
connection alive and catches a signal lost without the connection noticing (a gap
still there one poll later).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg
import msgspec
from redis.exceptions import RedisError

from catena import entitlement_map, entitlements
from catena.entitlement_map import EntitlementMap

from .caches import Caches
from .health import Health
from .metrics import Metrics

log = logging.getLogger("authgate.listener")

POLL_INTERVAL = 1.0
RECONNECT_MAX = 2.0

Connect = Callable[[], Awaitable[asyncpg.Connection]]


class Listener:
    def __init__(
        self,
        connect: Connect,
        caches: Caches,
        emap: EntitlementMap,
        health: Health,
        metrics: Metrics,
        pool: Callable[[], asyncpg.Pool | None],
    ) -> None:
        self._connect = connect
        self._pool = pool
        self.caches = caches
        self.emap = emap
        self.health = health
        self.metrics = metrics
        self._redis_queue: asyncio.Queue[tuple[int, int, list[str], bool, list[int]]] = asyncio.Queue()
        # Portals whose invalidated entries should be written again: ids, whole portal?
        self._refills: dict[int, tuple[set[int], bool, int]] = {}
        self._refill_wanted = asyncio.Event()
        # Portals whose invalidation may not have reached Redis: synced when it answers.
        self.redis_dirty: set[int] = set()
        self._suspects: dict[int, int] = {}
        self._connected_once = False

    async def run(self) -> None:
        """Listen, reconnecting for ever; cancel to stop."""
        redis_task = asyncio.create_task(self._apply_to_redis())
        refill_task = asyncio.create_task(self._refill())
        delay = 0.1
        try:
            while True:
                try:
                    await self._session()
                    log.warning("entitlement listener lost its connection")
                    delay = 0.1
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                    if self.health.listener_up:
                        log.warning("entitlement listener disconnected", extra={"error": str(exc)})
                self.health.set_listener(False)
                await asyncio.sleep(delay)
                delay = min(RECONNECT_MAX, delay * 2)
                self.metrics.listener_reconnects += 1
        finally:
            redis_task.cancel()
            refill_task.cancel()

    async def _session(self) -> None:
        conn = await self._connect()
        try:
            lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            conn.add_termination_listener(lambda _: _settle(lost))
            await conn.add_listener(entitlements.CHANNEL, self._on_notify)
            await self._catch_up(await entitlement_map.current_versions(conn))
            self.health.set_listener(True)
            while not lost.done():
                await asyncio.wait([lost], timeout=POLL_INTERVAL)
                if not lost.done():
                    self._poll(await entitlement_map.current_versions(conn, timeout=POLL_INTERVAL * 5))
        finally:
            conn.terminate()

    def _on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
        try:
            signal = entitlements.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.error("unreadable entitlement signal", extra={"payload": payload[:200]})
            return
        self.apply(signal.portal_id, signal.kind, signal.ids, signal.version)

    def apply(self, portal_id: int, kind: str, ids: list[int], version: int) -> None:
        """Apply one signal to the in-process caches now, and queue it for Redis."""
        self.metrics.signals += 1
        state = self.caches.portal(portal_id)
        gap = state.seen is not None and version > state.seen + 1
        if state.seen is None or version > state.seen:
            state.seen = version
        portal_wide = gap or kind == "portal"
        if gap:
            self.metrics.signal_gaps += 1
        self.caches.drop_subscribers(ids)
        self.caches.drop_portal(portal_id, everything=portal_wide)
        keys = [self.emap.keys.portal(portal_id)]
        if kind != "portal":
            keys += [self.emap.keys.subscriber(i) for i in ids]
        state.unsynced += 1
        self._redis_queue.put_nowait((portal_id, version, keys, portal_wide, ids))

    async def _catch_up(self, versions: dict[int, int]) -> None:
        """After a (re)connect: drop portals that moved while away; tell Redis."""
        if not self._connected_once:
            # What was loaded before the first connect was never covered by signals.
            self.caches.drop_older(versions)
        for portal_id, version in versions.items():
            state = self.caches.portal(portal_id)
            if self._connected_once and state.seen != version:
                self.metrics.signal_gaps += 1
                self.caches.drop_portal(portal_id, everything=True)
            if state.seen is None or version > state.seen:
                state.seen = version
        self._connected_once = True
        self._suspects.clear()
        await self._sync_redis(versions)

    def _poll(self, versions: dict[int, int]) -> None:
        # A version ahead of what was applied may just be a signal in flight;
        # ahead for two polls in a row, it was lost.
        for portal_id, version in versions.items():
            state = self.caches.portal(portal_id)
            if state.seen is not None and version <= state.seen:
                self._suspects.pop(portal_id, None)
            elif self._suspects.get(portal_id) == version:
                log.warning("entitlement signal lost; dropping the portal", extra={"portal": portal_id})
                self.apply(portal_id, "portal", [], version)
                self._suspects.pop(portal_id, None)
            else:
                self._suspects[portal_id] = version

    async def _sync_redis(self, versions: dict[int, int]) -> None:
        """Tell Redis the portals' versions; rewrite those it turns out to have missed.

        When Redis cannot be told, the portals are remembered for :meth:`sync_dirty`.
        """
        if not self.health.redis_up:
            self.redis_dirty.update(versions)
            return
        try:
            raised = await self.emap.sync(versions)
        except (RedisError, OSError):
            self.redis_dirty.update(versions)
            return
        for portal_id in raised:
            self._want_refill(portal_id, versions[portal_id], [], True)

    async def sync_dirty(self) -> None:
        """Once Redis answers again: raise the floor of portals whose invalidations it missed."""
        dirty, self.redis_dirty = self.redis_dirty, set()
        await self._sync_redis({p: s for p in dirty if (s := self.caches.portal(p).seen) is not None})

    async def _apply_to_redis(self) -> None:
        while True:
            portal_id, version, keys, portal_wide, ids = await self._redis_queue.get()
            try:
                await self._invalidate(portal_id, version, keys, portal_wide, ids)
            finally:
                self.caches.portal(portal_id).unsynced -= 1

    async def _invalidate(
        self, portal_id: int, version: int, keys: list[str], portal_wide: bool, ids: list[int]
    ) -> None:
        if not self.health.redis_up:
            self.redis_dirty.add(portal_id)
            return
        try:
            raised = await self.emap.invalidate(portal_id, version, keys, portal_wide)
        except (RedisError, OSError) as exc:
            log.warning("cannot apply a signal to Redis", extra={"error": str(exc)})
            self.redis_dirty.add(portal_id)
            return
        self._want_refill(portal_id, version, ids, portal_wide or raised)

    def _want_refill(self, portal_id: int, version: int, ids: list[int], whole: bool) -> None:
        known_ids, known_whole, known_version = self._refills.get(portal_id, (set(), False, 0))
        self._refills[portal_id] = (known_ids | set(ids), known_whole or whole, max(known_version, version))
        self._refill_wanted.set()

    async def _refill(self) -> None:
        """Write invalidated entries again from PostgreSQL, one process per signal (Redis lock)."""
        while True:
            await self._refill_wanted.wait()
            self._refill_wanted.clear()
            refills, self._refills = self._refills, {}
            for portal_id, (ids, whole, version) in refills.items():
                await self._refill_portal(portal_id, sorted(ids), whole, version)

    async def _refill_portal(self, portal_id: int, ids: list[int], whole: bool, version: int) -> None:
        pool = self._pool()
        if pool is None or not self.health.pg_up or not self.health.redis_up:
            return  # entries will be built on the next miss
        try:
            if not await self.emap.claim(portal_id, version):
                return  # another process is writing them
            async with pool.acquire(timeout=5.0) as conn:
                await entitlement_map.refill(conn, self.emap, portal_id, ids, whole)
        except (RedisError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("cannot refill invalidated entries", extra={"portal": portal_id, "error": str(exc)})


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)

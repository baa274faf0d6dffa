"""Applying entitlement signals (``catena.entitlements``) to the caches, in process and in Redis.

One dedicated connection LISTENs on ``catena_entitlements``.  Each signal drops
what it names from the in-process caches at once, then tombstones the same keys in
Redis (in signal order, by one task).  Versions of a portal arrive consecutively;
a gap means a signal was missed, and then everything held for the portal is
dropped.  On every (re)connect the listener reads every portal's version: portals
that moved while it was away are dropped the same way, once Redis has been told
which portals' entries it can no longer trust (``EntitlementMap.sync``), and the
sessions terminated lately are read again.  Every quarter second it reads the versions
again on the same connection, which proves the connection alive and catches a
signal lost without the connection noticing (a gap still there one poll later).  A
probe not answered within a quarter second means a silent connection (PostgreSQL hung,
a network path gone): another connection is opened alongside, and whichever is
back in step first — the old one answering, or the new one caught up — carries on.

A ``session`` signal names sessions an operator terminated (Flussonic ids, with
their subscriber): they are handed to ``terminated`` (the decider refuses them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import msgspec
from redis.exceptions import RedisError

from catena import entitlement_map, entitlements
from catena.entitlement_map import EntitlementMap

from .caches import Caches
from .health import Health
from .metrics import Metrics

log = logging.getLogger("authgate.listener")

# The listening connection is probed this often; an answer later than the deadline
# makes the listener open another connection alongside (see Listener._listen).
PROBE_INTERVAL = 0.25
PROBE_DEADLINE = 0.25
RECONNECT_MAX = 0.5
CONNECT_TIMEOUT = 5.0
# Terminated sessions read again after a reconnect or a lost signal: those of the
# last day (longer than any authDuration plus grace).
TERMINATED_WINDOW = 90_000.0
_TERMINATED = """
SELECT portal_id, subscriber_id, flussonic_id, (extract(epoch FROM terminated_at) * 1000)::bigint AS at_ms
FROM play_sessions WHERE terminated_at > now() - make_interval(secs => $1)
"""

Connect = Callable[[], Awaitable[asyncpg.Connection]]
# What to do with sessions an operator terminated: portal, subscriber ids, session
# keys (Flussonic ids), when (ms).
Terminated = Callable[[int, list[int], list[str], int], None]


class _Link:
    """One listening connection and the future settled when it is lost."""

    __slots__ = ("conn", "lost")

    def __init__(self, conn: asyncpg.Connection, lost: asyncio.Future[None]) -> None:
        self.conn = conn
        self.lost = lost


class Listener:
    def __init__(
        self,
        connect: Connect,
        caches: Caches,
        emap: EntitlementMap,
        health: Health,
        metrics: Metrics,
        pool: Callable[[], asyncpg.Pool | None],
        terminated: Terminated | None = None,
    ) -> None:
        self._connect = connect
        self._terminated = terminated
        # A signal may have been lost: read the recent terminations again.
        self._resync_wanted = False
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
        link: _Link | None = None
        try:
            while True:
                if link is None:
                    link = await self._reconnect()
                try:
                    link = await self._listen(link)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                    if self.health.listener_up:
                        log.warning("entitlement listener disconnected", extra={"error": str(exc)})
                    link = None
                self.health.set_listener(False)
        finally:
            redis_task.cancel()
            refill_task.cancel()
            if link is not None:
                link.conn.terminate()

    async def _reconnect(self) -> _Link:
        """A new connection, listening and caught up; tried again and again, briefly apart.

        The pause stays short (at most ``RECONNECT_MAX``): the moment PostgreSQL answers
        again the Management API can commit changes, and the listener must be back in
        step within the second every change is held to.
        """
        delay = 0.1
        while True:
            try:
                return await self._open()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                if self.health.listener_up:
                    log.warning("entitlement listener disconnected", extra={"error": str(exc)})
                self.health.set_listener(False)
            self.metrics.listener_reconnects += 1
            await asyncio.sleep(delay)
            delay = min(RECONNECT_MAX, delay * 2)

    async def _open(self) -> _Link:
        conn = await self._connect()
        try:
            lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            conn.add_termination_listener(lambda _: _settle(lost))
            await conn.add_listener(entitlements.CHANNEL, self._on_notify)
            await self._catch_up(conn, await entitlement_map.current_versions(conn, timeout=CONNECT_TIMEOUT))
        except BaseException:
            conn.terminate()
            raise
        self.health.set_listener(True)
        return _Link(conn, lost)

    async def _listen(self, link: _Link) -> _Link | None:
        """Probe the connection until it is lost (``None``) or silent and replaced (the new one).

        Every ``PROBE_INTERVAL`` the versions are read on the listening connection; an
        answer not back within ``PROBE_DEADLINE`` means the connection may be silent
        (PostgreSQL hung, a network path gone).  Then a new connection is opened
        alongside while the probe keeps waiting: if the old one answers first (a hang
        that ended), nothing was missed on it and it carries on; if the new one is
        ready first, it has caught up and replaces it.
        """
        while True:
            await asyncio.wait([link.lost], timeout=PROBE_INTERVAL)
            if link.lost.done():
                link.conn.terminate()
                return None
            if self._resync_wanted:
                await self._resync(link.conn)
            probe = asyncio.ensure_future(entitlement_map.current_versions(link.conn))
            await asyncio.wait(_futures(probe, link.lost), timeout=PROBE_DEADLINE)
            if not probe.done() and not link.lost.done():
                replacement = await self._race(link, probe)
                if replacement is not None:
                    return replacement
            if link.lost.done() and not probe.done():
                probe.cancel()
                link.conn.terminate()
                return None
            self._poll(await probe)
            self.health.set_listener(True)

    async def _race(self, link: _Link, probe: asyncio.Future[dict[int, int]]) -> _Link | None:
        """The old connection is silent: the new one once ready, or ``None`` if the old answers first."""
        log.warning("entitlement listener's connection silent; opening another")
        self.health.set_listener(False)
        replacement = asyncio.ensure_future(self._reconnect())
        await asyncio.wait(_futures(probe, replacement, link.lost), return_when=asyncio.FIRST_COMPLETED)
        if probe.done() and not probe.cancelled() and probe.exception() is None:
            replacement.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                late = await replacement
                late.conn.terminate()
            log.info("entitlement listener's connection answers again")
            return None
        new = await replacement
        probe.cancel()
        link.conn.terminate()
        log.info("entitlement listener moved to a new connection")
        return new

    def _on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
        try:
            signal = entitlements.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.error("unreadable entitlement signal", extra={"payload": payload[:200]})
            return
        self.apply(signal.portal_id, signal.kind, signal.ids, signal.version, signal.sessions)

    def apply(
        self, portal_id: int, kind: str, ids: list[int], version: int, sessions: list[str] | None = None
    ) -> None:
        """Apply one signal to the in-process caches now, and queue it for Redis."""
        self.metrics.signals += 1
        if sessions and self._terminated is not None:
            self._terminated(portal_id, ids, sessions, int(time.time() * 1000))
        state = self.caches.portal(portal_id)
        gap = state.seen is not None and version > state.seen + 1
        if state.seen is None or version > state.seen:
            state.seen = version
        portal_wide = gap or kind == "portal"
        if gap:
            self.metrics.signal_gaps += 1
            self._resync_wanted = True
        self.caches.drop_subscribers(ids)
        self.caches.drop_portal(portal_id, everything=portal_wide)
        keys = [self.emap.keys.portal(portal_id)]
        if kind != "portal":
            keys += [self.emap.keys.subscriber(i) for i in ids]
        state.unsynced += 1
        self._redis_queue.put_nowait((portal_id, version, keys, portal_wide, ids))

    async def _catch_up(self, conn: asyncpg.Connection, versions: dict[int, int]) -> None:
        """After a (re)connect: drop portals that moved while away; tell Redis.

        Redis's floors are raised before the portals are dropped here: a check that
        reloads a dropped entry must not find the old one in Redis still trusted (and
        a load already under way when they are dropped is not cached).
        """
        if not self._connected_once:
            # What was loaded before the first connect was never covered by signals.
            self.caches.drop_older(versions)
        moved = [p for p, v in versions.items() if self._connected_once and self.caches.portal(p).seen != v]
        await self._sync_redis(versions)
        for portal_id in moved:
            self.metrics.signal_gaps += 1
            self.caches.drop_portal(portal_id, everything=True)
        for portal_id, version in versions.items():
            state = self.caches.portal(portal_id)
            if state.seen is None or version > state.seen:
                state.seen = version
        self._connected_once = True
        self._suspects.clear()
        await self._resync(conn)

    async def _resync(self, conn: asyncpg.Connection) -> None:
        """Apply the sessions terminated lately (their signals may have been missed)."""
        self._resync_wanted = False
        if self._terminated is None:
            return
        for row in await conn.fetch(_TERMINATED, TERMINATED_WINDOW, timeout=CONNECT_TIMEOUT):
            subscriber = row["subscriber_id"]
            ids = [] if subscriber is None else [subscriber]
            self._terminated(row["portal_id"], ids, [row["flussonic_id"]], row["at_ms"])

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
                self._resync_wanted = True
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


def _futures(*futures: asyncio.Future[Any]) -> list[asyncio.Future[Any]]:
    return list(futures)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)

"""Rebuilding the session counts of a Redis that may have lost writes (:mod:`authgate.session_limiter`).

Each hash slot has a ready marker, ``{prefix}:ready:{<tag of the slot>}``, naming the
``run_id`` of the server on which the slot's counts were last rebuilt.  Another
server answering for the slot — one restarted, flushed, or a replica promoted after
its primary died, which may lack the primary's last writes — means the counts there
may be missing sessions, and the session script refuses admissions there.  Then:

1. every gateway that notices (a refused admission, or its probe) re-counts in Redis
   the sessions it holds;
2. one of them, holding ``{prefix}:lim:lock`` (renewed while it works), reads every
   slot's marker, lets the worker re-count what PostgreSQL shows open in the stale
   slots (and raise the floors of portals Redis fell behind on), waits ``SETTLE`` for
   every gateway to have re-counted, and marks the slots ready on the servers that
   serve them — unless yet another server answers for a slot by then.

A slot whose marking fails stays not ready, and the next probe starts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import asyncpg

from catena.portals import PortalSettings, load_settings
from catena.redis import RUN_ID, Script, by_slot
from catena.redis_keys import SLOTS, KeySpace, key_slot

from .metrics import Metrics
from .redis_pipe import Pipe

log = logging.getLogger("authgate.recovery")

# How long a gateway waits for another one's rebuild before it tries itself.
RECOVERY_WAIT = 3.0
# How long the recovering gateway waits, after re-counting, for every other gateway
# to have re-counted its own sessions (each does within a probe interval of noticing).
SETTLE = 1.5
# The recovery lock lapses this soon after its holder stops renewing it (a holder
# renews it every second while it works; one that died blocks others this long).
LOCK_TTL_MS = 5_000
# Sessions per round trip when re-counting from PostgreSQL.
RECOUNT_CHUNK = 256

# KEYS: slots' markers (one slot on a cluster, any number elsewhere); ARGV[1]: this
# server's run_id.  The run_id, then each marker (false when missing).
_MARKERS = Script(
    """
local out = {ARGV[1]}
for i = 1, #KEYS do out[i + 1] = redis.call('GET', KEYS[i]) end
return out
"""
)
# KEYS: slots' markers; ARGV: this server's run_id, the run_id found when the recovery
# began.  Marks the slots ready unless another server answers for them now.
_MARK = Script(
    """
if ARGV[1] ~= ARGV[2] then return 0 end
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[1]) end
return #KEYS
"""
)
# Markers per call outside a cluster, and calls per round trip: bulk work goes in
# small round trips so that admissions on the same connection never wait long.
MARKERS_PER_CALL = 256
BULK_KEYS = 1024
# KEYS: counted, opened, evicted; ARGV: session, expiry, opened at.  A session
# PostgreSQL shows open, counted again without shortening an expiry a gateway has just
# refreshed — unless it was evicted or terminated meanwhile (the evicted set holds it).
_RESTORE = Script(
    """
if redis.call('ZSCORE', KEYS[3], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[1])
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[3])
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], top[2])
redis.call('PEXPIREAT', KEYS[2], top[2])
return 1
"""
)
_UNLOCK = Script(
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)
_RENEW = Script(
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end "
    "return 0"
)

_ACTIVE_SESSIONS = """
SELECT portal_id, subscriber_id, flussonic_id,
       (extract(epoch FROM opened_at) * 1000)::bigint AS opened_ms,
       (extract(epoch FROM updated_at) * 1000)::bigint AS updated_ms
FROM play_sessions
WHERE active AND subscriber_id IS NOT NULL AND updated_at > now() - make_interval(secs => $1)
"""


class Readiness:
    """What a probe of the ready markers found (one slot per range of the slot map)."""

    __slots__ = ("answered", "failed", "not_ready")

    def __init__(self, answered: int, failed: int, not_ready: int) -> None:
        self.answered = answered
        self.failed = failed
        self.not_ready = not_ready

    @property
    def reachable(self) -> bool:
        return self.answered > 0

    @property
    def ready(self) -> bool:
        return self.answered > 0 and not self.failed and not self.not_ready


class CountRecovery:
    """Probes the ready markers and rebuilds the counts of slots not ready, one gateway at a time."""

    def __init__(
        self,
        pipe: Pipe,
        space: KeySpace,
        metrics: Metrics,
        *,
        grace_ms: int,
        clock: Callable[[], float],
        recount_own: Callable[[], Awaitable[None]],
        restore: Callable[[set[int]], Awaitable[bool]],
        rebuilt: Callable[[], None],
    ) -> None:
        self.pipe = pipe
        self.space = space
        self.metrics = metrics
        self.grace_ms = grace_ms
        self.clock = clock
        # This process's sessions counted again; the worker's share (PostgreSQL);
        # what to do once slots are ready again (rewrite the entitlement map).
        self._recount_own = recount_own
        self._restore = restore
        self._rebuilt = rebuilt
        self._recovery: asyncio.Future[bool] | None = None

    async def check(self) -> Readiness:
        """Whether the ready markers name the servers that answer (one slot per range)."""
        found = await self._markers(self.pipe.probe_slots())
        failed = sum(state is None for state in found.values())
        not_ready = sum(state is not None and state[0] != state[1] for state in found.values())
        return Readiness(len(found) - failed, failed, not_ready)

    async def _markers(self, slots: Iterable[int]) -> dict[int, tuple[bytes, bytes | None] | None]:
        """Per slot: the run_id of the server answering for it and its marker (``None``: no answer)."""
        groups = by_slot(self.pipe.clustered, slots, lambda slot: slot)
        calls, members = [], []
        for slot, group in groups.items():
            for start in range(0, len(group), MARKERS_PER_CALL):
                part = group[start : start + MARKERS_PER_CALL]
                calls.append(_MARKERS.call(slot, [self.space.marker(s) for s in part], [RUN_ID]))
                members.append(part)
        found: dict[int, tuple[bytes, bytes | None] | None] = {}
        step = self._bulk_calls()
        for start in range(0, len(calls), step):
            self.metrics.redis_round_trips += 1
            replies = await _MARKERS.run(self.pipe, calls[start : start + step])
            for part, reply in zip(members[start : start + step], replies, strict=True):
                for index, slot in enumerate(part):
                    found[slot] = None if isinstance(reply, Exception) else (reply[0], reply[index + 1])
        return found

    def recover(self) -> asyncio.Future[bool]:
        """Rebuild the counts of slots not ready, once, whoever asks; ``True`` when ready."""
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.ensure_future(self._recover())
        return self._recovery

    async def _recover(self) -> bool:
        await self._recount_own()
        token = await self._take_lock()
        if token is None:
            return await self._wait_ready()
        renewing = asyncio.ensure_future(self._renew(token))
        try:
            return await self._rebuild_counts()
        finally:
            renewing.cancel()
            lock = self.space.recovery_lock
            await _UNLOCK.run(self.pipe, [_UNLOCK.call(key_slot(lock), [lock], [token])])

    async def _rebuild_counts(self) -> bool:
        """Holding the lock: re-count what PostgreSQL knows, let the gateways re-count, mark ready."""
        stale = await self._stale_slots()
        if stale is None:
            return False
        if stale:
            log.warning("session counts being rebuilt", extra={"slots": len(stale)})
            if not await self._restore(set(stale)):
                return False
            await asyncio.sleep(SETTLE)
            if not await self._mark(stale):
                log.warning("session counts rebuilt, but not all slots could be marked ready")
                return False
            log.info("session counts rebuilt", extra={"slots": len(stale)})
            self._rebuilt()
        return True

    async def _renew(self, token: str) -> None:
        lock = self.space.recovery_lock
        while True:
            await asyncio.sleep(LOCK_TTL_MS / 5000)
            await _RENEW.run(self.pipe, [_RENEW.call(key_slot(lock), [lock], [token, LOCK_TTL_MS])])

    async def stop(self) -> None:
        """Give up a recovery in progress (its lock is released for another gateway)."""
        if self._recovery is not None and not self._recovery.done():
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._recovery

    async def _take_lock(self) -> str | None:
        token = secrets.token_hex(8)
        lock = self.space.recovery_lock
        (reply,) = await self.pipe.run([(key_slot(lock), ("SET", lock, token, "NX", "PX", LOCK_TTL_MS))])
        return token if reply is not None and not isinstance(reply, Exception) else None

    async def _wait_ready(self) -> bool:
        deadline = time.monotonic() + RECOVERY_WAIT
        while time.monotonic() < deadline:
            state = await self.check()
            if state.ready:
                return True
            await asyncio.sleep(0.05)
        return False

    def _bulk_calls(self) -> int:
        """Marker calls per round trip: about ``BULK_KEYS`` keys (one per call on a cluster)."""
        return BULK_KEYS if self.pipe.clustered else max(1, BULK_KEYS // MARKERS_PER_CALL)

    async def _stale_slots(self) -> dict[int, bytes] | None:
        """Every slot whose marker does not name the server answering for it: slot → that run_id.

        Slots no server answers for (a lost part of a cluster) are left for a later
        recovery, when they are served again; ``None`` when no slot answered.
        """
        found = await self._markers(range(SLOTS))
        if all(state is None for state in found.values()):
            return None
        return {slot: state[0] for slot, state in found.items() if state is not None and state[0] != state[1]}

    async def _mark(self, stale: dict[int, bytes]) -> bool:
        """Mark the slots ready; ``False`` when some could not be (they stay not ready)."""
        by_server: dict[tuple[int, bytes], list[int]] = {}
        for slot, run_id in stale.items():
            by_server.setdefault((slot if self.pipe.clustered else 0, run_id), []).append(slot)
        calls = []
        for (at, run_id), slots in by_server.items():
            for start in range(0, len(slots), MARKERS_PER_CALL):
                keys = [self.space.marker(s) for s in slots[start : start + MARKERS_PER_CALL]]
                calls.append(_MARK.call(at, keys, [RUN_ID, run_id]))
        marked = True
        step = self._bulk_calls()
        for start in range(0, len(calls), step):
            replies = await _MARK.run(self.pipe, calls[start : start + step])
            marked = marked and not any(isinstance(r, Exception) for r in replies)
        return marked

    async def recount(self, pool: asyncpg.Pool, slots: set[int]) -> bool:
        """Count into Redis every session PostgreSQL shows active, not yet expired, in ``slots``."""
        try:
            async with pool.acquire(timeout=2.0) as conn:
                rows = await conn.fetch(_ACTIVE_SESSIONS, 86400.0 + self.grace_ms / 1000, timeout=10.0)
                portals = await conn.fetch("SELECT id, settings FROM portals")
            settings = {r["id"]: r["settings"] for r in portals}
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("cannot re-count sessions from PostgreSQL", extra={"error": str(exc)})
            return False
        slot_of = self.space.subscriber_slot
        rows = [row for row in rows if slot_of(row["subscriber_id"]) in slots]
        written = await self._write_counts(rows, {pid: _settings(raw) for pid, raw in settings.items()})
        log.info("session counts re-counted from PostgreSQL", extra={"sessions": written})
        return True

    async def _write_counts(self, rows: list[asyncpg.Record], settings: dict[int, PortalSettings]) -> int:
        now_ms = int(self.clock() * 1000)
        calls = []
        for row in rows:
            portal = settings.get(row["portal_id"]) or PortalSettings()
            expiry = row["updated_ms"] + portal.authDuration * 1000 + self.grace_ms
            if expiry <= now_ms:
                continue
            subscriber_id = row["subscriber_id"]
            args = [row["flussonic_id"], expiry, row["opened_ms"]]
            keys = list(self.space.sessions(subscriber_id))
            calls.append(_RESTORE.call(self.space.subscriber_slot(subscriber_id), keys, args))
        for start in range(0, len(calls), RECOUNT_CHUNK):
            self.metrics.redis_round_trips += 1
            await _RESTORE.run(self.pipe, calls[start : start + RECOUNT_CHUNK])
        return len(calls)


def _settings(raw: Any) -> PortalSettings:
    with contextlib.suppress(Exception):
        return load_settings(raw if isinstance(raw, dict) else None)
    return PortalSettings()

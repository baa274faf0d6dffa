"""The entitlement map: what each subscriber may watch, kept in Redis, built from PostgreSQL.

PostgreSQL is the source of truth; Redis holds a copy that any gateway process
fills on a miss and that ``catena cache rebuild`` (or a gateway that finds Redis
empty) writes in full.  Two kinds of entry, both ``msgpack`` arrays:

* ``{prefix}:ent:s:{subscriber id}`` — :class:`SubscriberRecord`: portal, token
  version, disabled, own session limit, explicit packages.
* ``{prefix}:ent:p:{portal id}`` — :class:`PortalRecord`: the settings the gateway
  needs, the free packages, and every channel with the packages that carry it.

A value is ``b"<version>:<tag><payload>"``.  ``version`` is the portal's entitlement
version (``catena.entitlements``) read in the same snapshot as the data, so the
entry holds every change up to it and none after.  ``tag`` is ``s`` / ``p`` for a
record, ``-`` for "no such subscriber or portal", ``!`` for a tombstone left by an
invalidation (the entry must be rebuilt).  Writes go through a script that never
replaces a newer entry or tombstone with an older one, so a slow builder racing an
invalidation cannot put stale data back.

Per portal, ``{prefix}:ent:seen:{portal}`` is the last version whose invalidation
reached Redis and ``{prefix}:ent:floor:{portal}`` the oldest version still trusted:
when Redis may have missed invalidations (a version gap, a gateway that was away,
a portal-wide change) the floor is raised and every older entry of the portal is
treated as a miss.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
import redis.asyncio as aioredis

from . import db
from .portals import PortalSettings, load_settings
from .redis import Keys

SUBSCRIBER = b"s"
PORTAL = b"p"
ABSENT = b"-"
INVALID = b"!"

# Entries age out so that subscribers nobody watches do not stay in Redis forever;
# a miss rebuilds them.
ENTRY_TTL = 7 * 86400
# Entries per write: small enough that one write never holds a gateway's event loop long.
REBUILD_CHUNK = 250
# How long a claim to rewrite a portal's entries at one version stands.
CLAIM_TTL = 60


class SubscriberRecord(msgspec.Struct, array_like=True, frozen=True):
    portal_id: int
    token_version: int
    disabled: bool
    max_sessions: int | None
    packages: list[int]


class ChannelRecord(msgspec.Struct, array_like=True, frozen=True):
    id: int
    name: str
    packages: list[int]


class PortalRecord(msgspec.Struct, array_like=True, frozen=True):
    auth_duration: int
    archive_days: int
    max_sessions: int
    policy: str
    free_packages: list[int]
    channels: list[ChannelRecord]


@dataclass(frozen=True, slots=True)
class Entry:
    """One decoded Redis value."""

    version: int
    tag: bytes
    record: SubscriberRecord | PortalRecord | None


_encoder = msgspec.msgpack.Encoder()
_subscriber_decoder = msgspec.msgpack.Decoder(SubscriberRecord)
_portal_decoder = msgspec.msgpack.Decoder(PortalRecord)


class MapKeys:
    """Key names of the entitlement map under one Redis prefix."""

    __slots__ = ("_keys",)

    def __init__(self, prefix: str) -> None:
        self._keys = Keys(prefix)

    def subscriber(self, subscriber_id: int) -> str:
        return self._keys.key("ent", "s", subscriber_id)

    def portal(self, portal_id: int) -> str:
        return self._keys.key("ent", "p", portal_id)

    def floor(self, portal_id: int) -> str:
        return self._keys.key("ent", "floor", portal_id)

    def seen(self, portal_id: int) -> str:
        return self._keys.key("ent", "seen", portal_id)


def encode(version: int, record: SubscriberRecord | PortalRecord | None) -> bytes:
    """The Redis value of ``record`` built at ``version`` (``None``: it does not exist)."""
    if record is None:
        return b"%d:%s" % (version, ABSENT)
    tag = SUBSCRIBER if isinstance(record, SubscriberRecord) else PORTAL
    return b"%d:%s" % (version, tag) + _encoder.encode(record)


def decode(value: bytes | str | None) -> Entry | None:
    """The entry held in ``value``; ``None`` for a missing or unreadable value."""
    if not value or isinstance(value, str):
        return None
    head, sep, rest = value.partition(b":")
    if not sep or not head.isdigit() or not rest:
        return None
    tag = rest[:1]
    try:
        if tag == SUBSCRIBER:
            return Entry(int(head), tag, _subscriber_decoder.decode(rest[1:]))
        if tag == PORTAL:
            return Entry(int(head), tag, _portal_decoder.decode(rest[1:]))
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if tag in (ABSENT, INVALID):
        return Entry(int(head), tag, None)
    return None


# ---------------------------------------------------------------- Redis scripts

# The items travel in one argument — key, version, value, each prefixed by its
# length (4 bytes, big-endian) — instead of three arguments per entry, which the
# client would otherwise encode one by one.
_PUT = """
local blob, pos, written = ARGV[2], 1, 0
local ttl = tonumber(ARGV[1])
local function take()
  local n = struct.unpack('>I4', blob, pos)
  local value = string.sub(blob, pos + 4, pos + 3 + n)
  pos = pos + 4 + n
  return value
end
while pos <= #blob do
  local key = take()
  local version = tonumber(take())
  local value = take()
  local current = redis.call('GET', key)
  local held = -1
  if current then held = tonumber(string.match(current, '^(%d+):') or '-1') end
  if held <= version then
    redis.call('SET', key, value, 'EX', ttl)
    written = written + 1
  end
end
return written
"""

_INVALIDATE = """
local v = tonumber(ARGV[1])
local seen = tonumber(redis.call('GET', KEYS[1]) or '0')
local raised = 0
if v > seen + 1 or ARGV[2] == '1' then
  local floor = tonumber(redis.call('GET', KEYS[2]) or '0')
  if v > floor then
    redis.call('SET', KEYS[2], v)
    raised = 1
  end
end
if v > seen then redis.call('SET', KEYS[1], v) end
local mark = ARGV[1] .. ':!'
for i = 3, #KEYS do
  local current = redis.call('GET', KEYS[i])
  local held = -1
  if current then held = tonumber(string.match(current, '^(%d+):') or '-1') end
  if held < v then redis.call('SET', KEYS[i], mark, 'EX', tonumber(ARGV[3])) end
end
return raised
"""

_SYNC = """
local raised = {}
for i = 1, #ARGV do
  local v = tonumber(ARGV[i])
  local seen = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  if v > seen then
    redis.call('SET', KEYS[2 * i - 1], v)
    local floor = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
    if v > floor then redis.call('SET', KEYS[2 * i], v) end
    raised[#raised + 1] = i
  end
end
return raised
"""


def _frame(part: bytes) -> bytes:
    return len(part).to_bytes(4, "big") + part


class EntitlementMap:
    """Reads and writes the map in one Redis under one prefix."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.redis = client
        self.keys = MapKeys(prefix)
        self._put = client.register_script(_PUT)
        self._invalidate = client.register_script(_INVALIDATE)
        self._sync = client.register_script(_SYNC)

    async def put(self, items: Sequence[tuple[str, int, bytes]]) -> int:
        """Write ``(key, version, value)`` items unless Redis holds something newer."""
        if not items:
            return 0
        packed = b"".join(
            _frame(part) for key, version, value in items for part in (key.encode(), b"%d" % version, value)
        )
        return int(await self._put(keys=[], args=[ENTRY_TTL, packed]))

    async def invalidate(self, portal_id: int, version: int, keys: Iterable[str], portal_wide: bool) -> bool:
        """Apply one entitlement signal: tombstone ``keys``; raise the floor on a gap.

        ``True`` when the floor was raised: every entry of the portal must be rebuilt.
        """
        names = [self.keys.seen(portal_id), self.keys.floor(portal_id), *keys]
        args = [version, "1" if portal_wide else "0", ENTRY_TTL]
        return bool(await self._invalidate(keys=names, args=args))

    async def sync(self, versions: dict[int, int]) -> list[int]:
        """Raise the floor of every portal whose version moved on without Redis seeing it.

        Returns those portals: their entries must be rebuilt.
        """
        if not versions:
            return []
        portal_ids = list(versions)
        names: list[str] = []
        for portal_id in portal_ids:
            names += (self.keys.seen(portal_id), self.keys.floor(portal_id))
        raised = await self._sync(keys=names, args=list(versions.values()))
        return [portal_ids[int(i) - 1] for i in raised]

    async def claim(self, portal_id: int, version: int) -> bool:
        """Whether this caller is the one to write the portal's entries at ``version``.

        Every gateway process sees every signal; the first to claim does the work.
        """
        name = self.keys.portal(portal_id) + f":refill:{version}"
        return bool(await self.redis.set(name, "1", nx=True, ex=CLAIM_TTL))

    async def read(
        self, requests: Sequence[tuple[int, int, bool, bool]]
    ) -> list[tuple[Entry | None, Entry | None, int]]:
        """For each ``(subscriber, portal, want subscriber, want portal)``: the subscriber's
        entry, the portal's entry and the portal's floor — all in one ``MGET``.

        An entry not wanted is neither read nor decoded (a portal's can be large).
        """
        names: dict[str, int] = {}
        for subscriber_id, portal_id, want_subscriber, want_portal in requests:
            names.setdefault(self.keys.floor(portal_id), len(names))
            if want_subscriber:
                names.setdefault(self.keys.subscriber(subscriber_id), len(names))
            if want_portal:
                names.setdefault(self.keys.portal(portal_id), len(names))
        raw = await self.redis.mget(list(names))
        decoded: dict[int, Entry | None] = {}

        def entry(name: str) -> Entry | None:
            index = names[name]
            if index not in decoded:
                decoded[index] = decode(raw[index])
            return decoded[index]

        out = []
        for subscriber_id, portal_id, want_subscriber, want_portal in requests:
            floor_raw = raw[names[self.keys.floor(portal_id)]]
            floor = int(floor_raw) if floor_raw and floor_raw.isdigit() else 0
            sub = entry(self.keys.subscriber(subscriber_id)) if want_subscriber else None
            portal = entry(self.keys.portal(portal_id)) if want_portal else None
            out.append((sub, portal, floor))
        return out


# ---------------------------------------------------------------- PostgreSQL

_LOAD_SUBSCRIBER = """
SELECT coalesce((SELECT version FROM entitlement_versions
                 WHERE portal_id = coalesce(s.portal_id, $2)), 0) AS version,
       s.portal_id, s.token_version, s.disabled, s.max_sessions,
       array(SELECT package_id FROM subscriptions WHERE subscriber_id = s.id
             ORDER BY package_id) AS packages
FROM (SELECT 1) AS one LEFT JOIN subscribers s ON s.id = $1
"""

_PORTAL_HEAD = """
SELECT p.id IS NOT NULL AS present, p.settings, coalesce(v.version, 0) AS version
FROM (SELECT $1::bigint AS id) AS q
LEFT JOIN portals p ON p.id = q.id
LEFT JOIN entitlement_versions v ON v.portal_id = q.id
"""
_PORTAL_FREE = "SELECT package_id FROM portal_free_packages WHERE portal_id = $1 ORDER BY package_id"
_PORTAL_CHANNELS = """
SELECT c.id, c.name,
       array(SELECT package_id FROM channel_packages cp WHERE cp.channel_id = c.id
             ORDER BY package_id) AS packages
FROM channels c WHERE c.portal_id = $1 ORDER BY c.id
"""
_ALL_VERSIONS = """
SELECT p.id, coalesce(v.version, 0) AS version
FROM portals p LEFT JOIN entitlement_versions v ON v.portal_id = p.id
"""
_PORTAL_SUBSCRIBERS = """
SELECT s.id, s.portal_id, s.token_version, s.disabled, s.max_sessions,
       coalesce(array_agg(sub.package_id ORDER BY sub.package_id)
                FILTER (WHERE sub.package_id IS NOT NULL), '{}') AS packages
FROM subscribers s LEFT JOIN subscriptions sub ON sub.subscriber_id = s.id
WHERE s.portal_id = $1 AND ($2::bigint[] IS NULL OR s.id = ANY($2))
GROUP BY s.id
"""


def _subscriber_record(row: asyncpg.Record) -> SubscriberRecord:
    return SubscriberRecord(
        row["portal_id"],
        row["token_version"],
        row["disabled"],
        row["max_sessions"],
        list(row["packages"]),
    )


def _safe_settings(raw: Any) -> PortalSettings:
    # A portal whose stored settings no longer validate still gets answers,
    # with the defaults, rather than failing every check of every subscriber.
    try:
        return load_settings(raw if isinstance(raw, dict) else None)
    except msgspec.ValidationError:
        return PortalSettings()


async def load_subscriber(
    conn: asyncpg.Connection, subscriber_id: int, portal_id: int
) -> tuple[int, SubscriberRecord | None]:
    """``(version, record)`` for a subscriber; ``record`` is ``None`` when there is none.

    ``portal_id`` is the portal the caller believes in (the token's); its version
    stamps the answer when the subscriber does not exist.
    """
    row = await conn.fetchrow(_LOAD_SUBSCRIBER, subscriber_id, portal_id)
    if row["portal_id"] is None:
        return row["version"], None
    return row["version"], _subscriber_record(row)


async def _portal_body(conn: asyncpg.Connection, portal_id: int, raw_settings: Any) -> PortalRecord:
    settings = _safe_settings(raw_settings)
    free = [r["package_id"] for r in await conn.fetch(_PORTAL_FREE, portal_id)]
    channels = [
        ChannelRecord(r["id"], r["name"], list(r["packages"]))
        for r in await conn.fetch(_PORTAL_CHANNELS, portal_id)
    ]
    return PortalRecord(
        settings.authDuration,
        settings.archiveDays,
        settings.maxSessions,
        settings.sessionLimitPolicy,
        free,
        channels,
    )


async def load_portal(conn: asyncpg.Connection, portal_id: int) -> tuple[int, PortalRecord | None]:
    """``(version, record)`` for a portal, read in one snapshot; ``None`` when it does not exist."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        head = await conn.fetchrow(_PORTAL_HEAD, portal_id)
        if not head["present"]:
            return head["version"], None
        return head["version"], await _portal_body(conn, portal_id, head["settings"])


async def current_versions(conn: asyncpg.Connection, timeout: float | None = None) -> dict[int, int]:
    """Every portal's entitlement version now."""
    return {row["id"]: row["version"] for row in await conn.fetch(_ALL_VERSIONS, timeout=timeout)}


@dataclass
class RebuildStats:
    portals: int = 0
    subscribers: int = 0
    written: int = 0


async def rebuild(conn: asyncpg.Connection, emap: EntitlementMap, claim: bool = False) -> RebuildStats:
    """Write every portal and subscriber entry from one consistent snapshot of PostgreSQL.

    With ``claim``, portals another process is already writing at this version are skipped.
    """
    stats = RebuildStats()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        versions = await current_versions(conn)
        for portal_id, version in versions.items():
            if not claim or await emap.claim(portal_id, version):
                await _rebuild_portal(conn, emap, portal_id, version, stats)
    return stats


async def _rebuild_portal(
    conn: asyncpg.Connection, emap: EntitlementMap, portal_id: int, version: int, stats: RebuildStats
) -> None:
    await _write_portal(conn, emap, portal_id, version, stats)
    await _write_subscribers(conn, emap, portal_id, version, stats)


async def _write_portal(
    conn: asyncpg.Connection, emap: EntitlementMap, portal_id: int, version: int, stats: RebuildStats
) -> None:
    head = await conn.fetchrow(_PORTAL_HEAD, portal_id)
    record = await _portal_body(conn, portal_id, head["settings"]) if head["present"] else None
    stats.written += await emap.put([(emap.keys.portal(portal_id), version, encode(version, record))])
    stats.portals += 1


async def _write_subscribers(
    conn: asyncpg.Connection,
    emap: EntitlementMap,
    portal_id: int,
    version: int,
    stats: RebuildStats,
    subscriber_ids: list[int] | None = None,
) -> None:
    chunk: list[tuple[str, int, bytes]] = []
    async for row in conn.cursor(_PORTAL_SUBSCRIBERS, portal_id, subscriber_ids, prefetch=REBUILD_CHUNK):
        value = encode(version, _subscriber_record(row))
        chunk.append((emap.keys.subscriber(row["id"]), version, value))
        stats.subscribers += 1
        if len(chunk) >= REBUILD_CHUNK:
            stats.written += await emap.put(chunk)
            chunk = []
    stats.written += await emap.put(chunk)


async def refill(
    conn: asyncpg.Connection, emap: EntitlementMap, portal_id: int, subscriber_ids: list[int], whole: bool
) -> RebuildStats:
    """Write again what a change invalidated: the portal's entry and the named subscribers
    (``whole``: every subscriber of the portal), read in one snapshot.

    Run after an invalidation so that Redis stays complete and checks need no
    PostgreSQL read, even while PostgreSQL is away.
    """
    stats = RebuildStats()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        version = await conn.fetchval(
            "SELECT coalesce(max(version), 0) FROM entitlement_versions WHERE portal_id = $1", portal_id
        )
        await _write_portal(conn, emap, portal_id, version, stats)
        if whole or subscriber_ids:
            await _write_subscribers(conn, emap, portal_id, version, stats, None if whole else subscriber_ids)
    return stats


async def rebuild_command() -> None:
    """``catena cache rebuild``: rebuild the map for the configured PostgreSQL and Redis."""
    from . import redis as catena_redis
    from .settings import BaseSettings, load

    settings = load(BaseSettings)
    conn = await db.connect(settings.database_url)
    client = catena_redis.connect(settings.redis_url)
    try:
        emap = EntitlementMap(client, settings.redis_prefix)
        await emap.sync(await current_versions(conn))
        stats = await rebuild(conn, emap)
    finally:
        await client.aclose()
        await conn.close()
    print(
        f"entitlement map rebuilt: {stats.portals} portals, {stats.subscribers} subscribers, "
        f"{stats.written} entries written"
    )

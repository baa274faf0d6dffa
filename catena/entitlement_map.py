"""The entitlement map: what each subscriber may watch, kept in Redis, built from PostgreSQL.

PostgreSQL is the source of truth; Redis holds a copy that any gateway process
fills on a miss and that ``catena cache rebuild`` (or a gateway that finds Redis
empty) writes in full.  Two kinds of entry, both ``msgpack`` arrays:

* ``{prefix}:ent:{s:<subscriber id>}`` — :class:`SubscriberRecord`: portal, token
  version, disabled, own session limit, explicit packages.
* ``{prefix}:ent:{p:<portal id>}`` — :class:`PortalRecord`: the settings the gateway
  needs, the free packages, and every channel with the packages that carry it.

A value is ``b"<stamp>:<version>:<tag><payload>"``.  ``version`` is the portal's
entitlement version (``catena.entitlements``) read in the same snapshot as the data,
so the entry holds every change up to it and none after.  ``tag`` is ``s`` / ``p``
for a record, ``-`` for "no such subscriber or portal", ``!`` for a tombstone left by
an invalidation (the entry must be rebuilt).  Writes go through a script that never
replaces a newer entry or tombstone with an older one, so a slow builder racing an
invalidation cannot put stale data back.

``stamp`` is the start of the slot's ready marker (:mod:`catena.redis_keys`) when the
entry was written: the ``run_id`` of the server that last rebuilt that slot.  An entry
is trusted only while its slot is ready on the server answering (marker = that
server's ``run_id``) and it was written since (stamp = marker).  A replica promoted
after its primary died may lack the primary's last writes — a tombstone among them —
so every entry it holds from before is distrusted until rewritten.

Per portal, ``…:{p:<portal>}:seen`` is the last version whose invalidation reached
Redis and ``…:{p:<portal>}:floor`` the oldest version still trusted: when Redis may
have missed invalidations (a version gap, a gateway that was away, a portal-wide
change) the floor is raised and every older entry of the portal is treated as a
miss.  Keys of one script call share a hash slot on a Redis Cluster; elsewhere one
call carries everything.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
import redis.asyncio as aioredis

from . import db
from .portals import PortalSettings, load_settings
from .redis import RUN_ID, Commands, RedisPyCommands, Script, by_slot, first_error
from .redis_keys import KeySpace, key_slot

SUBSCRIBER = b"s"
PORTAL = b"p"
ABSENT = b"-"
INVALID = b"!"
STAMP = 8

# Entries age out so that subscribers nobody watches do not stay in Redis forever;
# a miss rebuilds them.
ENTRY_TTL = 7 * 86400
# Entries per write: small enough that one write never holds a gateway's event loop long.
REBUILD_CHUNK = 250
# How long a claim to rewrite a portal's entries at one version stands.
CLAIM_TTL = 60
# The floor of a portal whose keys cannot be vouched for: no entry is trusted.
UNTRUSTED = math.inf


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
    """Key names of the entitlement map under one Redis prefix (:class:`KeySpace`'s)."""

    __slots__ = ("space",)

    def __init__(self, prefix: str) -> None:
        self.space = KeySpace(prefix)

    def subscriber(self, subscriber_id: int) -> str:
        return self.space.subscriber_entry(subscriber_id)

    def portal(self, portal_id: int) -> str:
        return self.space.portal_entry(portal_id)

    def floor(self, portal_id: int) -> str:
        return self.space.floor(portal_id)

    def seen(self, portal_id: int) -> str:
        return self.space.seen(portal_id)


def encode(version: int, record: SubscriberRecord | PortalRecord | None) -> bytes:
    """The Redis value of ``record`` built at ``version`` (``None``: it does not exist), unstamped."""
    if record is None:
        return b"%d:%s" % (version, ABSENT)
    tag = SUBSCRIBER if isinstance(record, SubscriberRecord) else PORTAL
    return b"%d:%s" % (version, tag) + _encoder.encode(record)


def decode(value: bytes | str | None) -> Entry | None:
    """The entry held in ``value`` (stamped or not); ``None`` for a missing or unreadable value."""
    if not value or isinstance(value, str):
        return None
    head, sep, rest = value.partition(b":")
    if rest[:1].isdigit():  # a stamp, then the version (tags are never digits)
        head, sep, rest = rest.partition(b":")
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

# A held value's version: after the stamp (any letters, maybe none) and a colon.
_HELD = """
local function held(key)
  local current = redis.call('GET', key)
  if not current then return -1 end
  return tonumber(string.match(current, '^%w*:(%d+):') or '-1')
end
"""

# KEYS: (slot marker, entry) pairs; ARGV: ttl, then (version, unstamped value) pairs.
_PUT = Script(
    _HELD
    + """
local ttl, written = tonumber(ARGV[1]), 0
for i = 1, #KEYS / 2 do
  local version = tonumber(ARGV[2 * i])
  if held(KEYS[2 * i]) <= version then
    local stamp = string.sub(redis.call('GET', KEYS[2 * i - 1]) or '', 1, 8)
    redis.call('SET', KEYS[2 * i], stamp .. ':' .. ARGV[2 * i + 1], 'EX', ttl)
    written = written + 1
  end
end
return written
"""
)

# KEYS: entries; ARGV: version, ttl.  Entries older than the version become tombstones.
_TOMBSTONE = Script(
    _HELD
    + """
local v = tonumber(ARGV[1])
for i = 1, #KEYS do
  if held(KEYS[i]) < v then redis.call('SET', KEYS[i], ':' .. ARGV[1] .. ':!', 'EX', tonumber(ARGV[2])) end
end
return 1
"""
)

# KEYS: seen, floor, the portal's entry; ARGV: version, portal-wide (1/0), ttl.
# Returns 1 when the floor was raised (a gap, or a portal-wide change).
_SIGNAL = Script(
    _HELD
    + """
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
if held(KEYS[3]) < v then redis.call('SET', KEYS[3], ':' .. ARGV[1] .. ':!', 'EX', tonumber(ARGV[3])) end
return raised
"""
)

# KEYS: (seen, floor) per portal; ARGV: the portals' versions.  Returns the indexes
# (1-based) of the portals whose floor was raised.
_SYNC = Script(
    """
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
)

# KEYS: (slot marker, key) pairs; ARGV: this server's run_id, then one letter per pair:
# 's' for a stamped entry, 'p' for a plain value (a floor).  Per pair: 0 when the slot
# is not ready on this server, the value, or nil (missing, or stamped before the
# slot was last rebuilt).
_READ = Script(
    """
local out = {}
for i = 1, #KEYS / 2 do
  local marker = redis.call('GET', KEYS[2 * i - 1])
  if marker ~= ARGV[1] then
    out[i] = 0
  else
    local value = redis.call('GET', KEYS[2 * i])
    local stamped = string.sub(ARGV[2], i, i) == 's'
    if value and stamped and string.sub(value, 1, 9) ~= string.sub(marker, 1, 8) .. ':' then
      value = false
    end
    out[i] = value
  end
end
return out
"""
)


class EntitlementMap:
    """Reads and writes the map under one prefix, through ``commands`` (or a redis-py client)."""

    def __init__(self, commands: Commands | aioredis.Redis, prefix: str) -> None:
        self.commands: Commands = (
            RedisPyCommands(commands)
            if isinstance(commands, aioredis.Redis | aioredis.RedisCluster)
            else commands
        )
        self.keys = MapKeys(prefix)
        self.space = self.keys.space

    def _by_slot(self, items: Iterable[Any], slot: Any) -> dict[int, list[Any]]:
        return by_slot(self.commands.clustered, items, slot)

    async def put(self, items: Sequence[tuple[str, int, bytes]]) -> int:
        """Write ``(key, version, value)`` items unless Redis holds something newer."""
        if not items:
            return 0
        calls = []
        for slot, group in self._by_slot(items, lambda item: key_slot(item[0])).items():
            keys = [k for key, _, _ in group for k in (self.space.marker(key_slot(key)), key)]
            args = [ENTRY_TTL, *(a for _, version, value in group for a in (version, value))]
            calls.append(_PUT.call(slot, keys, args))
        replies = await _PUT.run(self.commands, calls)
        first_error(replies)
        return sum(int(r) for r in replies)

    async def invalidate(self, portal_id: int, version: int, keys: Iterable[str], portal_wide: bool) -> bool:
        """Apply one entitlement signal: tombstone ``keys``; raise the floor on a gap.

        ``True`` when the floor was raised: every entry of the portal must be rebuilt.
        """
        portal_key = self.keys.portal(portal_id)
        others = [key for key in keys if key != portal_key]
        tombstones = [
            _TOMBSTONE.call(slot, group, [version, ENTRY_TTL])
            for slot, group in self._by_slot(others, key_slot).items()
        ]
        first_error(await _TOMBSTONE.run(self.commands, tombstones))
        names = [self.keys.seen(portal_id), self.keys.floor(portal_id), portal_key]
        signal = _SIGNAL.call(
            self.space.portal_slot(portal_id), names, [version, int(portal_wide), ENTRY_TTL]
        )
        (raised,) = await _SIGNAL.run(self.commands, [signal])
        first_error([raised])
        return bool(raised)

    async def sync(self, versions: dict[int, int]) -> list[int]:
        """Raise the floor of every portal whose version moved on without Redis seeing it.

        Returns those portals: their entries must be rebuilt.
        """
        if not versions:
            return []
        groups = list(self._by_slot(versions.items(), lambda item: self.space.portal_slot(item[0])).items())
        calls = []
        for slot, group in groups:
            names = [
                n for portal_id, _ in group for n in (self.keys.seen(portal_id), self.keys.floor(portal_id))
            ]
            calls.append(_SYNC.call(slot, names, [version for _, version in group]))
        replies = await _SYNC.run(self.commands, calls)
        first_error(replies)
        return [
            group[int(i) - 1][0] for (_, group), raised in zip(groups, replies, strict=True) for i in raised
        ]

    async def claim(self, portal_id: int, version: int) -> bool:
        """Whether this caller is the one to write the portal's entries at ``version``.

        Every gateway process sees every signal; the first to claim does the work.
        """
        name = self.space.refill_claim(portal_id, version)
        (reply,) = await self.commands.run(
            [(self.space.portal_slot(portal_id), ("SET", name, "1", "NX", "EX", CLAIM_TTL))]
        )
        first_error([reply])
        return reply is not None and reply is not False

    async def read(
        self, requests: Sequence[tuple[int, int, bool, bool]]
    ) -> list[tuple[Entry | None, Entry | None, float]]:
        """For each ``(subscriber, portal, want subscriber, want portal)``: the subscriber's
        entry, the portal's entry and the portal's floor, in one call per hash slot
        (one call in all outside a cluster).

        An entry that cannot be vouched for (its slot not ready on the server that
        answered, written before the slot was rebuilt, or its call failed) reads as
        missing; a portal whose floor cannot be vouched for gets :data:`UNTRUSTED`.
        Raises the error when every call failed.
        """
        pairs: dict[str, tuple[int, bool]] = {}  # key → (slot, stamped)
        for subscriber_id, portal_id, want_subscriber, want_portal in requests:
            portal_slot = self.space.portal_slot(portal_id)
            pairs.setdefault(self.keys.floor(portal_id), (portal_slot, False))
            if want_subscriber:
                key = self.keys.subscriber(subscriber_id)
                pairs.setdefault(key, (self.space.subscriber_slot(subscriber_id), True))
            if want_portal:
                pairs.setdefault(self.keys.portal(portal_id), (portal_slot, True))
        values = await self._read_pairs(pairs)
        return [self._found(values, request) for request in requests]

    async def _read_pairs(self, pairs: dict[str, tuple[int, bool]]) -> dict[str, Any]:
        groups = list(self._by_slot(pairs.items(), lambda item: item[1][0]).items())
        calls = []
        for slot, group in groups:
            keys = [k for key, (at, _) in group for k in (self.space.marker(at), key)]
            kinds = "".join("s" if stamped else "p" for _, (_, stamped) in group)
            calls.append(_READ.call(slot, keys, [RUN_ID, kinds]))
        replies = await _READ.run(self.commands, calls)
        if all(isinstance(r, Exception) for r in replies):
            first_error(replies)
        values: dict[str, Any] = {}
        for (_, group), reply in zip(groups, replies, strict=True):
            for index, (key, _) in enumerate(group):
                values[key] = 0 if isinstance(reply, Exception) else reply[index]
        return values

    def _found(
        self, values: dict[str, Any], request: tuple[int, int, bool, bool]
    ) -> tuple[Entry | None, Entry | None, float]:
        subscriber_id, portal_id, want_subscriber, want_portal = request
        raw_floor = values[self.keys.floor(portal_id)]
        floor: float = (
            UNTRUSTED if raw_floor == 0 else int(raw_floor) if raw_floor and raw_floor.isdigit() else 0
        )
        sub = _entry(values[self.keys.subscriber(subscriber_id)]) if want_subscriber else None
        portal = _entry(values[self.keys.portal(portal_id)]) if want_portal else None
        return sub, portal, floor


def _entry(value: Any) -> Entry | None:
    return None if isinstance(value, int) else decode(value)


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
    await catena_redis.check_at_start(settings, "catena")
    conn = await db.connect(settings.database_url)
    client = catena_redis.connect(settings)
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

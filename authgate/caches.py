"""In-process caches in front of Redis: verified tokens, subscribers, portals.

Entries are ``__slots__`` objects built once per load and read on every check.
Invalidation (``listener``) marks subscriber entries dead and drops portal entries;
bumping a portal's ``generation`` makes every subscriber entry of that portal loaded
before it be reloaded (a portal-wide change, a version gap, a reconnect).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

from catena.entitlement_map import PortalRecord, SubscriberRecord

from . import responses

K = TypeVar("K")
V = TypeVar("V")


class TwoGenerationCache(Generic[K, V]):
    """A bounded map that forgets the least recently used half when full.

    New entries go to ``young``; when it holds ``limit // 2`` entries it becomes
    ``old`` and the previous ``old`` is dropped.  A hit in ``old`` moves the entry
    back to ``young``.  Every operation is O(1), with no per-access bookkeeping.
    """

    __slots__ = ("half", "old", "young")

    def __init__(self, limit: int) -> None:
        self.half = max(1, limit // 2)
        self.young: dict[K, V] = {}
        self.old: dict[K, V] = {}

    def __len__(self) -> int:
        return len(self.young) + len(self.old)

    def get(self, key: K) -> V | None:
        value = self.young.get(key)
        if value is None:
            value = self.old.pop(key, None)
            if value is not None:
                self.put(key, value)
        return value

    def put(self, key: K, value: V) -> None:
        young = self.young
        young[key] = value
        if len(young) >= self.half:
            self.old = young
            self.young = {}

    def pop(self, key: K) -> V | None:
        value = self.young.pop(key, None)
        old = self.old.pop(key, None)
        return value if value is not None else old

    def values(self) -> list[V]:
        return [*self.young.values(), *self.old.values()]

    def clear(self) -> None:
        self.young = {}
        self.old = {}


class ChannelEntry:
    __slots__ = ("id", "name", "packages")

    def __init__(self, channel_id: int, name: str, packages: Iterable[int]) -> None:
        self.id = channel_id
        self.name = name
        self.packages = frozenset(packages)


class PortalEntry:
    """A portal as the decision reads it: settings, free packages, channels by stream name."""

    __slots__ = (
        "archive_days",
        "auth_duration",
        "channels",
        "checked_at",
        "deny",
        "evict",
        "exists",
        "free",
        "max_sessions",
        "version",
    )

    def __init__(
        self, version: int, record: PortalRecord | None, checked_at: float, deny_duration: int
    ) -> None:
        self.version = version
        self.checked_at = checked_at
        self.exists = record is not None
        record = record or PortalRecord(180, 0, 1, "deny_new", [], [])
        self.auth_duration = record.auth_duration
        self.archive_days = record.archive_days
        self.max_sessions = record.max_sessions
        self.evict = record.policy == "evict_oldest"
        self.free = frozenset(record.free_packages)
        self.channels = {c.name.encode(): ChannelEntry(c.id, c.name, c.packages) for c in record.channels}
        # Denials are cached by Flussonic for their X-AuthDuration: never longer than
        # an allow of this portal would be.
        self.deny = responses.denials(min(deny_duration, record.auth_duration))


class PortalState:
    """What this process knows about one portal; lives as long as the process."""

    __slots__ = ("entry", "epoch", "generation", "id", "seen", "unsynced")

    def __init__(self, portal_id: int) -> None:
        self.id = portal_id
        self.entry: PortalEntry | None = None
        # Subscriber entries loaded under another generation are not trusted.
        self.generation = 0
        # The last entitlement version applied here (None: none seen yet).
        self.seen: int | None = None
        # Bumped by every signal of the portal: a load that started before a
        # signal must not be cached after it.
        self.epoch = 0
        # Signals applied here whose tombstones are not yet in Redis: until they are,
        # Redis may still hold what they dropped, so entries come from PostgreSQL.
        self.unsynced = 0


class SubscriberEntry:
    """A subscriber as the decision reads it, with its allow answer pre-encoded."""

    __slots__ = (
        "allow",
        "allow_for",
        "checked_at",
        "dead",
        "disabled",
        "exists",
        "generation",
        "id",
        "limit",
        "max_sessions",
        "packages",
        "portal_id",
        "token_version",
        "version",
    )

    def __init__(
        self,
        subscriber_id: int,
        version: int,
        record: SubscriberRecord | None,
        checked_at: float,
        generation: int = 0,
    ) -> None:
        self.id = subscriber_id
        self.version = version
        self.generation = generation
        self.checked_at = checked_at
        self.dead = False
        self.exists = record is not None
        self.portal_id = record.portal_id if record else 0
        self.token_version = record.token_version if record else 0
        self.disabled = record.disabled if record else True
        self.max_sessions = record.max_sessions if record else None
        self.packages = frozenset(record.packages) if record else frozenset()
        self.allow = b""
        self.allow_for: PortalEntry | None = None
        self.limit = 0

    def prepare(self, portal: PortalEntry) -> None:
        """Encode the allow answer for ``portal``'s current settings."""
        self.limit = self.max_sessions if self.max_sessions is not None else portal.max_sessions
        self.allow = responses.allow(portal.auth_duration, self.id, self.limit)
        self.allow_for = portal


class TokenInfo:
    """A token verified once: its claims, or why it is refused."""

    __slots__ = ("expires_at", "portal_id", "reason", "state", "sub", "subscriber_id", "version")

    def __init__(
        self,
        subscriber_id: int,
        portal_id: int,
        version: int,
        expires_at: int | None,
        reason: str | None,
        state: PortalState | None = None,
    ) -> None:
        self.subscriber_id = subscriber_id
        self.portal_id = portal_id
        self.version = version
        self.expires_at = expires_at
        self.reason = reason
        # The claimed portal's state (set for every good token).
        self.state: PortalState = state if state is not None else _NO_PORTAL
        # The subscriber entry last used with this token (checked for `dead` on use).
        self.sub: SubscriberEntry | None = None


_NO_PORTAL = PortalState(0)


class Caches:
    """The three in-process layers and their invalidation."""

    __slots__ = ("portals", "subscribers", "tokens")

    def __init__(self, size: int) -> None:
        self.tokens: TwoGenerationCache[bytes, TokenInfo] = TwoGenerationCache(size)
        self.subscribers: TwoGenerationCache[int, SubscriberEntry] = TwoGenerationCache(size)
        self.portals: dict[int, PortalState] = {}

    def portal(self, portal_id: int) -> PortalState:
        state = self.portals.get(portal_id)
        if state is None:
            state = self.portals[portal_id] = PortalState(portal_id)
        return state

    def drop_subscribers(self, subscriber_ids: Iterable[int]) -> None:
        for subscriber_id in subscriber_ids:
            entry = self.subscribers.pop(subscriber_id)
            if entry is not None:
                entry.dead = True

    def drop_portal(self, portal_id: int, everything: bool = False) -> None:
        """Forget the portal's entry; with ``everything``, its subscribers' entries too."""
        state = self.portal(portal_id)
        state.entry = None
        state.epoch += 1
        if everything:
            state.generation += 1

    def drop_older(self, versions: dict[int, int]) -> None:
        """Forget every entry built before its portal's current entitlement ``versions``.

        For entries loaded while no signal could reach the process: those built at the
        current version cannot have missed a change.
        """
        for state in self.portals.values():
            if state.entry is not None and state.entry.version < versions.get(state.id, 0):
                state.entry = None
                state.epoch += 1
        for entry in self.subscribers.values():
            if not entry.exists or entry.version < versions.get(entry.portal_id, 0):
                entry.dead = True
                self.subscribers.pop(entry.id)

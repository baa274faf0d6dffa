"""The benchmark's data set: one portal with subscribers, channels, packages and tokens.

:func:`generate` builds it in memory, deterministically from a seed, so that the
request mix (``request_mix.py``) knows which subscriber may watch what;
:func:`load` writes it into a migrated database with COPY.  The portal itself is
made through :func:`catena.portals.create`, like ``catena portal create`` does.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import asyncpg

from catena import ids, portals
from catena.tokens import TokenCodec

# Which subscribers get a limit other than the portal's default (2): every 50th one
# a single-screen plan, the one after it a family plan of 4.
SINGLE_SCREEN_EVERY = 50
FAMILY_SCREENS = 4
# One subscriber in a hundred among those without a token is disabled.
DISABLED_EVERY = 100


@dataclass(frozen=True, slots=True)
class Spec:
    """The size of the data set; the defaults are the ones the issue states."""

    subscribers: int = 100_000
    channels: int = 500
    packages: int = 50
    tokens: int = 20_000
    free_packages: int = 1
    package_sizes: tuple[int, int] = (10, 40)
    subscriptions_per_subscriber: tuple[int, int] = (1, 3)
    seed: int = 20_240_101

    def __post_init__(self) -> None:
        if not 0 < self.tokens <= self.subscribers:
            raise ValueError(f"tokens must be within 1..subscribers, got {self.tokens}")
        if not 0 <= self.free_packages < self.packages:
            raise ValueError("at least one package must be sold (free_packages < packages)")


@dataclass(slots=True)
class Subscriber:
    id: int
    index: int
    phone: str
    packages: tuple[int, ...]
    max_sessions: int | None
    disabled: bool
    token: str | None


@dataclass(slots=True)
class DataSet:
    portal_id: int
    channels: list[tuple[int, str]]
    packages: list[tuple[int, str]]
    # package id -> indexes into ``channels``
    package_channels: dict[int, tuple[int, ...]]
    free_packages: list[int]
    subscribers: list[Subscriber]
    _entitled: dict[int, frozenset[int]] = field(default_factory=dict)

    def holders(self) -> list[Subscriber]:
        """The subscribers that hold an active playback token."""
        return [s for s in self.subscribers if s.token is not None]

    def entitled(self, subscriber: Subscriber) -> frozenset[int]:
        """Indexes of the channels ``subscriber`` may watch (own ∪ free packages)."""
        known = self._entitled.get(subscriber.id)
        if known is None:
            chosen = (*subscriber.packages, *self.free_packages)
            known = frozenset(i for p in chosen for i in self.package_channels[p])
            self._entitled[subscriber.id] = known
        return known


def generate(spec: Spec, portal_id: int, codec: TokenCodec) -> DataSet:
    """Build the data set for ``portal_id``; tokens are signed with ``codec``."""
    rng = random.Random(spec.seed)
    channels = [(ids.new_id(), f"ch{i + 1:04d}") for i in range(spec.channels)]
    packages = [(ids.new_id(), f"package-{i + 1:02d}") for i in range(spec.packages)]
    package_channels = {
        package_id: tuple(sorted(rng.sample(range(spec.channels), _size(rng, spec))))
        for package_id, _ in packages
    }
    free = [package_id for package_id, _ in packages[: spec.free_packages]]
    sold = [package_id for package_id, _ in packages[spec.free_packages :]]
    subscribers = [_subscriber(rng, spec, i, sold) for i in range(spec.subscribers)]
    for subscriber in subscribers[: spec.tokens]:
        subscriber.token = codec.sign(subscriber.id, portal_id, 1)
    return DataSet(portal_id, channels, packages, package_channels, free, subscribers)


def _size(rng: random.Random, spec: Spec) -> int:
    low, high = spec.package_sizes
    return min(rng.randint(low, high), spec.channels)


def _subscriber(rng: random.Random, spec: Spec, index: int, sold: list[int]) -> Subscriber:
    low, high = spec.subscriptions_per_subscriber
    chosen = tuple(rng.sample(sold, min(rng.randint(low, high), len(sold))))
    limit: int | None = None
    if index % SINGLE_SCREEN_EVERY == 0:
        limit = 1
    elif index % SINGLE_SCREEN_EVERY == 1:
        limit = FAMILY_SCREENS
    # Token holders are never disabled: the request mix expects them to be served.
    disabled = index >= spec.tokens and index % DISABLED_EVERY == DISABLED_EVERY - 1
    phone = f"{9_000_000_000 + index}"
    return Subscriber(ids.new_id(), index, phone, chosen, limit, disabled, None)


async def create_portal(conn: asyncpg.Connection, name: str) -> int:
    """Make the benchmark's portal (and its owner) the way ``catena portal create`` does."""
    created = await portals.create(
        conn, name=name, domain="", owner_email=f"owner@{name}.example.com", bcrypt_rounds=4
    )
    portal_id = ids.decode(created.portalId)
    assert portal_id is not None
    return portal_id


async def load(conn: asyncpg.Connection, data: DataSet) -> None:
    """Write everything but the portal with COPY, in one transaction, then ANALYZE."""
    unchecked = await _skip_foreign_key_checks(conn)
    try:
        await _copy_all(conn, data)
    finally:
        if unchecked:
            await conn.execute("RESET session_replication_role")
    await conn.execute("ANALYZE")


async def _skip_foreign_key_checks(conn: asyncpg.Connection) -> bool:
    """Turn off per-row foreign-key triggers when allowed (superuser); say whether they are.

    They make COPY three times slower, and the rows reference each other correctly
    by construction (tests/benchmarks checks the references after loading).
    """
    try:
        await conn.execute("SET session_replication_role = replica")
    except asyncpg.InsufficientPrivilegeError:
        return False
    return True


async def _copy_all(conn: asyncpg.Connection, data: DataSet) -> None:
    async with conn.transaction():
        await _copy(conn, "channels", ("id", "portal_id", "name", "title"), _channel_rows(data))
        await _copy(conn, "packages", ("id", "portal_id", "name"), _package_rows(data))
        await _copy(conn, "channel_packages", ("package_id", "channel_id", "portal_id"), _link_rows(data))
        await _copy(
            conn,
            "portal_free_packages",
            ("portal_id", "package_id"),
            [(data.portal_id, p) for p in data.free_packages],
        )
        await _copy(conn, "subscribers", _SUBSCRIBER_COLUMNS, _subscriber_rows(data))
        await _copy(
            conn,
            "subscriptions",
            ("subscriber_id", "package_id", "portal_id"),
            _subscription_rows(data),
        )


_SUBSCRIBER_COLUMNS = (
    "id",
    "portal_id",
    "name",
    "phone_country_code",
    "phone",
    "disabled",
    "max_sessions",
    "token_version",
)


async def _copy(
    conn: asyncpg.Connection, table: str, columns: tuple[str, ...], rows: list[tuple[object, ...]]
) -> None:
    await conn.copy_records_to_table(table, records=rows, columns=list(columns))


def _channel_rows(data: DataSet) -> list[tuple[object, ...]]:
    return [(cid, data.portal_id, name, f"Channel {name[2:]}") for cid, name in data.channels]


def _package_rows(data: DataSet) -> list[tuple[object, ...]]:
    return [(pid, data.portal_id, name) for pid, name in data.packages]


def _link_rows(data: DataSet) -> list[tuple[object, ...]]:
    return [
        (package_id, data.channels[i][0], data.portal_id)
        for package_id, members in data.package_channels.items()
        for i in members
    ]


def _subscriber_rows(data: DataSet) -> list[tuple[object, ...]]:
    return [
        (s.id, data.portal_id, f"Subscriber {s.index}", "7", s.phone, s.disabled, s.max_sessions, 1)
        for s in data.subscribers
    ]


def _subscription_rows(data: DataSet) -> list[tuple[object, ...]]:
    return [(s.id, p, data.portal_id) for s in data.subscribers for p in s.packages]

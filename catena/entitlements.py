"""The entitlement change signal (docs/contracts.md).

Every mutation that changes who may watch what calls :func:`changed` inside its
own transaction.  It bumps the portal's entitlement version and queues a
``pg_notify`` on :data:`CHANNEL`, which PostgreSQL delivers only when (and if) the
transaction commits, in commit order.  The payload is compact JSON::

    {"p": <portal id>, "k": "<kind>", "i": [<ids>...], "v": <version>, "s": [<sessions>...]}

``kind`` says what ``ids`` name: ``subscriber``, ``package``, ``channel``, or
``portal`` (ids empty: anything in the portal may have changed — portal settings,
free packages, or a change too wide to list); ``session``: an operator terminated
the play sessions ``s`` (Flussonic session ids; ``s`` is omitted for other kinds)
of the subscribers ``ids``.  Because the version row is locked
until commit, versions of one portal arrive consecutively; a listener that sees a
gap, or reconnects, must drop what it holds for that portal.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import asyncpg
import msgspec

CHANNEL = "catena_entitlements"
Kind = Literal["subscriber", "package", "channel", "portal", "session"]
KINDS: frozenset[str] = frozenset(("subscriber", "package", "channel", "portal", "session"))
# Ids per notification before it degrades to kind=portal; 100 ids of 20 digits
# keep the payload near 2 KB, far below PostgreSQL's 8,000-byte limit.
MAX_IDS = 100
# Session ids are up to 128 characters: 20 keep the payload under 3 KB.
MAX_SESSIONS = 20

_BUMP = """
INSERT INTO entitlement_versions (portal_id, version) VALUES ($1, 1)
ON CONFLICT (portal_id) DO UPDATE SET version = entitlement_versions.version + 1
RETURNING version
"""


class Signal(msgspec.Struct, frozen=True, omit_defaults=True):
    """One decoded notification."""

    p: int
    k: str
    i: list[int]
    v: int
    s: list[str] = msgspec.field(default_factory=list)

    @property
    def sessions(self) -> list[str]:
        return self.s

    @property
    def portal_id(self) -> int:
        return self.p

    @property
    def kind(self) -> str:
        return self.k

    @property
    def ids(self) -> list[int]:
        return self.i

    @property
    def version(self) -> int:
        return self.v


_decoder = msgspec.json.Decoder(Signal)


async def changed(
    conn: asyncpg.Connection,
    portal_id: int,
    kind: Kind,
    ids: Iterable[int] = (),
    sessions: Iterable[str] = (),
) -> int:
    """Record that entitlements of ``portal_id`` changed; return the new version.

    Must be called inside the transaction that makes the change.  ``sessions``:
    the Flussonic ids of the sessions terminated (kind ``session``).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown entitlement kind {kind!r}")
    id_list = sorted(set(ids))
    session_list = sorted(set(sessions)) if kind == "session" else []
    if len(session_list) > MAX_SESSIONS:
        raise ValueError(f"at most {MAX_SESSIONS} sessions per signal")
    if kind == "portal" or len(id_list) > MAX_IDS:
        kind, id_list, session_list = "portal", [], []
    version: int = await conn.fetchval(_BUMP, portal_id)
    payload = msgspec.json.encode(Signal(portal_id, kind, id_list, version, session_list)).decode()
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
    return version


def decode(payload: str | bytes) -> Signal:
    """Parse a notification payload (raises ``msgspec.DecodeError`` / ``ValidationError``)."""
    return _decoder.decode(payload)


async def current_version(conn: asyncpg.Connection, portal_id: int) -> int:
    """The portal's entitlement version now (0 when nothing has changed yet)."""
    version = await conn.fetchval("SELECT version FROM entitlement_versions WHERE portal_id = $1", portal_id)
    return int(version or 0)

"""Snowflake ids and their 12-character text form (docs/api.md).

An id is a signed 64-bit integer, stored as ``BIGINT``: 41 bits of milliseconds
since :data:`EPOCH_MS`, 10 bits of node number, 12 bits of sequence.  At the edge it
is written as the URL-safe base64 of its 8 big-endian bytes with ``=`` replaced by
``.`` (``+`` → ``-`` and ``/`` → ``_`` come with the URL-safe alphabet), e.g.
``pK19SW3AAAE.``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import struct
import time
from collections.abc import Sequence

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
NODE_BITS = 10
SEQUENCE_BITS = 12
MAX_NODE = (1 << NODE_BITS) - 1
_SEQUENCE_MASK = (1 << SEQUENCE_BITS) - 1
_TEXT_RE = re.compile(r"^[A-Za-z0-9_-]{11}\.$")
_PACK = struct.Struct(">q")
_TO_TEXT = bytes.maketrans(b"+/=", b"-_.")


def encode(value: int) -> str:
    """Return the 12-character text form of an id."""
    # One C call and a translation: twice as fast as urlsafe_b64encode + replace,
    # which matters on pages of a thousand rows with several ids each.
    return binascii.b2a_base64(_PACK.pack(value), newline=False).translate(_TO_TEXT).decode("ascii")


def encode_many(values: Sequence[int]) -> list[str]:
    """The text forms of many ids at once (a page of rows): one base64 call for all.

    Each id is packed with a zero byte after it, so every 9 bytes become exactly 12
    characters: the first 11 are the id's, the 12th stands for the padding.
    """
    if not values:
        return []
    text = binascii.b2a_base64(struct.pack(">" + "qx" * len(values), *values), newline=False)
    chars = text.translate(_TO_TEXT).decode("ascii")
    return [chars[i : i + 11] + "." for i in range(0, len(chars), 12)]


def encode_optional_many(values: Sequence[int | None]) -> list[str | None]:
    """:func:`encode_many` for a column that may hold ``None``."""
    present = [v for v in values if v is not None]
    if len(present) == len(values):
        return list(encode_many(present))
    texts = iter(encode_many(present))
    return [None if v is None else next(texts) for v in values]


def decode(text: str) -> int | None:
    """Return the id written as ``text``, or ``None`` when it is not a canonical id.

    Callers turn ``None`` into a 404: an id that does not decode names nothing.
    """
    if not isinstance(text, str) or not _TEXT_RE.match(text):
        return None
    try:
        raw = base64.urlsafe_b64decode(text[:11] + "=")
    except (binascii.Error, ValueError):
        return None
    value: int = _PACK.unpack(raw)[0]
    # Several strings decode to the same bytes (the last character carries two
    # unused bits); only the canonical one names the id.
    return value if encode(value) == text else None


def timestamp_ms(value: int) -> int:
    """Return the Unix time in milliseconds at which id ``value`` was made."""
    return (value >> (NODE_BITS + SEQUENCE_BITS)) + EPOCH_MS


def lowest_at(unix_ms: int) -> int:
    """Return the smallest id that can be made at ``unix_ms`` (for range queries)."""
    return max(unix_ms - EPOCH_MS, 0) << (NODE_BITS + SEQUENCE_BITS)


class IdGenerator:
    """Makes time-ordered ids for one process; ``node`` must be unique among live processes."""

    __slots__ = ("_last_ms", "_node", "_sequence")

    def __init__(self, node: int) -> None:
        if not 0 <= node <= MAX_NODE:
            raise ValueError(f"node must be within 0..{MAX_NODE}, got {node}")
        self._node = node
        self._last_ms = 0
        self._sequence = 0

    @property
    def node(self) -> int:
        return self._node

    def next(self) -> int:
        now = int(time.time() * 1000) - EPOCH_MS
        if now <= self._last_ms:
            # Same millisecond, or the clock stepped back: keep counting from the
            # last one so ids stay unique and ordered.
            now = self._last_ms
            self._sequence = (self._sequence + 1) & _SEQUENCE_MASK
            if self._sequence == 0:
                now += 1
        else:
            self._sequence = 0
        self._last_ms = now
        return (now << (NODE_BITS + SEQUENCE_BITS)) | (self._node << SEQUENCE_BITS) | self._sequence

    def reserve(self, count: int) -> range:
        """Up to ``count`` (≥ 1) new ids at once, for bulk inserts.

        The ids of one millisecond and node are consecutive integers, so a block
        is a ``range``; it ends early when the millisecond's sequence runs out.
        """
        first = self.next()
        extra = min(count - 1, _SEQUENCE_MASK - self._sequence)
        self._sequence += extra
        return range(first, first + extra + 1)


_generator = IdGenerator(int.from_bytes(os.urandom(2), "big") & MAX_NODE)


def configure(node: int) -> None:
    """Use ``node`` for the ids this process makes from now on."""
    global _generator
    _generator = IdGenerator(node)


def new_id() -> int:
    """Return a new id from this process's generator."""
    return _generator.next()


def reserve(count: int) -> range:
    """Up to ``count`` consecutive new ids from this process's generator (bulk inserts)."""
    return _generator.reserve(count)


async def claim_node(conn: object) -> int:
    """Take a node number from PostgreSQL's ``snowflake_nodes`` sequence and use it.

    Every process that makes ids calls this at start, so two live processes never
    share a node number (the sequence cycles through 0..1022; 1023 is PostgreSQL's own).
    """
    node: int = await conn.fetchval("SELECT nextval('snowflake_nodes')")  # type: ignore[attr-defined]
    configure(node)
    return node

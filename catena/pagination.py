"""Keyset-cursor pagination shared by every list endpoint (API.md §0).

A cursor is the URL-safe base64 of a small JSON array: the list's tag, then the
sort key of the last row returned.  It is opaque to clients; one that does not
decode, belongs to another list or carries values of the wrong type is a 400.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec

from .errors import InvalidInput

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# Keys are BIGINT columns; a forged cursor with a wider integer is a 400, not a 500.
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

# Keys are compared with BIGINT columns; a forged key outside their range is a 400, not a 500.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

T = TypeVar("T")
Key = tuple[Any, ...]


def parse_limit(value: int | str | None) -> int:
    """The page size: default 100, at most 1000; anything else is a 400 naming ``limit``."""
    if value is None:
        return DEFAULT_LIMIT
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"limit must be an integer, got {value!r}", field="limit") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}, got {limit}", field="limit")
    return limit


def encode_cursor(tag: str, key: Key) -> str:
    raw = msgspec.json.encode([tag, *key])
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(tag: str, cursor: str | None, types: Sequence[type]) -> Key | None:
    """Return the key a cursor continues after, or ``None`` for the first page."""
    if cursor is None or cursor == "":
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        items = msgspec.json.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise _bad_cursor() from None
    if not isinstance(items, list) or len(items) != len(types) + 1 or items[0] != tag:
        raise _bad_cursor()
    key = tuple(items[1:])
    for value, kind in zip(key, types, strict=True):
        if type(value) is not kind or (isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX):
            raise _bad_cursor()
    return key


def _bad_cursor() -> InvalidInput:
    return InvalidInput("cursor is not a cursor this list issued", field="cursor")


def page(
    rows: Sequence[T], limit: int, tag: str, key: Callable[[T], Key]
) -> tuple[Sequence[T], str | None]:
    """Trim a ``limit + 1`` fetch to ``limit`` rows and make the next cursor if more remain."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(tag, key(rows[-1]))

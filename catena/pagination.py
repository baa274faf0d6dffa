"""Keyset-cursor pagination shared by every list endpoint (docs/api.md).

A cursor is the URL-safe base64 of an HMAC tag followed by a small JSON array: the
list's name, then the sort key of the last row returned.  It is opaque to clients.
The tag makes it tamper-evident: one that does not decode, was not made by this
deployment, was cut short, belongs to another list or carries values of the wrong
type is a 400 naming ``cursor``.

The tag's keys are derived from the deployment's ``CATENA_TOKEN_SECRETS`` (not the
secrets themselves, so a cursor is no help in forging a playback token), so every
admin_api process of a deployment accepts every other's cursors.  Like tokens, the
first secret signs and every configured one verifies: a cursor stays good while the
secret that made it is configured, and once that secret is removed it is a 400 and
the client starts the list again from the first page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec

from .errors import InvalidInput
from .settings import parse_token_secrets

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# Keys are compared with BIGINT columns; a key outside their range is a 400, not a 500.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# 128 bits of HMAC-SHA256: far beyond guessing, and 22 characters of cursor.
_TAG_BYTES = 16
# Domain separation: the cursor key is not the playback-token key.
_KEY_LABEL = b"catena pagination cursor v1"

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


class Cursors:
    """Makes and checks the cursors of one deployment (keys from ``CATENA_TOKEN_SECRETS``)."""

    def __init__(self, secrets: str) -> None:
        self._keys = [
            hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()
            for _, secret in parse_token_secrets(secrets)
        ]

    def encode(self, tag: str, key: Key) -> str:
        """The cursor that continues list ``tag`` after the row whose sort key is ``key``."""
        raw = msgspec.json.encode([tag, *key])
        signed = _tag(self._keys[0], raw) + raw
        return base64.urlsafe_b64encode(signed).decode("ascii").rstrip("=")

    def decode(self, tag: str, cursor: str | None, types: Sequence[type]) -> Key | None:
        """Return the key a cursor of list ``tag`` continues after, or ``None`` for the first page."""
        if cursor is None or cursor == "":
            return None
        items = _json_array(self._verified(cursor))
        if len(items) != len(types) + 1 or items[0] != tag:
            raise _bad_cursor()
        key = tuple(items[1:])
        for value, kind in zip(key, types, strict=True):
            if type(value) is not kind or (isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX):
                raise _bad_cursor()
        return key

    def page(
        self, rows: Sequence[T], limit: int, tag: str, key: Callable[[T], Key]
    ) -> tuple[Sequence[T], str | None]:
        """Trim a ``limit + 1`` fetch to ``limit`` rows and make the next cursor if more remain."""
        if len(rows) <= limit:
            return rows, None
        rows = rows[:limit]
        return rows, self.encode(tag, key(rows[-1]))

    def _verified(self, cursor: str) -> bytes:
        """The signed bytes of a cursor one of our keys made; a 400 for anything else."""
        try:
            signed = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raise _bad_cursor() from None
        sent, raw = signed[:_TAG_BYTES], signed[_TAG_BYTES:]
        if not any(hmac.compare_digest(sent, _tag(key, raw)) for key in self._keys):
            raise _bad_cursor()
        return raw


def _tag(key: bytes, raw: bytes) -> bytes:
    return hmac.new(key, raw, hashlib.sha256).digest()[:_TAG_BYTES]


def _json_array(raw: bytes) -> list[Any]:
    # Only our own encoder made these bytes (the tag checked out), so this guards
    # against a future format change rather than a client.
    try:
        items = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise _bad_cursor() from None
    if not isinstance(items, list):
        raise _bad_cursor()
    return items


def _bad_cursor() -> InvalidInput:
    return InvalidInput("cursor is not a cursor this list issued", field="cursor")

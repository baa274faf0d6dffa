"""Every Redis key name the services use, in one place, and the hash slot each lands in.

Redis Cluster keeps a key in the hash slot of its *hash tag* (the text between the
first ``{`` and the next ``}``), so keys that one script or transaction touches
together must share a tag.  The layout:

* per subscriber, tag ``{s:<id>}``: its entitlement entry and its session keys —
  ``{prefix}:ent:{s:<id>}``, ``{prefix}:lim:{s:<id>}`` (sorted set: session →
  expiry ms), ``…:o`` (hash: session → opened ms), ``…:x`` (evicted sessions);
* per portal, tag ``{p:<id>}``: ``{prefix}:ent:{p:<id>}`` (the portal's entry) and
  ``…:floor``, ``…:seen``, ``…:refill:<version>``;
* per hash slot, a *marker* ``{prefix}:ready:{<tag of that slot>}``: which Redis
  server (its ``run_id``) the slot's session counts were last rebuilt on, see
  :mod:`authgate.session_limiter`; the tag of each slot is found once
  (:func:`slot_tag`);
* the recovery lock ``{prefix}:lim:lock``, and the admin API's throttles
  (``{prefix}:login-fail:…``, ``{prefix}:client:…``), each a key of its own.

Nothing relies on database numbers or on listing keys.  Subscriber and portal ids
are snowflakes, unique across tables, so the two tag forms never collide.
"""

from __future__ import annotations

import binascii
from functools import cache

SLOTS = 16384


def key_slot(key: bytes | str) -> int:
    """The Redis Cluster hash slot of ``key`` (CRC16 of its hash tag, or of the whole key)."""
    raw = key.encode() if isinstance(key, str) else key
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return binascii.crc_hqx(raw, 0) & (SLOTS - 1)


@cache
def _slot_tags() -> dict[int, int]:
    """For every slot, a 16-bit number whose four-letter tag (:func:`_letters`) hashes to it.

    CRC16 is linear: the CRC of a four-byte string whose bytes are ``0x40 | nibble``
    is a fixed value XOR one term per nibble bit.  Building the CRCs of all 65,536
    such strings by doubling and keeping the first per slot takes a few milliseconds.
    """
    base = b"@@@@"
    first = binascii.crc_hqx(base, 0)
    crcs = [first]
    for bit in range(16):
        flipped = bytearray(base)
        flipped[bit >> 2] ^= 1 << (bit & 3)
        delta = binascii.crc_hqx(bytes(flipped), 0) ^ first
        crcs += [crc ^ delta for crc in crcs]
    mask = SLOTS - 1
    # Later pairs win in dict(); reversed, the smallest number per slot is kept.
    return dict(zip([crc & mask for crc in reversed(crcs)], range(len(crcs) - 1, -1, -1), strict=True))


def _letters(number: int) -> str:
    return "".join(chr(0x40 | (number >> shift) & 15) for shift in (0, 4, 8, 12))


@cache
def slot_tag(slot: int) -> str:
    """Four letters (``@``–``O``) whose hash tag lands in ``slot``."""
    return _letters(_slot_tags()[slot])


class KeySpace:
    """The key names of one deployment (one ``CATENA_REDIS_PREFIX``)."""

    __slots__ = ("_lock", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._lock = f"{prefix}:lim:lock"

    def key(self, *parts: object) -> str:
        """A plain namespaced key: ``key("a", 1)`` → ``{prefix}:a:1`` (its own slot)."""
        return ":".join((self.prefix, *map(str, parts)))

    # ------------------------------------------------------------ per subscriber

    def subscriber_entry(self, subscriber_id: int) -> str:
        return f"{self.prefix}:ent:{{s:{subscriber_id}}}"

    def sessions(self, subscriber_id: int) -> tuple[bytes, bytes, bytes]:
        """The subscriber's session keys: counted (zset), opened (hash), evicted (zset)."""
        counted = b"%s:lim:{s:%d}" % (self.prefix.encode(), subscriber_id)
        return counted, counted + b":o", counted + b":x"

    def subscriber_slot(self, subscriber_id: int) -> int:
        return binascii.crc_hqx(b"s:%d" % subscriber_id, 0) & (SLOTS - 1)

    # ------------------------------------------------------------ per portal

    def portal_entry(self, portal_id: int) -> str:
        return f"{self.prefix}:ent:{{p:{portal_id}}}"

    def floor(self, portal_id: int) -> str:
        return f"{self.prefix}:ent:{{p:{portal_id}}}:floor"

    def seen(self, portal_id: int) -> str:
        return f"{self.prefix}:ent:{{p:{portal_id}}}:seen"

    def refill_claim(self, portal_id: int, version: int) -> str:
        return f"{self.prefix}:ent:{{p:{portal_id}}}:refill:{version}"

    def portal_slot(self, portal_id: int) -> int:
        return binascii.crc_hqx(b"p:%d" % portal_id, 0) & (SLOTS - 1)

    # ------------------------------------------------------------ per slot and global

    def marker(self, slot: int) -> str:
        """The slot's ready marker (same slot as every key it vouches for)."""
        return f"{self.prefix}:ready:{{{slot_tag(slot)}}}"

    @property
    def recovery_lock(self) -> str:
        return self._lock

    # ------------------------------------------------------------ admin API throttles

    def login_failures(self, kind: str, subject: str) -> str:
        """Failed manager logins per ``email`` or ``ip``."""
        return self.key("login-fail", kind, subject)

    def client_counter(self, kind: str, subject: str) -> str:
        """The client API's sign-in counters (``sms-ip``, ``sms-phone``, ``verify-ip``)."""
        return self.key("client", kind, subject)

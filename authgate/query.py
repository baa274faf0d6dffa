"""Flussonic's query string: parsing it, and the fields the gateway reads from it.

Values stay percent-encoded until read with :func:`field`; most are never read.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

Fields = dict[bytes, bytes]

MAX_SESSION_ID = 128
# Keys under which players pass a device id in their own query string (``qs``).
DEVICE_KEYS = (b"device_id", b"deviceId", b"device", b"uuid")
_TRUE = (b"true", b"1", b"yes")


def parse_query(raw: bytes) -> Fields:
    """``a=1&b=2`` → ``{b"a": b"1", b"b": b"2"}``; values stay percent-encoded.

    A repeated key keeps its last value (Flussonic sends each once).
    """
    fields: Fields = {}
    for part in raw.split(b"&"):
        key, _, value = part.partition(b"=")
        fields[key] = value
    return fields


def field(fields: Fields, key: bytes) -> bytes | None:
    """A percent-decoded field, ``None`` when absent."""
    value = fields.get(key)
    if value is not None and (b"%" in value or b"+" in value):
        value = unquote_to_bytes(value.replace(b"+", b" "))
    return value


def text(value: bytes | None, limit: int) -> str | None:
    """A field as text fit for a database column: valid UTF-8, no NUL, at most ``limit`` chars."""
    if not value:
        return None
    return value[:limit].decode("utf-8", "replace").replace("\x00", "")[:limit] or None


_GRAPHIC = bytes(range(0x21, 0x7F))


def valid_session_id(value: bytes) -> bool:
    """1 to 128 visible ASCII characters (no spaces or controls)."""
    return 0 < len(value) <= MAX_SESSION_ID and not value.translate(None, _GRAPHIC)


def token_from_qs(fields: Fields) -> bytes | None:
    """The ``token`` of the player's own query string, for servers that do not pass it on."""
    qs = field(fields, b"qs")
    if not qs or b"token=" not in qs:
        return None
    return field(parse_query(qs.lstrip(b"?")), b"token")


def device_id(fields: Fields) -> bytes | None:
    qs = field(fields, b"qs")
    if not qs:
        return None
    inner = parse_query(qs.lstrip(b"?"))
    for name in DEVICE_KEYS:
        value = field(inner, name)
        if value:
            return value
    return None


def archive_requested(fields: Fields) -> bool:
    """``dvr=true``, or a legacy ``media_request`` naming a range (``...-<from>-<duration>``)."""
    if fields.get(b"dvr", b"").lower() in _TRUE:
        return True
    request = field(fields, b"media_request")
    if not request:
        return False
    parts = request.rsplit(b"-", 2)
    return len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit()


def opening_details(fields: Fields) -> tuple[str | None, str | None, str | None, str | None, str | None]:
    """What a session's row records from its first check: ip, user agent, token, device, proto."""
    return (
        text(field(fields, b"ip"), 64),
        text(field(fields, b"user_agent"), 1024),
        text(field(fields, b"token") or token_from_qs(fields), 4096),
        text(device_id(fields), 256),
        text(field(fields, b"proto"), 32),
    )

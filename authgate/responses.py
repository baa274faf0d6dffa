"""Every answer the gateway sends, encoded once as bytes (docs/authgate.md).

Allow answers depend on the portal's ``authDuration`` and the subscriber's id and
limit, so each subscriber entry keeps its own (``caches.SubscriberEntry.prepare``);
denials depend only on the reason and their duration, so each portal keeps a table
of them, and :data:`DENY` holds the table for requests no portal can be named for.
"""

from __future__ import annotations

import msgspec

from catena import ids

REASONS: dict[str, str] = {
    "bad_request": "the request lacks a required field or has a malformed one",
    "no_token": "no playback token in the request",
    "bad_token": "the playback token is not valid",
    "token_revoked": "the playback token was reset or has expired",
    "unknown_subscriber": "the token's subscriber does not exist",
    "subscriber_disabled": "the subscriber is disabled",
    "channel_not_in_packages": "the channel is not in the subscriber's packages",
    "unknown_channel": "no channel of the portal has this stream name",
    "session_limit": "the subscriber has reached the concurrent-session limit",
    "session_terminated": "an operator terminated this play session",
    "portal_mismatch": "the token belongs to another portal",
}

STATUS_TEXT = {
    200: b"OK",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


class ErrorBody(msgspec.Struct, omit_defaults=True):
    error: str
    message: str
    field: str | None = None


class DvrRange(msgspec.Struct):
    opened_at: int
    closed_at: int


class DvrBody(msgspec.Struct):
    allowed_dvr_ranges: list[DvrRange]


_json = msgspec.json.Encoder()


def encode(
    status: int, body: bytes = b"", headers: bytes = b"", content_type: bytes = b"application/json"
) -> bytes:
    """One complete HTTP/1.1 response."""
    head = b"HTTP/1.1 %d %s\r\n" % (status, STATUS_TEXT.get(status, b"Unknown"))
    if body:
        head += b"Content-Type: " + content_type + b"\r\n"
    return head + headers + b"Content-Length: %d\r\n\r\n" % len(body) + body


def allow(auth_duration: int, subscriber_id: int, max_sessions: int) -> bytes:
    headers = b"X-AuthDuration: %d\r\nX-UserId: %s\r\nX-Max-Sessions: %d\r\n" % (
        auth_duration,
        ids.encode(subscriber_id).encode(),
        max_sessions,
    )
    return encode(200, headers=headers)


def allow_archive(allow_response: bytes, opened_at: int, closed_at: int) -> bytes:
    """``allow_response`` with a body limiting archive playback to one range."""
    body = _json.encode(DvrBody([DvrRange(opened_at, closed_at)] if closed_at > opened_at else []))
    head = allow_response[: -len(b"Content-Length: 0\r\n\r\n")]
    return head + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def error(status: int, code: str, message: str, field: str | None = None, headers: bytes = b"") -> bytes:
    return encode(status, _json.encode(ErrorBody(code, message, field)), headers)


def deny(reason: str, duration: int, message: str | None = None, field: str | None = None) -> bytes:
    return error(403, reason, message or REASONS[reason], field, b"X-AuthDuration: %d\r\n" % duration)


def denials(duration: int) -> dict[str, bytes]:
    """The 403 answer for every reason, with ``duration`` as X-AuthDuration."""
    return {reason: deny(reason, duration) for reason in REASONS}


UNTRUSTED_MESSAGE = (
    "the caller is not trusted: its address is outside CATENA_AUTH_ALLOWED_NETS and the request carries"
    " no valid secret (X-Catena-Secret header or catena_secret parameter)"
)


def untrusted(deny_duration: int) -> dict[bytes, bytes]:
    """Refusals of an untrusted caller by path: a deny Flussonic caches for ``deny_duration``
    on ``/auth``; a plain 403 on ``/events`` (Flussonic resends it, the operator sees it)."""
    return {
        b"/auth": deny("untrusted", deny_duration, UNTRUSTED_MESSAGE),
        b"/events": error(403, "untrusted", UNTRUSTED_MESSAGE),
    }


def with_close(response: bytes) -> bytes:
    """``response`` telling the client that the connection closes after it."""
    return response.replace(b"\r\n", b"\r\nConnection: close\r\n", 1)


BAD_REQUEST = error(400, "bad_request", "malformed HTTP request")
NOT_FOUND = error(404, "not_found", "no such path; the gateway serves /auth, /events, /health, /metrics")
METHOD_NOT_ALLOWED = error(405, "method_not_allowed", "this path does not accept that method")
TIMEOUT = error(408, "request_timeout", "the request did not arrive in time")
TOO_LARGE = error(413, "body_too_large", "the request body is larger than the gateway accepts")
HEADERS_TOO_LARGE = error(431, "headers_too_large", "the request headers are larger than the gateway accepts")
UNAVAILABLE = error(503, "unavailable", "neither Redis nor PostgreSQL can be reached to decide")

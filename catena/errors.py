"""The error hierarchy every service raises, and its JSON rendering (docs/api.md).

Raise these anywhere; the HTTP layer renders them once as
``{"error": code, "message": text, "field": name?}`` with the class's status.
"""

from __future__ import annotations

import re

import msgspec

_NAMED_FIELD = re.compile(r"^Object (?:missing required|contains unknown) field `([^`]+)`$")


class ErrorBody(msgspec.Struct, omit_defaults=True):
    error: str
    message: str
    field: str | None = None


class CatenaError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code

    def body(self) -> ErrorBody:
        return ErrorBody(error=self.code, message=self.message, field=self.field)

    def to_json(self) -> bytes:
        return msgspec.json.encode(self.body())


class InvalidInput(CatenaError):
    status = 400
    code = "invalid_input"


class Unauthorized(CatenaError):
    status = 401
    code = "unauthorized"


class Forbidden(CatenaError):
    status = 403
    code = "forbidden"


class NotFound(CatenaError):
    status = 404
    code = "not_found"


class Conflict(CatenaError):
    status = 409
    code = "conflict"


class NotAcceptable(CatenaError):
    """The client accepts only a representation the endpoint does not have (e.g. CSV)."""

    status = 406
    code = "not_acceptable"


class PayloadTooLarge(CatenaError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(CatenaError):
    status = 415
    code = "unsupported_media_type"


class TooManyRequests(CatenaError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int = 60):
        super().__init__(message)
        self.retry_after = retry_after


class ServiceUnavailable(CatenaError):
    status = 503
    code = "service_unavailable"


def from_validation(exc: msgspec.ValidationError | msgspec.DecodeError) -> InvalidInput:
    """Turn msgspec's message (``... - at `$.name```) into a 400 naming the field."""
    text = str(exc)
    message, _, path = text.partition(" - at `")
    # A bad mapping key reads "... - at `key` in `$.path`": name the mapping.
    path = path.rstrip("`").rpartition("` in `")[2] if path else ""
    # A bad mapping value reads "... - at `$.path[...]`": name the mapping too.
    path = path.replace("[...]", "")
    parts = [p for p in path.removeprefix("$").split(".") if p]
    # "Object missing required field `x`" / "... unknown field `x`" are reported at
    # the enclosing object; name the field itself.
    named = _NAMED_FIELD.match(message)
    if named:
        parts.append(named.group(1))
    field = ".".join(parts) or None
    if isinstance(exc, msgspec.ValidationError):
        return InvalidInput(text, field=field)
    return InvalidInput(f"malformed JSON: {message}", field=field, code="malformed_json")

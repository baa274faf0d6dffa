"""Channel logos: ``data:`` URIs in, raw images with an ETag out (docs/api.md)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from aiohttp import web

from catena.errors import InvalidInput

from .client import caching

MAX_BYTES = 1024 * 1024
# Requests that carry a logo may be this large, so that an image of a few MiB is
# refused with a 400 naming ``logo`` rather than a bare 413 for the whole body.
MAX_REQUEST_BYTES = 8 * 1024 * 1024
# Clients keep the image but ask again each time; an unchanged logo costs a 304.
CACHE_CONTROL = "private, no-cache"

_DATA_URI = re.compile(r"^data:(image/[a-zA-Z0-9.+-]+);base64,")
_DECLARED = frozenset(("image/png", "image/jpeg", "image/jpg"))
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))
_FORMAT = "logo must be a data:image/png;base64,... or data:image/jpeg;base64,... URI"


@dataclass(frozen=True, slots=True)
class Logo:
    content_type: str
    data: bytes
    etag: str


def parse(uri: str, field: str = "logo") -> Logo:
    """Decode and check a logo: PNG or JPEG by its magic bytes, at most 1 MiB decoded."""
    match = _DATA_URI.match(uri)
    if match is None:
        raise InvalidInput(_FORMAT, field=field)
    declared = match.group(1).lower()
    if declared not in _DECLARED:
        raise InvalidInput(f"logo must be a PNG or JPEG image, got {declared}", field=field)
    encoded = "".join(uri[match.end() :].split())
    if len(encoded) // 4 * 3 > MAX_BYTES + 2:
        raise _too_large(len(encoded) // 4 * 3, field)
    data = _decode(encoded, field)
    if len(data) > MAX_BYTES:
        raise _too_large(len(data), field)
    return Logo(_sniff(data, field), data, hashlib.sha256(data).hexdigest()[:32])


def _decode(encoded: str, field: str) -> bytes:
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("logo is not valid base64", field=field) from None


def _sniff(data: bytes, field: str) -> str:
    # The image itself decides its type: a declared type that lies is corrected,
    # anything that is neither PNG nor JPEG is refused.
    for magic, content_type in _MAGIC:
        if data.startswith(magic):
            return content_type
    raise InvalidInput("logo data is not a PNG or JPEG image", field=field)


def _too_large(size: int, field: str) -> InvalidInput:
    return InvalidInput(f"logo must be at most 1 MiB decoded, got {size / MAX_BYTES:.1f} MiB", field=field)


def serve(
    request: web.Request, content_type: str, data: bytes, etag: str, cache_control: str = CACHE_CONTROL
) -> web.StreamResponse:
    """The image, or ``304`` when the client's ``If-None-Match`` names this version."""
    if caching.not_modified(request, etag):
        return caching.respond_not_modified(etag, cache_control)
    return caching.prepare(web.Response(body=data, content_type=content_type), etag, cache_control)

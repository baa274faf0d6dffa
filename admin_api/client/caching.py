"""Conditional GET for the client API's documents: ETag, Last-Modified, 304."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime

from aiohttp import ETag, web


def fingerprint(parts: Iterable[object]) -> str:
    """A short digest of everything a document is made from, for its ETag."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(str(part).encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


def not_modified(request: web.Request, etag: str, last_modified: datetime | None = None) -> bool:
    """Whether the client's copy is current (``If-None-Match`` first, then ``If-Modified-Since``)."""
    tags = request.if_none_match
    if tags is not None:
        return any(tag.value in (etag, "*") for tag in tags)
    since = request.if_modified_since
    return since is not None and last_modified is not None and last_modified.replace(microsecond=0) <= since


def prepare(
    response: web.StreamResponse, etag: str, cache_control: str, last_modified: datetime | None = None
) -> web.StreamResponse:
    """Set the validators.  ETags are weak: the body may be gzip- or identity-coded."""
    response.etag = ETag(value=etag, is_weak=True)
    response.headers["Cache-Control"] = cache_control
    response.headers["Vary"] = "Accept-Encoding, Authorization"
    if last_modified is not None:
        response.last_modified = last_modified
    return response


def respond_not_modified(
    etag: str, cache_control: str, last_modified: datetime | None = None
) -> web.StreamResponse:
    return prepare(web.Response(status=304), etag, cache_control, last_modified)

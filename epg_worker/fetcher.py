"""Downloading a guide: streamed to a file, bounded in time, size and redirects.

The body is written to disk as it arrives (never held in memory) and hashed on the
way, so an unchanged file can be recognised even from a server that ignores
``If-None-Match``.  It is stored as sent: gzip is undone later, by magic bytes, when
the file is read (``Content-Encoding`` is not decoded here, so the size limit counts
the bytes that crossed the network).  Every failure is a :class:`FetchFailed` whose
status is ``error`` or ``timeout`` and whose message names the cause.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiohttp
from yarl import URL

from catena import outbound
from catena.settings import EpgSettings

CHUNK = 256 * 1024
USER_AGENT = "Catena-EPG/1.0 (+https://github.com/catena-iptv)"


class FetchFailed(Exception):
    """The download failed; ``status`` is what the fetch record says."""

    def __init__(self, status: Literal["error", "timeout"], message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    connect_timeout: float
    read_timeout: float
    total_timeout: float
    max_bytes: int
    max_redirects: int


@dataclass(frozen=True)
class Validators:
    """What the server said about the last imported file, sent back to it."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass
class Progress:
    """Bytes received so far, and how many the server announced (when it did)."""

    received: int = 0
    total: int | None = None


@dataclass(frozen=True)
class Download:
    unchanged: bool  # the server answered 304 Not Modified; nothing was written
    size: int
    sha256: bytes
    validators: Validators
    url: str  # after redirects


def client_session(settings: EpgSettings) -> aiohttp.ClientSession:
    """The worker's HTTP session: it connects only where ``CATENA_OUTBOUND_ALLOW`` allows
    (``catena.outbound``), redirects included."""
    return outbound.client_session(outbound.policy(settings.outbound_allow))


class Downloader:
    """Downloads guides with one worker's HTTP session and limits."""

    def __init__(self, session: aiohttp.ClientSession, limits: Limits) -> None:
        self.session = session
        self.limits = limits

    async def download(self, url: str, dest: Path, validators: Validators, progress: Progress) -> Download:
        """Fetch ``url`` into ``dest``; raise :class:`FetchFailed` on any failure."""
        check_url(url)
        limits = self.limits
        try:
            async with asyncio.timeout(limits.total_timeout):
                return await self._get(url, dest, validators, progress)
        except aiohttp.ConnectionTimeoutError:
            raise FetchFailed(
                "timeout", f"could not connect to {_host(url)} within {limits.connect_timeout:g} s"
            ) from None
        except aiohttp.SocketTimeoutError:
            raise FetchFailed("timeout", _stalled(progress, limits)) from None
        except TimeoutError:
            raise FetchFailed(
                "timeout",
                f"the download did not finish within {limits.total_timeout:g} s "
                f"({human_size(progress.received)} received)",
            ) from None
        except aiohttp.ClientError as exc:
            raise FetchFailed("error", _client_error(exc, url, limits, progress)) from None

    async def _get(self, url: str, dest: Path, validators: Validators, progress: Progress) -> Download:
        limits = self.limits
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=limits.connect_timeout,
            sock_connect=limits.connect_timeout,
            sock_read=limits.read_timeout,
        )
        async with self.session.get(
            url,
            headers=_request_headers(validators),
            timeout=timeout,
            # aiohttp gives up on the max_redirects-th redirect; we follow that many.
            allow_redirects=limits.max_redirects > 0,
            max_redirects=limits.max_redirects + 1,
            auto_decompress=False,
        ) as response:
            if response.status == 304 and (validators.etag or validators.last_modified):
                return Download(True, 0, b"", validators, str(response.url))
            _check_status(response)
            progress.total = response.content_length
            _check_announced_size(response.content_length, limits)
            digest = await _save(response, dest, limits, progress)
            return Download(False, progress.received, digest, _validators_of(response), str(response.url))


def check_url(url: str) -> None:
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        raise FetchFailed("error", f"the URL {url!r} is not valid") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise FetchFailed("error", f"the URL {url!r} is not an http:// or https:// URL")


def _check_status(response: aiohttp.ClientResponse) -> None:
    final = str(response.url)
    if 300 <= response.status < 400 and response.status != 304:
        raise FetchFailed(
            "error",
            f"HTTP {response.status} redirect from {final} not followed (CATENA_EPG_MAX_REDIRECTS=0)",
        )
    if response.status != 200:
        reason = f" {response.reason}" if response.reason else ""
        raise FetchFailed("error", f"HTTP {response.status}{reason} from {final}")


def _request_headers(validators: Validators) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, identity"}
    if validators.etag:
        headers["If-None-Match"] = validators.etag
    if validators.last_modified:
        headers["If-Modified-Since"] = validators.last_modified
    return headers


def _validators_of(response: aiohttp.ClientResponse) -> Validators:
    return Validators(
        etag=response.headers.get("ETag") or None,
        last_modified=response.headers.get("Last-Modified") or None,
    )


def _check_announced_size(length: int | None, limits: Limits) -> None:
    if length is not None and length > limits.max_bytes:
        raise FetchFailed(
            "error",
            f"the file is {human_size(length)}, more than the limit of {human_size(limits.max_bytes)} "
            "(CATENA_EPG_MAX_BYTES)",
        )


async def _save(response: aiohttp.ClientResponse, dest: Path, limits: Limits, progress: Progress) -> bytes:
    digest = hashlib.sha256()
    with dest.open("wb") as sink:
        async for chunk in response.content.iter_chunked(CHUNK):
            progress.received += len(chunk)
            if progress.received > limits.max_bytes:
                raise FetchFailed(
                    "error",
                    f"the file is larger than the limit of {human_size(limits.max_bytes)} "
                    "(CATENA_EPG_MAX_BYTES); download stopped",
                )
            digest.update(chunk)
            sink.write(chunk)
    if progress.total is not None and progress.received < progress.total:
        raise FetchFailed(
            "error",
            f"the connection closed after {human_size(progress.received)} of {human_size(progress.total)}",
        )
    return digest.digest()


def _stalled(progress: Progress, limits: Limits) -> str:
    wait = f"{limits.read_timeout:g} s"
    if progress.received == 0:
        return f"the server accepted the connection but sent nothing for {wait}"
    return f"the download stalled: nothing received for {wait} after {human_size(progress.received)}"


def _client_error(exc: aiohttp.ClientError, url: str, limits: Limits, progress: Progress) -> str:
    refusal = outbound.refused(exc)
    if refusal is not None:
        # Nothing was sent: the same words for an open and a closed internal port.
        target = exc.host if isinstance(exc, aiohttp.ClientConnectorError) else URL(url).host
        return f"not downloaded from {target}: {refusal}"
    if isinstance(exc, aiohttp.TooManyRedirects):
        hops = " → ".join(str(r.url) for r in exc.history[-3:])
        return f"more than {limits.max_redirects} redirects (a redirect loop?): … {hops}"
    if isinstance(exc, aiohttp.NonHttpUrlRedirectClientError):
        return f"redirected to a URL that is not http or https: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        errno = exc.os_error.errno
        reason = os.strerror(errno) if errno else str(exc.os_error)
        return f"cannot connect to {_host(url)}: {reason}"
    if isinstance(exc, aiohttp.ClientPayloadError):
        if progress.total is not None and progress.received < progress.total:
            received, total = human_size(progress.received), human_size(progress.total)
            return f"the connection closed after {received} of {total}"
        return f"the connection broke after {human_size(progress.received)}: {exc}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return f"the server closed the connection after {human_size(progress.received)}"
    return f"download from {url} failed: {type(exc).__name__}: {exc}"


def _host(url: str) -> str:
    parsed = URL(url)
    return f"{parsed.host}:{parsed.port}"


def human_size(count: int) -> str:
    if count < 10_000:
        return f"{count} bytes"
    if count < 10_000_000:
        return f"{count / 1000:.0f} kB"
    return f"{count / 1_000_000:.1f} MB"

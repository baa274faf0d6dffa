"""Who the client is and which address it used, also behind a trusted reverse proxy.

The client API usually sits behind a proxy (TLS, CDN).  Only when the direct peer
is one of ``CATENA_CLIENT_TRUSTED_PROXIES`` are the ``X-Forwarded-*`` headers
believed; anybody else could write them to dodge the per-IP limits.
"""

from __future__ import annotations

import functools
import ipaddress
import re

from aiohttp import web

from catena.errors import InvalidInput

from .. import keys

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_AUTHORITY = re.compile(r"^([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$")


@functools.cache
def _networks(value: str) -> tuple[Network, ...]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


def _from_trusted_proxy(request: web.Request) -> bool:
    networks = _networks(request.app[keys.SETTINGS].client_trusted_proxies)
    if not networks or not request.remote:
        return False
    try:
        peer = ipaddress.ip_address(request.remote)
    except ValueError:
        return False
    return any(peer in network for network in networks)


def _last_forwarded(request: web.Request, header: str) -> str | None:
    # The proxy appends what it saw last, so the last entry is the one it vouches for.
    values = [v.strip() for v in request.headers.get(header, "").split(",") if v.strip()]
    return values[-1] if values else None


def client_ip(request: web.Request) -> str:
    """The client's address, for throttling."""
    if _from_trusted_proxy(request):
        forwarded = _last_forwarded(request, "X-Forwarded-For")
        if forwarded:
            return forwarded
    return request.remote or "unknown"


def host(request: web.Request) -> str:
    """The host the client asked for (``Host``), lower-case, as sent (port included)."""
    value = request.headers.get("Host", "")
    if _from_trusted_proxy(request):
        value = _last_forwarded(request, "X-Forwarded-Host") or value
    return value.strip().lower()


def strip_port(value: str) -> str:
    if value.startswith("["):
        return value.partition("]")[0] + "]"
    name, sep, port = value.rpartition(":")
    return name if sep and port.isdigit() else value


def origin(request: web.Request) -> str:
    """``scheme://host[:port]`` as the client sees this service, for absolute URLs."""
    scheme, authority = request.scheme, request.headers.get("Host") or request.host
    if _from_trusted_proxy(request):
        scheme = _last_forwarded(request, "X-Forwarded-Proto") or scheme
        authority = _last_forwarded(request, "X-Forwarded-Host") or authority
    # The host goes into playlists and XML attributes: only a plain host[:port] may.
    if scheme not in ("http", "https") or not _AUTHORITY.match(authority):
        raise InvalidInput(f"the Host header is not a host name: {authority!r}", field="Host")
    return f"{scheme}://{authority}"

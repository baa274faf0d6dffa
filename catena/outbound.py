"""Requests our servers make on a tenant's behalf go to public addresses only.

EPG source URLs, webhook URLs and SMS gateway URLs are written by tenants; without
a guard they could aim our servers at loopback, the private network, a cloud's
metadata service or any other address a tenant cannot reach from outside.  Every
outbound HTTP session of the services is made by :func:`client_session`, whose
connector checks each address **at connect time**: the resolver drops addresses
that are not allowed (a name that resolves only to such addresses is refused), and
the socket factory checks the very address each socket connects to, which covers
IP literals, every redirect and DNS answers that change between two lookups.

Refused: loopback, private, shared (CGNAT), link-local, multicast, reserved,
unspecified and documentation addresses, IPv4 and IPv6, also IPv4 addresses
carried inside IPv6 ones (``::ffff:127.0.0.1``, 6to4, Teredo, NAT64's
``64:ff9b::/96``).  ``CATENA_OUTBOUND_ALLOW`` lists networks that are allowed all
the same (``10.0.5.7/32,fd00::/8``); ``none`` (the default) allows public
addresses only.  ``catena up`` allows loopback for its demo unless the variable
is set.

A refusal never opens a connection, so it reads the same whether an internal port
is open or closed, and no answer from such an address can reach a tenant.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from .errors import InvalidInput

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

NONE = "none"
# What a refusal says; also how one is recognised inside aiohttp's wrappers.
REFUSED = "requests to it are not allowed"
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class OutboundRefused(OSError):
    """An address this deployment does not send requests to."""

    def __init__(self, message: str) -> None:
        # EACCES, as a firewall would; strerror is the whole explanation.
        super().__init__(errno.EACCES, message)


def _embedded_ipv4(address: Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo, NAT64)."""
    if isinstance(address, ipaddress.IPv4Address):
        return []
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _kind(address: Address) -> str | None:
    """Why ``address`` is not a public one, or ``None`` when it is."""
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    )
    for name, applies in checks:
        if applies:
            return name
    return None if address.is_global else "non-public"


class Policy:
    """Which addresses outbound requests may go to: public ones, and ``allowed`` networks."""

    def __init__(self, allowed: tuple[Network, ...] = ()) -> None:
        self.allowed = allowed

    @classmethod
    def parse(cls, value: str) -> Policy:
        """``none`` (or empty) or ``cidr[,cidr…]``; raises ``ValueError`` naming a bad entry."""
        items = [item.strip() for item in value.split(",") if item.strip()]
        if items == [NONE] or not items:
            return cls()
        networks = []
        for item in items:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(
                    f"expected 'none' or networks like 10.0.0.0/8,fd00::/8, got {item!r}"
                ) from None
        return cls(tuple(networks))

    def refusal(self, host: str) -> str | None:
        """Why requests to the IP address ``host`` are refused, or ``None`` when they are not."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return f"{host!r} is not an IP address; {REFUSED}"
        carried = _embedded_ipv4(address)
        if any(a in net for net in self.allowed for a in (address, *carried) if a.version == net.version):
            return None
        for candidate in (*carried, address):
            kind = _kind(candidate)
            if kind is not None:
                article = "an" if kind[0] in "aeiou" else "a"
                shown = f"{address} ({candidate})" if candidate != address else str(address)
                return f"{shown} is {article} {kind} address; {REFUSED}"
        return None

    def check(self, host: str) -> None:
        reason = self.refusal(host)
        if reason is not None:
            raise OutboundRefused(reason)

    def url_refusal(self, url: str) -> str | None:
        """Why a URL is refused before any lookup: its host is an address (or ``localhost``)
        that is not allowed.  Names are checked when a request connects."""
        try:
            host = URL(url).raw_host
        except (ValueError, TypeError):
            return None  # not a URL at all: the field's own validation says so
        for address in _literal_addresses(host or ""):
            reason = self.refusal(address)
            if reason is not None:
                return reason
        return None

    def socket(self, addr_info: Any) -> socket.socket:
        """aiohttp's ``socket_factory``: the last check, on the address about to be connected."""
        family, kind, proto, _, sockaddr = addr_info
        self.check(sockaddr[0])
        return socket.socket(family=family, type=kind, proto=proto)


def _literal_addresses(host: str) -> list[str]:
    """The addresses a URL's host names without DNS: an IP in any notation, or localhost."""
    host = host.strip("[]").rstrip(".").lower()
    if not host:
        return []
    if host == "localhost" or host.endswith(".localhost"):
        return ["127.0.0.1", "::1"]
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        # 127.1, 2130706433, 0x7f.0.0.1: forms the resolver would turn into an address.
        return [socket.inet_ntoa(socket.inet_aton(host))]
    except OSError:
        return []


def check_url(policy: Policy, url: str, field: str) -> None:
    """400 naming ``field`` when ``url`` points at an address requests may not go to.

    Only what is plain from the URL (an IP address in any notation, ``localhost``) is
    refused here, so a tenant learns early; names are checked at connect time.
    """
    reason = policy.url_refusal(url)
    if reason is not None:
        raise InvalidInput(
            f"{field} must point at a public address: {reason}", field=field, code="address_not_allowed"
        )


@functools.cache
def policy(value: str) -> Policy:
    """The policy of a ``CATENA_OUTBOUND_ALLOW`` value (parsed once)."""
    return Policy.parse(value)


class GuardedResolver(AbstractResolver):
    """Resolves with aiohttp's resolver and keeps only the addresses the policy allows."""

    def __init__(self, policy: Policy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        allowed = [r for r in results if self.policy.refusal(r["host"]) is None]
        if results and not allowed:
            reason = self.policy.refusal(results[0]["host"])
            raise OutboundRefused(f"{host} resolves to {reason}")
        return allowed

    async def close(self) -> None:
        await self.inner.close()


def connector(
    policy: Policy, resolver: AbstractResolver | None = None, **kwargs: Any
) -> aiohttp.TCPConnector:
    """A connector that connects only where ``policy`` allows."""
    guarded = GuardedResolver(policy, resolver)
    return aiohttp.TCPConnector(resolver=guarded, socket_factory=policy.socket, **kwargs)


def client_session(policy: Policy, **kwargs: Any) -> aiohttp.ClientSession:
    """An HTTP session for requests made on a tenant's behalf (must be made inside a loop)."""
    return aiohttp.ClientSession(connector=connector(policy), **kwargs)


def refused(exc: BaseException) -> str | None:
    """The refusal behind an aiohttp error, if the guard caused it."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OutboundRefused):
            return str(seen.strerror)
        inner = getattr(seen, "os_error", None)
        if isinstance(inner, OutboundRefused):
            return str(inner.strerror)
        seen = seen.__cause__ or seen.__context__
    return None

"""Who may call ``/auth`` and ``/events``: allowed networks, or the deployment's secret.

A request is trusted when its connection's peer address is in
``CATENA_AUTH_ALLOWED_NETS`` (default: loopback only) or it carries
``CATENA_AUTH_SECRET`` — in the ``X-Catena-Secret`` header, or in the
``catena_secret`` query parameter that Flussonic's ``auth_backend`` and
``event_sink`` URLs can carry.  The address is the TCP peer's, never an
``X-Forwarded-For`` header: anybody can write one.

The networks are parsed once, and each connection is judged once when it opens,
so a trusted connection costs a request one attribute read; the secret is
compared (in constant time) only on connections from elsewhere.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence

from catena.settings import Network, parse_networks

SECRET_HEADER = b"x-catena-secret"
SECRET_PARAMETER = b"catena_secret"


class Trust:
    """The deployment's allowed networks and secret."""

    __slots__ = ("nets", "secret")

    def __init__(self, nets: Sequence[Network], secret: str) -> None:
        self.nets = tuple(nets)
        self.secret = secret.encode()

    @classmethod
    def from_settings(cls, allowed_nets: str, secret: str) -> Trust:
        return cls(parse_networks(allowed_nets), secret)

    def allows_peer(self, peer: object) -> bool:
        """Whether a connection's ``peername`` (``(host, port, …)``; a Unix socket's path) is allowed."""
        if not isinstance(peer, tuple) or not peer:
            # A Unix socket: only processes of this machine can connect to it.
            return isinstance(peer, str | bytes)
        try:
            address = ipaddress.ip_address(str(peer[0]).partition("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket's IPv4 client
        return any(address in net for net in self.nets)

    def carries_secret(self, offered: bytes | None) -> bool:
        """Whether ``offered`` is the deployment's secret (never, when it has none)."""
        if not self.secret or not offered:
            return False
        return hmac.compare_digest(offered, self.secret)

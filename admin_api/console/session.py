"""The console's sign-in state: manager sessions in one cookie, and CSRF tokens.

``POST /login`` (the Management API's own code) opens one manager session per
portal where the email and password match.  The console keeps those sessions'
secrets, with each portal's id and name, in one cookie (``HttpOnly``,
``SameSite=Strict``, ``Secure`` over HTTPS), together with which portal is
current.  Each request authenticates the current portal's session exactly as an
``X-Auth-Token`` is authenticated, so idle expiry, password changes and deleted
managers end a console session the way they end an API session.  Nothing in the
cookie is trusted beyond the secrets: the portal a page acts on is the one the
database says the session belongs to.

A CSRF token is an HMAC of the current session's secret under a key derived from
``CATENA_TOKEN_SECRETS``: it changes with the session and the portal, so a form
rendered for one portal cannot be replayed against another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import msgspec

from catena.settings import parse_token_secrets

COOKIE = "catena_session"
# A browser keeps about 4 KiB per cookie; each portal takes about 80 bytes.
MAX_PORTALS = 40
_CSRF_LABEL = b"catena console csrf v1"


class PortalSession(msgspec.Struct, array_like=True, frozen=True):
    portal_id: str
    name: str
    token: str


class SignedIn(msgspec.Struct, frozen=True):
    """What the cookie holds: every portal session of one sign-in and the current one."""

    portals: list[PortalSession]
    current: int = 0

    @property
    def active(self) -> PortalSession:
        return self.portals[self.current]

    def switched(self, portal_id: str) -> SignedIn | None:
        """This sign-in with ``portal_id`` current; ``None`` when it has no session there."""
        for index, entry in enumerate(self.portals):
            if entry.portal_id == portal_id:
                return SignedIn(self.portals, index)
        return None


_decoder = msgspec.json.Decoder(SignedIn)


def encode(state: SignedIn) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(state)).decode("ascii").rstrip("=")


def decode(value: str | None) -> SignedIn | None:
    """The cookie's state; ``None`` for a missing or malformed cookie (signed out)."""
    if not value:
        return None
    try:
        state = _decoder.decode(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        return None
    if not state.portals or not 0 <= state.current < len(state.portals):
        return None
    return state


class Csrf:
    """Makes and checks CSRF tokens; every configured secret verifies, the first signs."""

    def __init__(self, secrets: str) -> None:
        self._keys = [
            hmac.new(s, _CSRF_LABEL, hashlib.sha256).digest() for _, s in parse_token_secrets(secrets)
        ]

    def token(self, session_secret: str) -> str:
        return self._make(self._keys[0], session_secret)

    def valid(self, session_secret: str, sent: str | None) -> bool:
        if not sent:
            return False
        return any(hmac.compare_digest(sent, self._make(key, session_secret)) for key in self._keys)

    @staticmethod
    def _make(key: bytes, session_secret: str) -> str:
        digest = hmac.new(key, session_secret.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")

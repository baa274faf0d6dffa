"""Subscriber authentication: the playback token as ``Authorization: Bearer`` or ``?token=``.

The token is the one the Management API shows on the subscriber and the player
passes to the streaming server; the client API accepts it while the gateway
would: signed by us, for an existing subscriber of that portal who is not
disabled, with the subscriber's current token version (a reset revokes it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from catena.errors import Unauthorized
from catena.portals import PortalSettings, load_settings
from catena.tokens import TokenError

from .. import keys
from ..routing import Call

_SUBSCRIBER = """
SELECT s.token_version, s.disabled, p.settings
FROM subscribers s JOIN portals p ON p.id = s.portal_id
WHERE s.id = $1 AND s.portal_id = $2
"""


@dataclass(frozen=True, slots=True)
class Subscriber:
    """The signed-in subscriber, as ``call.subject`` of client API endpoints."""

    id: int
    portal_id: int
    token: str
    settings: PortalSettings


def presented_token(call: Call[Any, Any]) -> str:
    header = call.request.headers.get("Authorization", "")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return call.request.query.get("token", "").strip()


async def authenticate_subscriber(call: Call[Any, Any]) -> None:
    """Set ``call.subject`` to the :class:`Subscriber`; 401 for any token the gateway would refuse."""
    token = presented_token(call)
    if not token:
        raise Unauthorized(
            "a playback token is needed: Authorization: Bearer <token> or ?token=", code="missing_token"
        )
    try:
        claims = call.request.app[keys.TOKENS].verify(token)
    except TokenError:
        raise Unauthorized("the playback token is not valid", code="invalid_token") from None
    async with call.db.acquire() as conn:
        row = await conn.fetchrow(_SUBSCRIBER, claims.subscriber_id, claims.portal_id)
    if row is None:
        raise Unauthorized("the playback token names no subscriber", code="unknown_subscriber")
    if row["token_version"] != claims.version:
        raise Unauthorized("the playback token was reset; sign in again", code="token_revoked")
    if row["disabled"]:
        raise Unauthorized("this subscriber is disabled", code="subscriber_disabled")
    call.subject = Subscriber(claims.subscriber_id, claims.portal_id, token, load_settings(row["settings"]))


# admin_api.openapi marks endpoints using this authenticator with bearer security.
authenticate_subscriber.openapi_scheme = "playbackToken"  # type: ignore[attr-defined]

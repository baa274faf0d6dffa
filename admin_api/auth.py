"""``X-Auth-Token`` authentication: the portal API key or a manager session.

:func:`principal_for` is the same lookup without aiohttp, for the console, which
keeps a manager's session secret in a cookie instead of a header.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import asyncpg

from catena.errors import Forbidden, Unauthorized

from .principal import Principal
from .routing import Call
from .services import Services

HEADER = "X-Auth-Token"

_BY_API_KEY = "SELECT id FROM portals WHERE api_key = $1"
_BY_SESSION = """
SELECT s.portal_id, s.last_seen_at < now() - interval '60 seconds' AS stale,
       m.id AS manager_id, m.email, m.is_admin, m.is_content_admin, m.is_subscriber_admin,
       p.owner_id = m.id AS is_owner
FROM manager_sessions s
JOIN managers m ON m.id = s.manager_id
JOIN portals p ON p.id = s.portal_id
WHERE s.token_hash = $1 AND s.last_seen_at > now() - make_interval(secs => $2)
"""
_TOUCH = "UPDATE manager_sessions SET last_seen_at = now() WHERE token_hash = $1"
_END_SESSION = "DELETE FROM manager_sessions WHERE token_hash = $1 AND manager_id = $2 RETURNING 1"
_INSERT_SESSION = """
INSERT INTO manager_sessions (token_hash, manager_id, portal_id) VALUES ($1, $2, $3)
"""


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def authenticate_manager(call: Call[Any, Any]) -> None:
    """Set ``call.principal`` from ``X-Auth-Token``; 401 when missing, unknown or expired."""
    token = call.request.headers.get(HEADER, "").strip()
    if not token:
        raise Unauthorized(f"the {HEADER} header is missing", code="missing_token")
    principal = await principal_for(call.services, token)
    if principal is None:
        raise Unauthorized(f"the {HEADER} is unknown, revoked or expired", code="invalid_token")
    call.principal = principal


async def authenticate_session(call: Call[Any, Any]) -> None:
    """Like :func:`authenticate_manager`, for what only a manager session can do
    (sign out): the API key is a 403."""
    await authenticate_manager(call)
    refuse_api_key(call.caller)


authenticate_session.openapi_scheme = "managerSession"  # type: ignore[attr-defined]


def refuse_api_key(actor: Principal) -> None:
    if actor.is_api_key:
        raise Forbidden(
            "the API key is not a session and cannot sign out; "
            "POST /portal/reset_api_key replaces it (the old key stops working at once)",
            code="not_a_session",
        )


async def principal_for(services: Services, token: str) -> Principal | None:
    """Who ``token`` names, as ``X-Auth-Token`` would; ``None`` when unknown or expired.

    The console authenticates the session in its cookie with this.
    """
    async with services.db.acquire() as conn:
        return await _lookup(conn, token, services.settings.manager_session_idle)


async def _lookup(conn: asyncpg.Connection, token: str, idle: float) -> Principal | None:
    portal_id = await conn.fetchval(_BY_API_KEY, token)
    if portal_id is not None:
        return Principal(portal_id, None, None, True, True, True, True)
    token_hash = hash_token(token)
    row = await conn.fetchrow(_BY_SESSION, token_hash, idle)
    if row is None:
        return None
    if row["stale"]:
        # Idle expiry needs last_seen_at; writing it at most once a minute keeps
        # reads from turning into writes.
        await conn.execute(_TOUCH, token_hash)
    return Principal(
        row["portal_id"],
        row["manager_id"],
        row["email"],
        row["is_owner"],
        row["is_admin"],
        row["is_content_admin"],
        row["is_subscriber_admin"],
    )


async def open_session(conn: asyncpg.Connection, manager_id: int, portal_id: int) -> str:
    """Start a manager session and return its secret (only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    await conn.execute(_INSERT_SESSION, hash_token(token), manager_id, portal_id)
    return token


async def end_session(conn: asyncpg.Connection, token: str, manager_id: int) -> bool:
    """End one session of ``manager_id`` (sign-out); ``False`` when it had already ended."""
    deleted = await conn.fetchval(_END_SESSION, hash_token(token), manager_id)
    return deleted is not None


async def end_sessions(conn: asyncpg.Connection, manager_id: int) -> None:
    """End every session of a manager (password changed, manager deleted)."""
    await conn.execute("DELETE FROM manager_sessions WHERE manager_id = $1", manager_id)

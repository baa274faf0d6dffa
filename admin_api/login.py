"""``POST /login``: a manager's email and password → one session per portal (docs/api.md)."""

from __future__ import annotations

import logging
from typing import Annotated

import asyncpg
from msgspec import Meta

from catena.errors import Unauthorized

from .auth import open_session
from .client.forwarded import client_ip
from .limiter import LIMITER, PASSWORDS
from .routing import Api, Call
from .schema import Request, Response, TextId, text_id

api = Api("Managers")
log = logging.getLogger("admin_api.login")


class LoginRequest(Request):
    email: Annotated[str, Meta(min_length=1, max_length=254)]
    password: Annotated[str, Meta(min_length=1, max_length=200)]


class PortalSession(Response):
    portalId: TextId
    portalName: str
    sessionId: str


class LoginResponse(Response):
    portals: list[PortalSession]


_CANDIDATES = """
SELECT m.id, m.portal_id, m.password_hash, p.name AS portal_name
FROM managers m JOIN portals p ON p.id = m.portal_id
WHERE m.email = $1 ORDER BY p.name
"""


@api.post("/login", body=LoginRequest, response=LoginResponse)
async def login(call: Call) -> LoginResponse:
    """Sign in: one session per portal where this email has a manager with this password."""
    body: LoginRequest = call.body
    email = body.email.strip().lower()
    limits = LoginLimits(call, email)
    # Counted before it is checked: a burst of guesses cannot outrun the limit.
    await limits.take()
    matches = await _matching_managers(call, email, body.password)
    if not matches:
        raise Unauthorized("wrong email or password", code="invalid_credentials")
    sessions = await _open_sessions(call, matches)
    await limits.succeeded()
    return LoginResponse(portals=sessions)


async def _matching_managers(call: Call, email: str, password: str) -> list[asyncpg.Record]:
    async with call.db.acquire() as conn:
        candidates = await conn.fetch(_CANDIDATES, email)
    # bcrypt with no database connection held, a few at a time (admin_api.limiter).
    hashes = [row["password_hash"] for row in candidates]
    checked = await call.request.app[PASSWORDS].matches(password, hashes)
    return [row for row, ok in zip(candidates, checked, strict=True) if ok]


async def _open_sessions(call: Call, matches: list[asyncpg.Record]) -> list[PortalSession]:
    sessions = []
    async with call.db.acquire() as conn, conn.transaction():
        for row in matches:
            token = await open_session(conn, row["id"], row["portal_id"])
            sessions.append(
                PortalSession(
                    portalId=text_id(row["portal_id"]), portalName=row["portal_name"], sessionId=token
                )
            )
    return sessions


class LoginLimits:
    """Failed logins per email and per client address (``CATENA_LOGIN_FAIL_*``); too many → 429.

    Each login takes a slot in both counters before its password is checked; a
    success gives the address's slot back and clears the email's failures.
    """

    def __init__(self, call: Call, email: str) -> None:
        settings = call.settings
        self.limiter = call.request.app[LIMITER]
        limit, window = settings.login_fail_limit, settings.login_fail_window
        message = "too many failed logins; try again later"
        self.email = self.limiter.slot(limit, window, message, "login-fail", "email", email)
        self.ip = self.limiter.slot(limit, window, message, "login-fail", "ip", client_ip(call.request))

    async def take(self) -> None:
        self.taken = await self.limiter.take(self.email, self.ip)

    async def succeeded(self) -> None:
        await self.limiter.clear(self.email)
        await self.limiter.give_back(self.taken, self.ip)

"""``POST /login`` and ``POST /logout``: manager sessions (docs/api.md).

Email and password give one session per portal where that email has a manager
with that password; the console signs in through the same :func:`login` and keeps
the session secret in a cookie.  Every attempt is counted before it is checked
(:mod:`admin_api.limiter`), and bcrypt runs with no database connection held.
"""

from __future__ import annotations

import logging
from typing import Annotated

import asyncpg
from msgspec import Meta

from catena.errors import InvalidInput, Unauthorized

from .auth import HEADER, authenticate_session, end_session, open_session, refuse_api_key
from .client.forwarded import client_ip
from .limiter import Taken
from .principal import Principal
from .routing import Api, Call
from .schema import NO_NUL, NO_NUL_TEXT, Request, Response, TextId, text_id
from .services import Services

api = Api("Managers")
log = logging.getLogger("admin_api.login")

MAX_EMAIL = 254
MAX_PASSWORD = 200


class LoginRequest(Request):
    # NUL is refused here, naming the field: PostgreSQL cannot compare text holding it.
    email: Annotated[str, Meta(min_length=1, max_length=MAX_EMAIL, pattern=NO_NUL, description=NO_NUL_TEXT)]
    password: Annotated[
        str, Meta(min_length=1, max_length=MAX_PASSWORD, pattern=NO_NUL, description=NO_NUL_TEXT)
    ]


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
_SIGNED_IN = "UPDATE managers SET last_login_at = now() WHERE id = ANY($1::bigint[])"


# Actions: what the JSON handlers below and the console call.


async def login(services: Services, email: str, password: str, client_address: str) -> list[PortalSession]:
    """Sign in: one session per portal where this email has a manager with this password.

    Attempts are limited per email and per ``client_address`` (429 beyond the
    limit); a success sets the managers' ``lastLoginAt``.
    """
    _check_lengths(email, password)
    email = email.strip().lower()
    limits = LoginLimits(services, email, client_address)
    # Counted before it is checked: a burst of guesses cannot outrun the limit.
    await limits.take()
    matches = await _matching_managers(services, email, password)
    if not matches:
        raise Unauthorized("wrong email or password", code="invalid_credentials")
    sessions = await _open_sessions(services, matches)
    await limits.succeeded()
    return sessions


async def logout(services: Services, actor: Principal, session: str) -> None:
    """End ``actor``'s manager session ``session``; the API key is a 403 (it is not a session)."""
    refuse_api_key(actor)
    assert actor.manager_id is not None
    async with services.db.acquire() as conn:
        await end_session(conn, session, actor.manager_id)


# The JSON API: decode, call the action, encode.


@api.post("/login", response=LoginResponse)
async def handle_login(call: Call[LoginRequest, None]) -> LoginResponse:
    """Sign in: one session per portal where this email has a manager with this password."""
    body = call.body
    sessions = await login(call.services, body.email, body.password, client_ip(call.request))
    return LoginResponse(portals=sessions)


@api.post("/logout", auth=authenticate_session)
async def handle_logout(call: Call[None, None]) -> None:
    """Sign out: the X-Auth-Token session ends (401 from then on); the API key gets a 403."""
    await logout(call.services, call.caller, call.request.headers[HEADER].strip())


def _check_lengths(email: str, password: str) -> None:
    # The JSON body is checked on decoding; the console passes form fields as they came.
    if not 1 <= len(email) <= MAX_EMAIL:
        raise InvalidInput(f"email must be 1 to {MAX_EMAIL} characters", field="email")
    if not 1 <= len(password) <= MAX_PASSWORD:
        raise InvalidInput(f"password must be 1 to {MAX_PASSWORD} characters", field="password")


async def _matching_managers(services: Services, email: str, password: str) -> list[asyncpg.Record]:
    async with services.db.acquire() as conn:
        candidates = await conn.fetch(_CANDIDATES, email)
    # bcrypt with no database connection held, a few at a time (admin_api.limiter).
    hashes = [row["password_hash"] for row in candidates]
    checked = await services.passwords.matches(password, hashes)
    return [row for row, ok in zip(candidates, checked, strict=True) if ok]


async def _open_sessions(services: Services, matches: list[asyncpg.Record]) -> list[PortalSession]:
    sessions = []
    async with services.db.acquire() as conn, conn.transaction():
        for row in matches:
            token = await open_session(conn, row["id"], row["portal_id"])
            sessions.append(
                PortalSession(
                    portalId=text_id(row["portal_id"]), portalName=row["portal_name"], sessionId=token
                )
            )
        await conn.execute(_SIGNED_IN, [row["id"] for row in matches])
    return sessions


class LoginLimits:
    """Failed logins per email and per client address (``CATENA_LOGIN_FAIL_*``); too many → 429.

    Each login takes a slot in both counters before its password is checked; a
    success gives the address's slot back and clears the email's failures.
    """

    def __init__(self, services: Services, email: str, client_address: str) -> None:
        settings = services.settings
        self.limiter = services.limiter
        limit, window = settings.login_fail_limit, settings.login_fail_window
        message = "too many failed logins; try again later"
        self.email = self.limiter.slot(limit, window, message, "login-fail", "email", email)
        self.ip = self.limiter.slot(limit, window, message, "login-fail", "ip", client_address)
        self.taken: Taken | None = None

    async def take(self) -> None:
        self.taken = await self.limiter.take(self.email, self.ip)

    async def succeeded(self) -> None:
        await self.limiter.clear(self.email)
        if self.taken is not None:
            await self.limiter.give_back(self.taken, self.ip)

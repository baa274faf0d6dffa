"""``POST /login`` and ``POST /logout``: manager sessions (docs/api.md).

Email and password give one session per portal where that email has a manager
with that password; the console signs in through the same :func:`login` and keeps
the session secret in a cookie.
"""

from __future__ import annotations

import functools
import logging
from typing import Annotated

import asyncpg
from msgspec import Meta
from redis.exceptions import RedisError

from catena import passwords
from catena.errors import InvalidInput, TooManyRequests, Unauthorized
from catena.redis import KeySpace, count_in_window, get_many

from .auth import HEADER, authenticate_session, end_session, open_session, refuse_api_key
from .principal import Principal
from .routing import Api, Call
from .schema import Request, Response, TextId, text_id
from .services import Services

api = Api("Managers")
log = logging.getLogger("admin_api.login")

MAX_EMAIL = 254
MAX_PASSWORD = 200


class LoginRequest(Request):
    email: Annotated[str, Meta(min_length=1, max_length=MAX_EMAIL)]
    password: Annotated[str, Meta(min_length=1, max_length=MAX_PASSWORD)]


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


@functools.cache
def _dummy_hash() -> str:
    return passwords.hash_sync("not a real password", 12)


# Actions: what the JSON handlers below and the console call.


async def login(services: Services, email: str, password: str, client_ip: str) -> list[PortalSession]:
    """Sign in: one session per portal where this email has a manager with this password.

    Failed attempts are counted per email and per ``client_ip`` (429 beyond the limit);
    a success sets the managers' ``lastLoginAt``.
    """
    _check_lengths(email, password)
    email = email.strip().lower()
    limiter = LoginLimiter(services, client_ip)
    await limiter.check(email)
    async with services.db.acquire() as conn:
        matches = await _matching_managers(conn, email, password)
        if not matches:
            await limiter.failed(email)
            raise Unauthorized("wrong email or password", code="invalid_credentials")
        sessions = []
        async with conn.transaction():
            for row in matches:
                token = await open_session(conn, row["id"], row["portal_id"])
                sessions.append(
                    PortalSession(
                        portalId=text_id(row["portal_id"]), portalName=row["portal_name"], sessionId=token
                    )
                )
            await conn.execute(_SIGNED_IN, [row["id"] for row in matches])
    await limiter.succeeded(email)
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
    ip = call.request.remote or "unknown"
    return LoginResponse(portals=await login(call.services, body.email, body.password, ip))


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


async def _matching_managers(conn: asyncpg.Connection, email: str, password: str) -> list[asyncpg.Record]:
    candidates = await conn.fetch(_CANDIDATES, email)
    if not candidates:
        # Spend the same time as a wrong password so timing does not reveal emails.
        await passwords.verify_password(password, _dummy_hash())
        return []
    return [row for row in candidates if await passwords.verify_password(password, row["password_hash"])]


class LoginLimiter:
    """Counts failed logins per email and per client IP in Redis; too many → 429.

    When Redis is unreachable logins go on unthrottled (bcrypt still makes each
    guess slow) rather than locking every manager out.
    """

    def __init__(self, services: Services, ip: str) -> None:
        settings = services.settings
        self.redis = services.redis
        self.keys = KeySpace(settings.redis_prefix)
        self.limit = settings.login_fail_limit
        self.window = int(settings.login_fail_window)
        self.ip = ip

    def _names(self, email: str) -> tuple[str, str]:
        return self.keys.login_failures("email", email), self.keys.login_failures("ip", self.ip)

    async def check(self, email: str) -> None:
        try:
            counts = await get_many(self.redis, self._names(email))
        except (RedisError, OSError) as exc:
            log.warning("login throttling unavailable", extra={"error": str(exc)})
            return
        if any(int(c or 0) >= self.limit for c in counts):
            raise TooManyRequests("too many failed logins; try again later", retry_after=self.window)

    async def failed(self, email: str) -> None:
        try:
            for name in self._names(email):
                await count_in_window(self.redis, name, self.window)
        except (RedisError, OSError) as exc:
            log.warning("login throttling unavailable", extra={"error": str(exc)})

    async def succeeded(self, email: str) -> None:
        try:
            await self.redis.delete(self._names(email)[0])
        except (RedisError, OSError):
            pass

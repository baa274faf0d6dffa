"""``POST /login``: a manager's email and password → one session per portal (docs/api.md)."""

from __future__ import annotations

import functools
import logging
from typing import Annotated

import asyncpg
from msgspec import Meta
from redis.exceptions import RedisError

from catena import passwords
from catena.errors import TooManyRequests, Unauthorized
from catena.redis import KeySpace, count_in_window, get_many

from . import keys
from .auth import open_session
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


@functools.cache
def _dummy_hash() -> str:
    return passwords.hash_sync("not a real password", 12)


@api.post("/login", body=LoginRequest, response=LoginResponse)
async def login(call: Call) -> LoginResponse:
    """Sign in: one session per portal where this email has a manager with this password."""
    body: LoginRequest = call.body
    email = body.email.strip().lower()
    limiter = LoginLimiter(call)
    await limiter.check(email)
    async with call.db.acquire() as conn:
        matches = await _matching_managers(conn, email, body.password)
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
    await limiter.succeeded(email)
    return LoginResponse(portals=sessions)


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

    def __init__(self, call: Call) -> None:
        settings = call.settings
        self.redis = call.request.app[keys.REDIS]
        self.keys = KeySpace(settings.redis_prefix)
        self.limit = settings.login_fail_limit
        self.window = int(settings.login_fail_window)
        self.ip = call.request.remote or "unknown"

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

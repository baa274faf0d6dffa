"""Sign-in codes in PostgreSQL: issue with a cooldown, check with an attempt limit.

Only ``HMAC-SHA256(key, salt ‖ portal ‖ phone ‖ code)`` is stored, with a random
salt per code.  The key is derived from the playback-token signing secret, so a
copy of the database alone does not let anyone test the 10,000 possible codes.
The limits that stop guessing (attempts per code, expiry, cooldown between codes)
live here, in the database, and so hold even while Redis is down.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import asyncpg

from catena.settings import parse_token_secrets

CODE_DIGITS = 4

_ISSUE = """
INSERT INTO client_sms_codes AS c
    (portal_id, phone_country_code, phone, salt, code_hash, attempts, created_at, expires_at)
VALUES ($1, $2, $3, $4, $5, 0, now(), now() + make_interval(secs => $6))
ON CONFLICT (portal_id, phone_country_code, phone) DO UPDATE
SET salt = EXCLUDED.salt, code_hash = EXCLUDED.code_hash, attempts = 0,
    created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
WHERE c.created_at <= now() - make_interval(secs => $7)
RETURNING true
"""
_COOLDOWN_LEFT = """
SELECT ceil(extract(epoch FROM created_at + make_interval(secs => $4) - now()))::int
FROM client_sms_codes WHERE portal_id = $1 AND phone_country_code = $2 AND phone = $3
"""
_WITHDRAW = """
DELETE FROM client_sms_codes
WHERE portal_id = $1 AND phone_country_code = $2 AND phone = $3 AND code_hash = $4
"""
_ATTEMPT = """
UPDATE client_sms_codes SET attempts = attempts + 1
WHERE portal_id = $1 AND phone_country_code = $2 AND phone = $3
RETURNING salt, code_hash, attempts, expires_at <= now() AS expired
"""
_CONSUME = """
DELETE FROM client_sms_codes
WHERE portal_id = $1 AND phone_country_code = $2 AND phone = $3 AND code_hash = $4
RETURNING true
"""
_PURGE = """
DELETE FROM client_sms_codes WHERE ctid IN (
    SELECT ctid FROM client_sms_codes WHERE expires_at < now() - interval '1 day' LIMIT 100
)
"""


@dataclass(frozen=True, slots=True)
class Phone:
    """A phone number within a portal, the key of a pending code."""

    portal_id: int
    country_code: str
    number: str

    @property
    def digits(self) -> str:
        """The full number as SMS providers take it: country code and number."""
        return self.country_code + self.number

    def key(self) -> tuple[int, str, str]:
        return self.portal_id, self.country_code, self.number


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of a code: ``number`` counts this one; ``code_hash`` names the row."""

    matches: bool
    expired: bool
    number: int
    code_hash: bytes


class CodeHasher:
    def __init__(self, token_secrets: str) -> None:
        signing_key = parse_token_secrets(token_secrets)[0][1]
        self._key = hmac.new(signing_key, b"catena sms sign-in code", hashlib.sha256).digest()

    def digest(self, salt: bytes, phone: Phone, code: str) -> bytes:
        message = b"|".join((salt, str(phone.portal_id).encode(), phone.digits.encode(), code.encode()))
        return hmac.new(self._key, message, hashlib.sha256).digest()


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


async def issue(
    conn: asyncpg.Connection, hasher: CodeHasher, phone: Phone, code: str, ttl: float, cooldown: float
) -> bytes | None:
    """Store ``code`` as the phone's pending code; ``None`` while the cooldown lasts."""
    salt = secrets.token_bytes(16)
    code_hash = hasher.digest(salt, phone, code)
    await conn.execute(_PURGE)
    stored = await conn.fetchval(_ISSUE, *phone.key(), salt, code_hash, ttl, cooldown)
    return code_hash if stored else None


async def cooldown_left(conn: asyncpg.Connection, phone: Phone, cooldown: float) -> int:
    """Whole seconds until a new code may be sent (at least 1)."""
    left = await conn.fetchval(_COOLDOWN_LEFT, *phone.key(), cooldown)
    return max(1, int(left or 1))


async def withdraw(conn: asyncpg.Connection, phone: Phone, code_hash: bytes) -> None:
    """Forget a code that could not be sent, so that the cooldown does not apply."""
    await conn.execute(_WITHDRAW, *phone.key(), code_hash)


async def attempt(conn: asyncpg.Connection, hasher: CodeHasher, phone: Phone, code: str) -> Attempt | None:
    """Count one try of ``code`` (committed at once) and say how it went; ``None``: no code."""
    row = await conn.fetchrow(_ATTEMPT, *phone.key())
    if row is None:
        return None
    matches = hmac.compare_digest(hasher.digest(row["salt"], phone, code), row["code_hash"])
    return Attempt(matches, row["expired"], row["attempts"], row["code_hash"])


async def consume(conn: asyncpg.Connection, phone: Phone, code_hash: bytes) -> bool:
    """Delete the code just matched; ``False`` when a concurrent sign-in took it first."""
    return bool(await conn.fetchval(_CONSUME, *phone.key(), code_hash))

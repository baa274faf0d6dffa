"""Manager passwords: bcrypt hashes and the password policy (docs/api.md)."""

from __future__ import annotations

import asyncio
import re

import bcrypt

from .errors import InvalidInput

MIN_LENGTH = 8
MAX_LENGTH = 72  # bcrypt ignores what lies beyond 72 bytes

# The most common passwords that would otherwise pass the character rules.
_COMMON = frozenset(
    p.lower()
    for p in (
        "Password1!",
        "Password123!",
        "P@ssw0rd",
        "P@ssw0rd1",
        "P@ssword1",
        "Passw0rd!",
        "Qwerty123!",
        "Qwerty1!",
        "Welcome1!",
        "Welcome123!",
        "Admin123!",
        "Admin@123",
        "Letmein1!",
        "Changeme1!",
        "Abc12345!",
        "Aa123456!",
        "Iloveyou1!",
        "Summer2024!",
        "Winter2024!",
        "Spring2024!",
        "Autumn2024!",
        "Monkey123!",
        "Dragon123!",
        "Football1!",
        "Baseball1!",
        "Master123!",
        "Sunshine1!",
        "Princess1!",
        "Trustno1!",
        "Zaq12wsx!",
        "1qaz@WSX",
        "1qaz!QAZ",
        "Qwerty@123",
        "Pa$$w0rd",
        "Pa$$word1",
        "Test1234!",
        "Test@123",
        "Catena123!",
        "Iptv1234!",
        "Password@1",
        "Password#1",
    )
)


def check_policy(password: str, field: str = "password") -> None:
    """Raise a 400 naming ``field`` unless the password meets the policy."""
    problems = []
    if len(password) < MIN_LENGTH:
        problems.append(f"at least {MIN_LENGTH} characters")
    if len(password.encode()) > MAX_LENGTH:
        problems.append(f"at most {MAX_LENGTH} bytes")
    if not re.search(r"[a-z]", password):
        problems.append("a lower-case letter")
    if not re.search(r"[A-Z]", password):
        problems.append("an upper-case letter")
    if not re.search(r"[0-9]", password):
        problems.append("a digit")
    if not re.search(r"[^A-Za-z0-9]", password):
        problems.append("a special character")
    if problems:
        raise InvalidInput("password needs " + ", ".join(problems), field=field, code="weak_password")
    if password.lower() in _COMMON:
        raise InvalidInput("password is too common", field=field, code="weak_password")


def hash_sync(password: str, rounds: int) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds)).decode()


def verify_sync(password: str, hashed: str) -> bool:
    try:
        return bcrypt.checkpw(password.encode(), hashed.encode())
    except ValueError:
        return False


async def hash_password(password: str, rounds: int) -> str:
    """bcrypt-hash ``password`` off the event loop (cost 12 takes a quarter second)."""
    return await asyncio.to_thread(hash_sync, password, rounds)


async def verify_password(password: str, hashed: str) -> bool:
    return await asyncio.to_thread(verify_sync, password, hashed)


# A hash to check against when no account matches, so a wrong email costs as much
# time as a wrong password and timing does not reveal which emails exist.
DUMMY_HASH = "$2b$12$C6UzMDM.H6dfI/f/IKxGhuQ1F0M.Y7yq9zG0dEoRXHyv4g6dYFNfO"

"""Portals: their settings schema and their creation by the system operator.

Portals and owners are made outside the Management API (docs/api.md): by
``catena portal create`` and by ``catena up`` for the demo portal.
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from msgspec import Meta

from . import entitlements, ids, passwords
from .errors import Conflict, InvalidInput

NAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{1,62}$"
_LABEL = r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
DOMAIN_PATTERN = rf"^$|^{_LABEL}(\.{_LABEL})*(:[0-9]{{1,5}})?$"
EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$"


class PortalSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Operator settings of a portal (docs/api.md); read by every service."""

    autoCreateSubscribers: bool = False
    # Concurrent sessions per subscriber unless the subscriber overrides it.
    maxSessions: Annotated[int, Meta(ge=1, le=1000)] = 2
    sessionLimitPolicy: Literal["deny_new", "evict_oldest"] = "deny_new"
    # Seconds Flussonic may cache an answer (X-AuthDuration).
    authDuration: Annotated[int, Meta(ge=10, le=86400)] = 180
    # Archive (DVR) depth in days.
    archiveDays: Annotated[int, Meta(ge=0, le=3650)] = 7
    # Base URL of the streaming servers; playback URLs are {base}/{name}/index.m3u8.
    playbackUrlTemplate: Annotated[str, Meta(max_length=500)] = "http://127.0.0.1:8090"
    # SMS gateway for subscriber sign-in (docs/api.md); None = the logging gateway.
    smsGateway: dict[str, Any] | None = None


class Branding(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    logo: Annotated[str, Meta(max_length=1_500_000)] | None = None
    title: Annotated[str, Meta(max_length=200)] = ""
    description: Annotated[str, Meta(max_length=2000)] = ""


def load_settings(raw: dict[str, Any] | None) -> PortalSettings:
    """The stored settings JSON as a Struct, defaults filled in."""
    return msgspec.convert(raw or {}, PortalSettings)


def load_branding(raw: dict[str, Any] | None) -> Branding:
    return msgspec.convert(raw or {}, Branding)


def new_api_key() -> str:
    """A new portal API key: 32 random bytes, URL-safe."""
    return secrets.token_urlsafe(32)


def new_password() -> str:
    """A random password that meets the policy."""
    return secrets.token_urlsafe(12) + "-Aa1"


class CreatedPortal(msgspec.Struct, kw_only=True):
    portalId: str
    name: str
    domain: str
    apiKey: str
    ownerId: str
    ownerEmail: str
    ownerPassword: str


_INSERT_PORTAL = """
INSERT INTO portals (id, name, domain, owner_id, api_key, branding, settings)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""
_INSERT_OWNER = """
INSERT INTO managers (id, portal_id, email, name, password_hash, is_admin, is_content_admin,
                      is_subscriber_admin)
VALUES ($1, $2, $3, $4, $5, true, true, true)
"""


def validate_new_portal(name: str, domain: str, owner_email: str, owner_password: str) -> None:
    if not re.match(NAME_PATTERN, name):
        raise InvalidInput(f"name must match {NAME_PATTERN}, got {name!r}", field="name")
    if not re.match(DOMAIN_PATTERN, domain):
        raise InvalidInput(f"domain is not a host name: {domain!r}", field="domain")
    if not re.match(EMAIL_PATTERN, owner_email):
        raise InvalidInput(f"not an email address: {owner_email!r}", field="ownerEmail")
    passwords.check_policy(owner_password, field="ownerPassword")


async def create(
    conn: asyncpg.Connection,
    *,
    name: str,
    domain: str,
    owner_email: str,
    owner_password: str | None = None,
    owner_name: str = "Owner",
    title: str = "",
    bcrypt_rounds: int = 12,
) -> CreatedPortal:
    """Create a portal and its owner in one transaction; a taken name is a Conflict."""
    password = owner_password or new_password()
    email = owner_email.strip().lower()
    validate_new_portal(name, domain, email, password)
    password_hash = await passwords.hash_password(password, bcrypt_rounds)
    portal_id, owner_id, api_key = ids.new_id(), ids.new_id(), new_api_key()
    branding = msgspec.to_builtins(Branding(title=title or name))
    try:
        async with conn.transaction():
            await conn.execute(_INSERT_PORTAL, portal_id, name, domain, owner_id, api_key, branding, {})
            await conn.execute(_INSERT_OWNER, owner_id, portal_id, email, owner_name, password_hash)
            await entitlements.changed(conn, portal_id, "portal")
    except asyncpg.UniqueViolationError as exc:
        field = "domain" if exc.constraint_name == "portals_domain" else "name"
        raise Conflict(f"a portal with this {field} already exists", field=field) from None
    return CreatedPortal(
        portalId=ids.encode(portal_id),
        name=name,
        domain=domain,
        apiKey=api_key,
        ownerId=ids.encode(owner_id),
        ownerEmail=email,
        ownerPassword=password,
    )

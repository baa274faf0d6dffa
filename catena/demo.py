"""The demo portal ``catena up`` makes on first start, and how to get into it again.

It holds an owner, a free package ``basic`` with one channel ``demo1``, and a
subscriber (+7 900 000-00-01) so that every API can be tried at once.  The owner's
password is generated once and kept in ``var/demo.json``; when that file is lost
(or the database was made elsewhere) the owner gets a new password.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import msgspec

from . import entitlements, ids, operations, passwords, portals
from .settings import AdminSettings
from .tokens import TokenCodec

PORTAL_NAME = "demo"
DOMAIN = "demo.localhost"
OWNER_EMAIL = "owner@demo.localhost"
SUBSCRIBER_COUNTRY_CODE = "7"
SUBSCRIBER_PHONE = "9000000001"
ACTOR = "system"


class Access(msgspec.Struct, kw_only=True):
    portalId: str
    apiKey: str
    ownerEmail: str
    ownerPassword: str
    demoSubscriberId: str
    demoSubscriberPhone: str
    demoPlaybackToken: str


class _Saved(msgspec.Struct):
    portalId: str
    ownerEmail: str
    ownerPassword: str


async def ensure(conn: asyncpg.Connection, saved_path: Path, settings: AdminSettings) -> Access:
    """Make the demo portal if it does not exist; return how to get into it."""
    await ids.claim_node(conn)
    row = await conn.fetchrow("SELECT id, owner_id FROM portals WHERE name = $1", PORTAL_NAME)
    if row is None:
        saved = await _create(conn, settings)
    else:
        saved = await _recover(conn, saved_path, row["id"], row["owner_id"], settings)
    saved_path.write_bytes(msgspec.json.encode(saved))
    saved_path.chmod(0o600)
    portal_id = ids.decode(saved.portalId)
    assert portal_id is not None
    api_key = await conn.fetchval("SELECT api_key FROM portals WHERE id = $1", portal_id)
    subscriber_id, version = await _subscriber(conn, portal_id)
    token = TokenCodec(settings.token_secrets).sign(subscriber_id, portal_id, version)
    return Access(
        portalId=saved.portalId,
        apiKey=api_key,
        ownerEmail=saved.ownerEmail,
        ownerPassword=saved.ownerPassword,
        demoSubscriberId=ids.encode(subscriber_id),
        demoSubscriberPhone=SUBSCRIBER_COUNTRY_CODE + SUBSCRIBER_PHONE,
        demoPlaybackToken=token,
    )


async def _create(conn: asyncpg.Connection, settings: AdminSettings) -> _Saved:
    created = await portals.create(
        conn,
        name=PORTAL_NAME,
        domain=DOMAIN,
        owner_email=OWNER_EMAIL,
        title="Catena Demo",
        bcrypt_rounds=settings.bcrypt_rounds,
    )
    portal_id = ids.decode(created.portalId)
    assert portal_id is not None
    async with conn.transaction():
        await _content(conn, portal_id)
    return _Saved(created.portalId, created.ownerEmail, created.ownerPassword)


async def _recover(
    conn: asyncpg.Connection, path: Path, portal_id: int, owner_id: int, settings: AdminSettings
) -> _Saved:
    try:
        saved = msgspec.json.decode(path.read_bytes(), type=_Saved)
        if saved.portalId == ids.encode(portal_id):
            return saved
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        pass
    password = portals.new_password()
    password_hash = await passwords.hash_password(password, settings.bcrypt_rounds)
    email = await conn.fetchval(
        "UPDATE managers SET password_hash = $2, updated_at = now() WHERE id = $1 RETURNING email",
        owner_id,
        password_hash,
    )
    return _Saved(ids.encode(portal_id), email, password)


async def _content(conn: asyncpg.Connection, portal_id: int) -> None:
    channel_id, package_id = ids.new_id(), ids.new_id()
    await conn.execute(
        "INSERT INTO channels (id, portal_id, name, title) VALUES ($1, $2, 'demo1', 'Demo Channel')",
        channel_id,
        portal_id,
    )
    await conn.execute(
        "INSERT INTO packages (id, portal_id, name, description) "
        "VALUES ($1, $2, 'basic', 'Free channels for everyone')",
        package_id,
        portal_id,
    )
    await conn.execute(
        "INSERT INTO channel_packages (package_id, channel_id, portal_id) VALUES ($1, $2, $3)",
        package_id,
        channel_id,
        portal_id,
    )
    await conn.execute(
        "INSERT INTO portal_free_packages (portal_id, package_id) VALUES ($1, $2)",
        portal_id,
        package_id,
    )
    await operations.record(
        conn,
        portal_id,
        "createChannel",
        ACTOR,
        payload={"channelId": ids.encode(channel_id), "name": "demo1"},
    )
    await operations.record(
        conn, portal_id, "createPackage", ACTOR, package_id=package_id, payload={"packageName": "basic"}
    )
    await operations.record(
        conn,
        portal_id,
        "addChannelToPackage",
        ACTOR,
        package_id=package_id,
        payload={"channelId": ids.encode(channel_id), "packageName": "basic"},
    )
    await operations.record(
        conn, portal_id, "addFreePackage", ACTOR, package_id=package_id, payload={"packageName": "basic"}
    )
    await entitlements.changed(conn, portal_id, "portal")


async def _subscriber(conn: asyncpg.Connection, portal_id: int) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT id, token_version FROM subscribers "
        "WHERE portal_id = $1 AND phone_country_code = $2 AND phone = $3",
        portal_id,
        SUBSCRIBER_COUNTRY_CODE,
        SUBSCRIBER_PHONE,
    )
    if row is not None:
        return row["id"], row["token_version"]
    subscriber_id = ids.new_id()
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO subscribers (id, portal_id, name, phone_country_code, phone) "
            "VALUES ($1, $2, 'Demo Subscriber', $3, $4)",
            subscriber_id,
            portal_id,
            SUBSCRIBER_COUNTRY_CODE,
            SUBSCRIBER_PHONE,
        )
        await operations.record(
            conn,
            portal_id,
            "createSubscriber",
            ACTOR,
            subscriber_id=subscriber_id,
            payload={
                "name": "Demo Subscriber",
                "phone": SUBSCRIBER_PHONE,
                "phoneCountryCode": SUBSCRIBER_COUNTRY_CODE,
            },
        )
        await entitlements.changed(conn, portal_id, "subscriber", [subscriber_id])
    return subscriber_id, 1

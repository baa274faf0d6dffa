"""``/managers``: the portal's staff accounts and their permission flags (docs/api.md)."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from msgspec import UNSET, Meta, UnsetType

from catena import ids, operations, passwords
from catena.errors import Conflict, Forbidden, NotFound

from .auth import authenticate_manager, end_sessions
from .routing import Api, Call
from .schema import Email, PageQuery, Request, Response, Text200, TextId, Timestamp, iso, text_id

api = Api("Managers", auth=authenticate_manager)

Password = Annotated[str, Meta(min_length=1, max_length=200)]


class ManagerOut(Response):
    managerId: TextId
    portalId: TextId
    email: str
    name: str
    isAdmin: bool
    isContentAdmin: bool
    isSubscriberAdmin: bool
    createdAt: Timestamp
    updatedAt: Timestamp


class ManagerList(Response):
    managers: list[ManagerOut]
    next: str | None = None


class ManagerCreate(Request):
    email: Email
    name: Text200
    password: Password
    isAdmin: bool = False
    isContentAdmin: bool = False
    isSubscriberAdmin: bool = False


class ManagerUpdate(Request):
    """Fields absent from the body keep their value; ``password`` is changed only when sent."""

    email: Email | UnsetType = UNSET
    name: Text200 | UnsetType = UNSET
    password: Password | UnsetType = UNSET
    isAdmin: bool | UnsetType = UNSET
    isContentAdmin: bool | UnsetType = UNSET
    isSubscriberAdmin: bool | UnsetType = UNSET


_COLUMNS = (
    "id, portal_id, email, name, is_admin, is_content_admin, is_subscriber_admin, created_at, updated_at"
)
_LIST = f"""
SELECT {_COLUMNS} FROM managers
WHERE portal_id = $1 AND ($2::bigint IS NULL OR id > $2)
ORDER BY id LIMIT $3
"""
_GET = f"SELECT {_COLUMNS}, password_hash FROM managers WHERE portal_id = $1 AND id = $2"
_INSERT = f"""
INSERT INTO managers (id, portal_id, email, name, password_hash, is_admin, is_content_admin,
                      is_subscriber_admin)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING {_COLUMNS}
"""
_UPDATE = f"""
UPDATE managers SET email = $3, name = $4, password_hash = $5, is_admin = $6,
       is_content_admin = $7, is_subscriber_admin = $8, updated_at = now()
WHERE portal_id = $1 AND id = $2
RETURNING {_COLUMNS}
"""
_DELETE = "DELETE FROM managers WHERE portal_id = $1 AND id = $2"
_LOCK_PORTAL = "SELECT owner_id FROM portals WHERE id = $1 FOR UPDATE"
_OTHER_ADMINS = """
SELECT count(*) FROM managers m JOIN portals p ON p.id = m.portal_id
WHERE m.portal_id = $1 AND m.is_admin AND m.id <> $2 AND m.id IS DISTINCT FROM p.owner_id
"""


def manager_out(row: asyncpg.Record) -> ManagerOut:
    return ManagerOut(
        managerId=text_id(row["id"]),
        portalId=text_id(row["portal_id"]),
        email=row["email"],
        name=row["name"],
        isAdmin=row["is_admin"],
        isContentAdmin=row["is_content_admin"],
        isSubscriberAdmin=row["is_subscriber_admin"],
        createdAt=iso(row["created_at"]),
        updatedAt=iso(row["updated_at"]),
    )


@api.get("/managers", query=PageQuery, response=ManagerList)
async def list_managers(call: Call) -> ManagerList:
    """The portal's managers, the owner included, oldest first."""
    query: PageQuery = call.query
    after = call.cursors.decode("managers", query.cursor, (int,))
    async with call.db.acquire() as conn:
        rows = await conn.fetch(_LIST, call.portal_id, after[0] if after else None, query.limit + 1)
    rows, cursor = call.cursors.page(rows, query.limit, "managers", lambda r: (r["id"],))
    return ManagerList(managers=[manager_out(r) for r in rows], next=cursor)


@api.get("/managers/{id}", response=ManagerOut)
async def get_manager(call: Call) -> ManagerOut:
    """One manager."""
    async with call.db.acquire() as conn:
        return manager_out(await _fetch(conn, call.portal_id, call.path_id()))


@api.post("/managers", body=ManagerCreate, response=ManagerOut, permission="admin")
async def create_manager(call: Call) -> ManagerOut:
    """Create a manager; the email must be new to this portal."""
    body: ManagerCreate = call.body
    passwords.check_policy(body.password)
    password_hash = await passwords.hash_password(body.password, call.settings.bcrypt_rounds)
    email = body.email.lower()
    async with call.db.acquire() as conn, conn.transaction():
        try:
            row = await conn.fetchrow(
                _INSERT,
                ids.new_id(),
                call.portal_id,
                email,
                body.name,
                password_hash,
                body.isAdmin,
                body.isContentAdmin,
                body.isSubscriberAdmin,
            )
        except asyncpg.UniqueViolationError:
            raise _email_taken() from None
        await _record(conn, call, "createManager", row)
    return manager_out(row)


@api.put("/managers/{id}", body=ManagerUpdate, response=ManagerOut, permission="admin")
async def update_manager(call: Call) -> ManagerOut:
    """Update a manager; a new password ends that manager's sessions."""
    body: ManagerUpdate = call.body
    target = call.path_id()
    if isinstance(body.password, str):
        passwords.check_policy(body.password)
        new_hash = await passwords.hash_password(body.password, call.settings.bcrypt_rounds)
    async with call.db.acquire() as conn, conn.transaction():
        owner_id = await conn.fetchval(_LOCK_PORTAL, call.portal_id)
        current = await _fetch(conn, call.portal_id, target)
        _refuse_owner(target, owner_id)
        flags = _new_flags(body, current)
        if target == call.caller.manager_id and flags != _flags(current):
            raise Forbidden("a manager cannot change their own permissions", code="own_flags")
        if current["is_admin"] and not flags[0]:
            await _keep_an_admin(conn, call.portal_id, target)
        password_hash = new_hash if isinstance(body.password, str) else current["password_hash"]
        email = body.email.lower() if isinstance(body.email, str) else current["email"]
        name = body.name if isinstance(body.name, str) else current["name"]
        try:
            row = await conn.fetchrow(_UPDATE, call.portal_id, target, email, name, password_hash, *flags)
        except asyncpg.UniqueViolationError:
            raise _email_taken() from None
        if isinstance(body.password, str):
            await end_sessions(conn, target)
        await _record(conn, call, "updateManager", row)
    return manager_out(row)


@api.delete("/managers/{id}", permission="admin")
async def delete_manager(call: Call) -> None:
    """Delete a manager; their sessions stop working at once."""
    target = call.path_id()
    async with call.db.acquire() as conn, conn.transaction():
        owner_id = await conn.fetchval(_LOCK_PORTAL, call.portal_id)
        current = await _fetch(conn, call.portal_id, target)
        _refuse_owner(target, owner_id)
        if current["is_admin"]:
            await _keep_an_admin(conn, call.portal_id, target)
        await conn.execute(_DELETE, call.portal_id, target)
        await _record(conn, call, "deleteManager", current)


async def _fetch(conn: asyncpg.Connection, portal_id: int, manager_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(_GET, portal_id, manager_id)
    if row is None:
        raise NotFound("no such manager", field="id")
    return row


def _refuse_owner(target: int, owner_id: int | None) -> None:
    if target == owner_id:
        raise Forbidden(
            "the portal owner is managed by the system operator, not through this API",
            code="owner_immutable",
        )


async def _keep_an_admin(conn: asyncpg.Connection, portal_id: int, leaving: int) -> None:
    # The owner does not count: a portal that has isAdmin managers keeps at least one.
    if await conn.fetchval(_OTHER_ADMINS, portal_id, leaving) == 0:
        raise Conflict("the portal's last isAdmin manager cannot be removed", code="last_admin")


def _flags(row: asyncpg.Record) -> tuple[bool, bool, bool]:
    return (row["is_admin"], row["is_content_admin"], row["is_subscriber_admin"])


def _new_flags(body: ManagerUpdate, row: asyncpg.Record) -> tuple[bool, bool, bool]:
    current = _flags(row)
    sent = (body.isAdmin, body.isContentAdmin, body.isSubscriberAdmin)
    return tuple(old if new is UNSET else new for new, old in zip(sent, current, strict=True))  # type: ignore[return-value]


def _email_taken() -> Conflict:
    return Conflict("a manager with this email already exists in this portal", field="email")


async def _record(conn: asyncpg.Connection, call: Call, kind: str, row: asyncpg.Record) -> None:
    payload = {"managerId": text_id(row["id"]), "email": row["email"], "name": row["name"]}
    await operations.record(conn, call.portal_id, kind, call.caller.actor, payload=payload)

"""``/managers``: the portal's staff accounts and their permission flags (docs/api.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import asyncpg
from msgspec import UNSET, Meta, UnsetType

from catena import ids, operations, passwords
from catena.errors import Conflict, Forbidden, NotFound

from .auth import authenticate_manager, end_sessions
from .principal import Principal
from .routing import Api, Call
from .schema import Email, PageQuery, Request, Response, Text200, TextId, Timestamp, iso, opt_iso, text_id
from .services import Services

api = Api("Managers", auth=authenticate_manager)

Password = Annotated[str, Meta(min_length=1, max_length=200)]

_OWNER_IMMUTABLE = "the portal owner is managed by the system operator, not through this API"
_OWN_FLAGS = "a manager cannot change their own permissions"
_LAST_ADMIN = "the portal's last isAdmin manager cannot be removed"


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
    lastLoginAt: Timestamp | None


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
    "id, portal_id, email, name, is_admin, is_content_admin, is_subscriber_admin, created_at, updated_at,"
    " last_login_at"
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
_ADMINS = """
SELECT p.owner_id, count(m.id) FILTER (WHERE m.is_admin AND m.id IS DISTINCT FROM p.owner_id) AS admins
FROM portals p LEFT JOIN managers m ON m.portal_id = p.id
WHERE p.id = $1 GROUP BY p.owner_id
"""
# The owner does not count: a portal that has isAdmin managers keeps at least one.
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
        lastLoginAt=opt_iso(row["last_login_at"]),
    )


# What a caller may do to one manager (manual §2.2): the actions enforce these
# rules, and the console asks them before it shows a control.


@dataclass(frozen=True, slots=True)
class ManagerRules:
    """What the caller may change about one manager; ``reason`` says why not, when not."""

    edit: bool  # email, name, password
    change_flags: bool  # isAdmin, isContentAdmin, isSubscriberAdmin
    drop_admin: bool  # clear isAdmin
    delete: bool
    reason: str | None = None


def manager_rules(
    actor: Principal, manager_id: int, is_admin: bool, owner_id: int | None, other_admins: int
) -> ManagerRules:
    """The rules for ``actor`` and one manager; ``other_admins`` counts the isAdmin
    managers besides this one and the owner."""
    if not actor.can("admin"):
        return ManagerRules(False, False, False, False, "this change needs the isAdmin permission")
    if manager_id == owner_id:
        return ManagerRules(False, False, False, False, _OWNER_IMMUTABLE)
    last_admin = is_admin and other_admins == 0
    if manager_id == actor.manager_id:
        reason = f"{_OWN_FLAGS}; {_LAST_ADMIN}" if last_admin else _OWN_FLAGS
        return ManagerRules(True, False, False, not last_admin, reason)
    return ManagerRules(True, True, not last_admin, not last_admin, _LAST_ADMIN if last_admin else None)


async def rules_for(
    services: Services, actor: Principal, managers: Sequence[ManagerOut]
) -> dict[str, ManagerRules]:
    """:func:`manager_rules` for each of ``managers`` (e.g. a page of the list), by managerId."""
    async with services.db.acquire() as conn:
        row = await conn.fetchrow(_ADMINS, actor.portal_id)
    owner_id, admins = row["owner_id"], row["admins"]
    rules = {}
    for manager in managers:
        target = ids.decode(manager.managerId)
        assert target is not None
        others = admins - 1 if manager.isAdmin and target != owner_id else admins
        rules[manager.managerId] = manager_rules(actor, target, manager.isAdmin, owner_id, others)
    return rules


# Actions: what the JSON handlers below and the console call.


async def list_managers(services: Services, actor: Principal, query: PageQuery) -> ManagerList:
    """The portal's managers, the owner included, oldest first."""
    after = services.cursors.decode("managers", query.cursor, (int,))
    async with services.db.acquire() as conn:
        rows = await conn.fetch(_LIST, actor.portal_id, after[0] if after else None, query.limit + 1)
    rows, cursor = services.cursors.page(rows, query.limit, "managers", lambda r: (r["id"],))
    return ManagerList(managers=[manager_out(r) for r in rows], next=cursor)


async def get_manager(services: Services, actor: Principal, manager_id: int) -> ManagerOut:
    """One manager."""
    async with services.db.acquire() as conn:
        return manager_out(await _fetch(conn, actor.portal_id, manager_id))


async def create_manager(services: Services, actor: Principal, body: ManagerCreate) -> ManagerOut:
    """Create a manager; the email must be new to this portal."""
    actor.require("admin")
    passwords.check_policy(body.password)
    password_hash = await passwords.hash_password(body.password, services.settings.bcrypt_rounds)
    email = body.email.lower()
    async with services.db.acquire() as conn, conn.transaction():
        try:
            row = await conn.fetchrow(
                _INSERT,
                ids.new_id(),
                actor.portal_id,
                email,
                body.name,
                password_hash,
                body.isAdmin,
                body.isContentAdmin,
                body.isSubscriberAdmin,
            )
        except asyncpg.UniqueViolationError:
            raise _email_taken() from None
        await _record(conn, actor, "createManager", row)
    return manager_out(row)


async def update_manager(
    services: Services, actor: Principal, manager_id: int, body: ManagerUpdate
) -> ManagerOut:
    """Update a manager; a new password ends that manager's sessions."""
    actor.require("admin")
    if isinstance(body.password, str):
        passwords.check_policy(body.password)
        new_hash = await passwords.hash_password(body.password, services.settings.bcrypt_rounds)
    async with services.db.acquire() as conn, conn.transaction():
        current, rules = await _locked(conn, actor, manager_id)
        flags = _new_flags(body, current)
        _check_update(rules, _flags(current), flags)
        password_hash = new_hash if isinstance(body.password, str) else current["password_hash"]
        email = body.email.lower() if isinstance(body.email, str) else current["email"]
        name = body.name if isinstance(body.name, str) else current["name"]
        try:
            row = await conn.fetchrow(
                _UPDATE, actor.portal_id, manager_id, email, name, password_hash, *flags
            )
        except asyncpg.UniqueViolationError:
            raise _email_taken() from None
        if isinstance(body.password, str):
            await end_sessions(conn, manager_id)
        await _record(conn, actor, "updateManager", row)
    return manager_out(row)


async def delete_manager(services: Services, actor: Principal, manager_id: int) -> None:
    """Delete a manager; their sessions stop working at once."""
    actor.require("admin")
    async with services.db.acquire() as conn, conn.transaction():
        current, rules = await _locked(conn, actor, manager_id)
        if not rules.edit:
            raise _refusal(rules)
        if not rules.delete:
            raise Conflict(_LAST_ADMIN, code="last_admin")
        await conn.execute(_DELETE, actor.portal_id, manager_id)
        await _record(conn, actor, "deleteManager", current)


# The JSON API: decode, call the action, encode.


@api.get("/managers", response=ManagerList)
async def handle_list_managers(call: Call[None, PageQuery]) -> ManagerList:
    """The portal's managers, the owner included, oldest first."""
    return await list_managers(call.services, call.caller, call.query)


@api.get("/managers/{id}", response=ManagerOut)
async def handle_get_manager(call: Call[None, None]) -> ManagerOut:
    """One manager."""
    return await get_manager(call.services, call.caller, call.path_id())


@api.post("/managers", response=ManagerOut, permission="admin")
async def handle_create_manager(call: Call[ManagerCreate, None]) -> ManagerOut:
    """Create a manager; the email must be new to this portal."""
    return await create_manager(call.services, call.caller, call.body)


@api.put("/managers/{id}", response=ManagerOut, permission="admin")
async def handle_update_manager(call: Call[ManagerUpdate, None]) -> ManagerOut:
    """Update a manager; a new password ends that manager's sessions."""
    return await update_manager(call.services, call.caller, call.path_id(), call.body)


@api.delete("/managers/{id}", permission="admin")
async def handle_delete_manager(call: Call[None, None]) -> None:
    """Delete a manager; their sessions stop working at once."""
    await delete_manager(call.services, call.caller, call.path_id())


async def _locked(
    conn: asyncpg.Connection, actor: Principal, manager_id: int
) -> tuple[asyncpg.Record, ManagerRules]:
    """The manager and the rules for changing it, with the portal locked against
    concurrent manager changes (two admins demoting each other at once)."""
    owner_id = await conn.fetchval(_LOCK_PORTAL, actor.portal_id)
    current = await _fetch(conn, actor.portal_id, manager_id)
    others = await conn.fetchval(_OTHER_ADMINS, actor.portal_id, manager_id)
    return current, manager_rules(actor, manager_id, current["is_admin"], owner_id, others)


def _check_update(rules: ManagerRules, old: tuple[bool, bool, bool], new: tuple[bool, bool, bool]) -> None:
    if not rules.edit:
        raise _refusal(rules)
    if new != old and not rules.change_flags:
        raise Forbidden(_OWN_FLAGS, code="own_flags")
    if old[0] and not new[0] and not rules.drop_admin:
        raise Conflict(_LAST_ADMIN, code="last_admin")


def _refusal(rules: ManagerRules) -> Forbidden:
    if rules.reason == _OWNER_IMMUTABLE:
        return Forbidden(_OWNER_IMMUTABLE, code="owner_immutable")
    return Forbidden(rules.reason or "not permitted", code="permission_denied")


async def _fetch(conn: asyncpg.Connection, portal_id: int, manager_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(_GET, portal_id, manager_id)
    if row is None:
        raise NotFound("no such manager", field="id")
    return row


def _flags(row: asyncpg.Record) -> tuple[bool, bool, bool]:
    return (row["is_admin"], row["is_content_admin"], row["is_subscriber_admin"])


def _new_flags(body: ManagerUpdate, row: asyncpg.Record) -> tuple[bool, bool, bool]:
    current = _flags(row)
    sent = (body.isAdmin, body.isContentAdmin, body.isSubscriberAdmin)
    return tuple(old if new is UNSET else new for new, old in zip(sent, current, strict=True))  # type: ignore[return-value]


def _email_taken() -> Conflict:
    return Conflict("a manager with this email already exists in this portal", field="email")


async def _record(conn: asyncpg.Connection, actor: Principal, kind: str, row: asyncpg.Record) -> None:
    payload = {"managerId": text_id(row["id"]), "email": row["email"], "name": row["name"]}
    await operations.record(conn, actor.portal_id, kind, actor.actor, payload=payload)

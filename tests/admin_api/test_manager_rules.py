"""The manual's manager rules as a page asks them (managers.rules_for) and as the API enforces them."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from admin_api import keys, managers
from admin_api.auth import principal_for
from admin_api.principal import Principal
from admin_api.schema import PageQuery
from catena import ids
from tests.admin_api._subscribers_support import GOOD_PASSWORD, manager_session
from tests.conftest import Api


async def make(api: Api, email: str, **flags: bool) -> dict[str, Any]:
    status, body = await api.post(
        "/managers", {"email": email, "name": email, "password": GOOD_PASSWORD, **flags}
    )
    assert status == 200, body
    return dict(body)


async def rules(api: Api, actor: Principal) -> dict[str, managers.ManagerRules]:
    services = api.client.app[keys.SERVICES]
    page = await managers.list_managers(services, actor, PageQuery())
    return await managers.rules_for(services, actor, page.managers)


async def as_principal(api: Api, session: Api) -> Principal:
    assert session.token is not None
    found = await principal_for(api.client.app[keys.SERVICES], session.token)
    assert found is not None
    return found


async def test_rules_as_a_page_sees_them(api: Api, portal: Any) -> None:
    admin = await make(api, "admin@x.co", isAdmin=True)
    content = await make(api, "content@x.co", isContentAdmin=True)
    me = await as_principal(api, await manager_session(api, "me@x.co", isAdmin=True))
    mine = await rules(api, me)
    owner = mine[portal.ownerId]
    assert (owner.edit, owner.change_flags, owner.drop_admin, owner.delete) == (False, False, False, False)
    assert owner.reason and "owner" in owner.reason
    own = mine[ids.encode(me.manager_id)]  # type: ignore[arg-type]
    assert (own.edit, own.change_flags, own.drop_admin, own.delete) == (True, False, False, True)
    assert own.reason == "a manager cannot change their own permissions"
    for other in (admin, content):
        rule = mine[other["managerId"]]
        assert (rule.edit, rule.change_flags, rule.drop_admin, rule.delete) == (True, True, True, True)
    # A manager without isAdmin may change nobody.
    reader = await as_principal(api, await manager_session(api, "reader@x.co"))
    assert not any(r.edit or r.change_flags or r.delete for r in (await rules(api, reader)).values())


async def test_the_last_admin_stays(api: Api, portal: Any, pool: asyncpg.Pool) -> None:
    admin = await make(api, "admin@x.co", isAdmin=True)
    key = await as_principal(api, api)
    last = (await rules(api, key))[admin["managerId"]]
    assert (last.edit, last.change_flags, last.drop_admin, last.delete) == (True, True, False, False)
    assert last.reason == "the portal's last isAdmin manager cannot be removed"
    path = f"/managers/{admin['managerId']}"
    status, body = await api.put(path, {"isAdmin": False})
    assert (status, body["error"]) == (409, "last_admin")
    status, body = await api.delete(path)
    assert (status, body["error"]) == (409, "last_admin")
    # Other changes to the last admin are allowed, as the rules say (edit, change_flags).
    status, body = await api.put(path, {"name": "Renamed", "isContentAdmin": True})
    assert status == 200 and body["isAdmin"] and body["isContentAdmin"]
    second = await make(api, "second@x.co", isAdmin=True)
    now = await rules(api, key)
    assert now[admin["managerId"]].drop_admin and now[second["managerId"]].delete
    assert (await api.put(path, {"isAdmin": False}))[0] == 200
    assert not (await rules(api, key))[second["managerId"]].drop_admin
    assert await pool.fetchval("SELECT count(*) FROM managers WHERE is_admin") == 2  # owner and second


@pytest.mark.parametrize("target", ["owner", "self", "peer"])
async def test_the_api_refuses_what_the_rules_refuse(
    api: Api, portal: Any, pool: asyncpg.Pool, target: str
) -> None:
    await make(api, "peer@x.co", isAdmin=True)
    session = await manager_session(api, "me@x.co", isAdmin=True)
    me = await as_principal(api, session)
    peer_id = await pool.fetchval("SELECT id FROM managers WHERE email = 'peer@x.co'")
    assert me.manager_id is not None
    target_id = {
        "owner": portal.ownerId,
        "self": ids.encode(me.manager_id),
        "peer": ids.encode(peer_id),
    }[target]
    rule = (await rules(api, me))[target_id]
    before = await pool.fetch("SELECT * FROM managers ORDER BY id")
    attempts = [
        ("edit", "PUT", {"name": "New name"}),
        ("change_flags", "PUT", {"isSubscriberAdmin": True}),
        ("drop_admin", "PUT", {"isAdmin": False}),
    ]
    for name, method, body in attempts:
        status, answer = await session.call(method, f"/managers/{target_id}", body)
        allowed = getattr(rule, name)
        assert (status == 200) is allowed, (target, name, status, answer)
        if not allowed:
            assert status in (403, 409) and answer["message"], answer
    if not any(getattr(rule, name) for name, _, _ in attempts):
        assert await pool.fetch("SELECT * FROM managers ORDER BY id") == before


async def test_two_admins_demoting_each_other_at_once_leave_one(
    api: Api, portal: Any, pool: asyncpg.Pool, database_url: str
) -> None:
    """Both demotions are authenticated and wait on the portal lock; the second to get it
    finds it would leave no admin."""
    sessions = [await manager_session(api, f"admin{n}@x.co", isAdmin=True) for n in range(2)]
    made = {r["email"]: ids.encode(r["id"]) for r in await pool.fetch("SELECT id, email FROM managers")}
    targets = [made["admin1@x.co"], made["admin0@x.co"]]
    blocker = await asyncpg.connect(database_url)
    try:
        async with blocker.transaction():
            await blocker.execute(
                "SELECT 1 FROM portals WHERE id = $1 FOR UPDATE", ids.decode(portal.portalId)
            )
            demotions = [
                asyncio.create_task(s.put(f"/managers/{t}", {"isAdmin": False}))
                for s, t in zip(sessions, targets, strict=True)
            ]
            for _ in range(200):
                waiting = await pool.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
                if waiting >= 2:
                    break
                await asyncio.sleep(0.02)
            assert waiting >= 2
        answers = await asyncio.gather(*demotions)
    finally:
        await blocker.close()
    assert sorted(status for status, _ in answers) == [200, 409], answers
    assert [a["error"] for s, a in answers if s == 409] == ["last_admin"]
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM managers m JOIN portals p ON p.id = m.portal_id"
            " WHERE m.is_admin AND m.id <> p.owner_id"
        )
        == 1
    )

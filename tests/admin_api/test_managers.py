from __future__ import annotations

from typing import Any

import asyncpg

from tests.conftest import Api

GOOD = "Secure-Pass-123"


def manager(email: str, **flags: bool) -> dict[str, Any]:
    return {"email": email, "name": "Контент-менеджер", "password": GOOD, **flags}


async def login(api: Api, email: str, password: str = GOOD) -> str:
    status, body = await api.as_(None).post("/login", {"email": email, "password": password})
    assert status == 200, body
    (entry,) = body["portals"]
    return str(entry["sessionId"])


async def test_create_as_in_the_manual(api: Api, portal: Any, pool: asyncpg.Pool) -> None:
    status, body = await api.post("/managers", manager("Content@Company.com", isContentAdmin=True))
    assert status == 200
    assert body["email"] == "content@company.com"
    assert body["name"] == "Контент-менеджер"
    assert (body["isAdmin"], body["isContentAdmin"], body["isSubscriberAdmin"]) == (False, True, False)
    assert body["portalId"] == portal.portalId
    assert "password" not in body and len(body["managerId"]) == 12
    stored = await pool.fetchval("SELECT password_hash FROM managers WHERE email = 'content@company.com'")
    assert stored.startswith(("$2a$", "$2b$")) and GOOD not in stored


async def test_list_includes_owner_and_get_one(api: Api, portal: Any) -> None:
    _, created = await api.post("/managers", manager("a@b.co"))
    status, body = await api.get("/managers")
    assert status == 200
    assert {m["managerId"] for m in body["managers"]} == {portal.ownerId, created["managerId"]}
    assert body.get("next") is None
    status, one = await api.get(f"/managers/{created['managerId']}")
    assert status == 200 and one == created


async def test_duplicate_email_is_a_conflict(api: Api) -> None:
    await api.post("/managers", manager("dup@b.co"))
    status, body = await api.post("/managers", manager("DUP@b.co"))
    assert status == 409 and body["field"] == "email"


async def test_update_keeps_password_when_absent(api: Api) -> None:
    _, created = await api.post("/managers", manager("keep@b.co"))
    status, body = await api.put(f"/managers/{created['managerId']}", {"name": "Старший"})
    assert status == 200 and body["name"] == "Старший" and body["email"] == "keep@b.co"
    await login(api, "keep@b.co")


async def test_password_change_ends_sessions(api: Api) -> None:
    _, created = await api.post("/managers", manager("pw@b.co"))
    session = await login(api, "pw@b.co")
    assert (await api.as_(session).get("/portal"))[0] == 200
    status, _ = await api.put(f"/managers/{created['managerId']}", {"password": "Another-Pass-456"})
    assert status == 200
    assert (await api.as_(session).get("/portal"))[0] == 401
    await login(api, "pw@b.co", "Another-Pass-456")


async def test_deleted_manager_session_refused_at_once(api: Api) -> None:
    _, created = await api.post("/managers", manager("gone@b.co", isContentAdmin=True))
    session = await login(api, "gone@b.co")
    assert (await api.as_(session).get("/managers"))[0] == 200
    status, body = await api.delete(f"/managers/{created['managerId']}")
    assert status == 201
    status, body = await api.as_(session).get("/managers")
    assert status == 401
    assert (await api.get(f"/managers/{created['managerId']}"))[0] == 404


async def test_owner_cannot_be_modified_or_deleted(api: Api, portal: Any) -> None:
    status, body = await api.put(f"/managers/{portal.ownerId}", {"name": "x"})
    assert status == 403
    status, body = await api.delete(f"/managers/{portal.ownerId}")
    assert status == 403
    status, owner = await api.get(f"/managers/{portal.ownerId}")
    assert owner["name"] == "Owner"


async def test_manager_cannot_change_own_flags(api: Api) -> None:
    _, admin = await api.post("/managers", manager("adm@b.co", isAdmin=True))
    await api.post("/managers", manager("adm2@b.co", isAdmin=True))
    session = await login(api, "adm@b.co")
    me = api.as_(session)
    status, body = await me.put(f"/managers/{admin['managerId']}", {"isContentAdmin": True})
    assert status == 403 and body["error"] == "own_flags"
    # Sending the flags unchanged, with a new name, is fine.
    status, body = await me.put(f"/managers/{admin['managerId']}", {"name": "Me", "isAdmin": True})
    assert status == 200 and body["name"] == "Me"


async def test_last_admin_cannot_be_removed(api: Api) -> None:
    _, first = await api.post("/managers", manager("first@b.co", isAdmin=True))
    _, second = await api.post("/managers", manager("second@b.co", isAdmin=True))
    assert (await api.put(f"/managers/{first['managerId']}", {"isAdmin": False}))[0] == 200
    status, body = await api.put(f"/managers/{second['managerId']}", {"isAdmin": False})
    assert status == 409 and body["error"] == "last_admin"
    status, body = await api.delete(f"/managers/{second['managerId']}")
    assert status == 409
    assert (await api.get(f"/managers/{second['managerId']}"))[1]["isAdmin"] is True
    # Non-admins come and go freely.
    _, plain = await api.post("/managers", manager("plain@b.co"))
    assert (await api.delete(f"/managers/{plain['managerId']}"))[0] == 201


async def test_weak_passwords_and_bad_fields(api: Api, pool: asyncpg.Pool) -> None:
    cases = [
        (manager("w@b.co") | {"password": "short1!"}, "password"),
        (manager("w@b.co") | {"password": "alllowercase123!"}, "password"),
        (manager("w@b.co") | {"password": "NoDigitsHere!!"}, "password"),
        (manager("w@b.co") | {"password": "NoSpecial123"}, "password"),
        (manager("w@b.co") | {"password": "Password123!"}, "password"),
        (manager("not-an-email"), "email"),
        (manager("a@b.co\n"), "email"),
        (manager("a\u0000@b.co"), "email"),
        (manager("w@b.co") | {"name": ""}, "name"),
        (manager("w@b.co") | {"name": "x" * 201}, "name"),
        (manager("w@b.co") | {"isAdmin": "yes"}, "isAdmin"),
        (manager("w@b.co") | {"role": "boss"}, "role"),
    ]
    for body, field in cases:
        status, answer = await api.post("/managers", body)
        assert status == 400, body
        assert answer["field"] == field, answer
        assert answer["message"]
    assert await pool.fetchval("SELECT count(*) FROM managers") == 1  # the owner only
    assert await pool.fetchval("SELECT count(*) FROM operations WHERE type = 'createManager'") == 0


async def test_operations_logged_without_secrets(api: Api, pool: asyncpg.Pool) -> None:
    _, created = await api.post("/managers", manager("log@b.co"))
    await api.put(f"/managers/{created['managerId']}", {"password": "Another-Pass-456"})
    rows = await pool.fetch("SELECT type, payload FROM operations ORDER BY id")
    assert [r["type"] for r in rows] == ["createManager", "updateManager"]
    for row in rows:
        assert row["payload"]["managerEmail"] == "apiKey"
        assert row["payload"]["managerId"] == created["managerId"]
        assert "password" not in str(row["payload"]) and GOOD not in str(row["payload"])


async def test_unknown_and_malformed_ids_are_404(api: Api) -> None:
    for bad in ("AAAAAAAAAAA.", "nope", "pK19SW3AAAF."):
        status, body = await api.get(f"/managers/{bad}")
        assert status == 404 and body["error"] == "not_found"

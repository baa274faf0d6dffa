"""Manager sessions: lastLoginAt on sign-in, POST /logout, and the login action the console calls."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from admin_api import keys, login
from admin_api.auth import principal_for
from catena.errors import InvalidInput, TooManyRequests, Unauthorized
from tests.admin_api._subscribers_support import GOOD_PASSWORD, manager_session
from tests.conftest import Api

OWNER_PASSWORD = "Owner-Pass-123"


def parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


async def sign_in(api: Api, email: str, password: str) -> tuple[int, Any]:
    return await api.as_(None).post("/login", {"email": email, "password": password})


async def last_login(api: Api, manager_id: str) -> str | None:
    status, body = await api.get(f"/managers/{manager_id}")
    assert status == 200
    return body["lastLoginAt"]  # type: ignore[no-any-return]


async def test_last_login_at_is_set_by_each_sign_in(api: Api, portal: Any, pool: asyncpg.Pool) -> None:
    status, made = await api.post(
        "/managers", {"email": "m@x.co", "name": "M", "password": GOOD_PASSWORD, "isAdmin": True}
    )
    assert status == 200 and made["lastLoginAt"] is None
    assert await last_login(api, made["managerId"]) is None
    assert (await sign_in(api, "m@x.co", "Wrong-Pass-999"))[0] == 401
    assert await last_login(api, made["managerId"]) is None  # a failed sign-in is no sign-in

    before = datetime.now(UTC).replace(microsecond=0)
    assert (await sign_in(api, "M@X.co", GOOD_PASSWORD))[0] == 200
    first = await last_login(api, made["managerId"])
    assert first is not None and before <= parse(first) <= datetime.now(UTC)
    await pool.execute("UPDATE managers SET last_login_at = now() - interval '1 day' WHERE email = 'm@x.co'")
    assert (await sign_in(api, "m@x.co", GOOD_PASSWORD))[0] == 200
    again = await last_login(api, made["managerId"])
    assert again is not None and parse(again) >= parse(first)
    # The owner, signing in too, shows it in the list; nobody else was touched.
    assert (await sign_in(api, portal.ownerEmail, OWNER_PASSWORD))[0] == 200
    _, listed = await api.get("/managers")
    assert all(m["lastLoginAt"] for m in listed["managers"])


async def test_last_login_at_per_portal_where_the_password_matched(client: Any, make_portal: Any) -> None:
    first = await make_portal(owner_email="multi@x.co", owner_password=GOOD_PASSWORD)
    other = await make_portal(owner_email="multi@x.co", owner_password="Another-Pass-456")
    status, body = await Api(client, None).post("/login", {"email": "multi@x.co", "password": GOOD_PASSWORD})
    assert status == 200 and [p["portalId"] for p in body["portals"]] == [first.portalId]
    assert await last_login(Api(client, first.apiKey), first.ownerId) is not None
    assert await last_login(Api(client, other.apiKey), other.ownerId) is None


async def test_logout_ends_only_that_session(api: Api, portal: Any, pool: asyncpg.Pool) -> None:
    _, one = await sign_in(api, portal.ownerEmail, OWNER_PASSWORD)
    _, two = await sign_in(api, portal.ownerEmail, OWNER_PASSWORD)
    first, second = one["portals"][0]["sessionId"], two["portals"][0]["sessionId"]
    status, body = await api.as_(first).post("/logout")
    assert (status, body) == (200, {})
    status, body = await api.as_(first).get("/portal")
    assert status == 401 and body["error"] == "invalid_token"
    status, body = await api.as_(first).post("/logout")
    assert status == 401  # signing out twice: the session is gone
    assert (await api.as_(second).get("/portal"))[0] == 200  # the other session goes on
    assert await pool.fetchval("SELECT count(*) FROM manager_sessions") == 1
    assert await pool.fetchval("SELECT count(*) FROM operations") == 0


async def test_logout_with_the_api_key_is_a_403(api: Api, pool: asyncpg.Pool) -> None:
    status, body = await api.post("/logout")
    assert status == 403 and body["error"] == "not_a_session"
    assert "reset_api_key" in body["message"]
    assert (await api.get("/portal"))[0] == 200  # the key still works


@pytest.mark.parametrize("token", [None, "", "nonsense", "x" * 3000])
async def test_logout_without_a_session_is_a_401(api: Api, token: str | None) -> None:
    headers = {} if token is None else {"X-Auth-Token": token}
    status, body = await api.as_(None).post("/logout", headers=headers)
    assert status == 401 and body["error"] in ("missing_token", "invalid_token")


async def test_logout_of_one_portal_keeps_the_others(client: Any, make_portal: Any) -> None:
    made = [await make_portal(owner_email="two@x.co", owner_password=GOOD_PASSWORD) for _ in range(2)]
    _, body = await Api(client, None).post("/login", {"email": "two@x.co", "password": GOOD_PASSWORD})
    tokens = {p["portalId"]: p["sessionId"] for p in body["portals"]}
    first, second = (tokens[m.portalId] for m in made)
    assert (await Api(client, first).post("/logout"))[0] == 200
    assert (await Api(client, first).get("/portal"))[0] == 401
    status, portal = await Api(client, second).get("/portal")
    assert status == 200 and portal["portalId"] == made[1].portalId


async def test_concurrent_logouts(api: Api, portal: Any, pool: asyncpg.Pool) -> None:
    _, body = await sign_in(api, portal.ownerEmail, OWNER_PASSWORD)
    session = api.as_(body["portals"][0]["sessionId"])
    answers = await asyncio.gather(*(session.post("/logout") for _ in range(8)))
    assert all(status in (200, 401) for status, _ in answers) and (200, {}) in answers
    assert await pool.fetchval("SELECT count(*) FROM manager_sessions") == 0


async def test_the_console_signs_in_and_out_through_the_actions(
    api: Api, portal: Any, redis: Any, pool: asyncpg.Pool
) -> None:
    services = api.client.app[keys.SERVICES]
    sessions = await login.login(services, f"  {portal.ownerEmail.upper()} ", OWNER_PASSWORD, "192.0.2.7")
    assert [s.portalId for s in sessions] == [portal.portalId]
    actor = await principal_for(services, sessions[0].sessionId)
    assert actor is not None and actor.is_owner and actor.email == portal.ownerEmail
    await login.logout(services, actor, sessions[0].sessionId)
    assert await principal_for(services, sessions[0].sessionId) is None
    with pytest.raises(Unauthorized):
        await login.login(services, portal.ownerEmail, "Wrong-Pass-1", "192.0.2.7")
    for email, password, field in [
        ("", "x", "email"),
        ("a@b.co", "", "password"),
        ("a@b.co", "p" * 201, "password"),
    ]:
        with pytest.raises(InvalidInput) as refused:
            await login.login(services, email, password, "192.0.2.7")
        assert refused.value.field == field
    # The console's sign-in shares the API's throttle (per address here).
    settings_limit = services.settings.login_fail_limit
    for n in range(settings_limit):
        with pytest.raises(Unauthorized):
            await login.login(services, f"nobody{n}@x.co", "Wrong-Pass-1", "192.0.2.8")
    with pytest.raises(TooManyRequests):
        await login.login(services, portal.ownerEmail, OWNER_PASSWORD, "192.0.2.8")
    assert await pool.fetchval("SELECT count(*) FROM manager_sessions") == 0


async def test_a_manager_signs_out_too(api: Api) -> None:
    session = await manager_session(api, "analyst@x.co")
    assert (await session.get("/subscribers"))[0] == 200
    assert (await session.post("/logout"))[0] == 200
    assert (await session.get("/subscribers"))[0] == 401

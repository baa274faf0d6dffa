from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from catena import passwords
from catena.settings import AdminSettings, load
from tests.conftest import Api

GOOD = "Secure-Pass-123"


async def test_one_email_three_portals_three_sessions(client: Any, make_portal: Any) -> None:
    made = [await make_portal(owner_email="multi@company.com", owner_password=GOOD) for _ in range(3)]
    anonymous = Api(client, None)
    status, body = await anonymous.post("/login", {"email": "Multi@Company.com", "password": GOOD})
    assert status == 200
    assert {p["portalId"] for p in body["portals"]} == {p.portalId for p in made}
    assert {p["portalName"] for p in body["portals"]} == {p.name for p in made}
    for entry in body["portals"]:
        status, portal = await anonymous.as_(entry["sessionId"]).get("/portal")
        assert status == 200 and portal["portalId"] == entry["portalId"]


async def test_only_portals_where_the_password_matches(client: Any, make_portal: Any) -> None:
    first = await make_portal(owner_email="x@company.com", owner_password=GOOD)
    await make_portal(owner_email="x@company.com", owner_password="Other-Pass-987")
    status, body = await Api(client, None).post("/login", {"email": "x@company.com", "password": GOOD})
    assert status == 200 and [p["portalId"] for p in body["portals"]] == [first.portalId]


async def test_wrong_credentials_one_generic_message(client: Any, portal: Any) -> None:
    anonymous = Api(client, None)
    wrong_password = await anonymous.post("/login", {"email": portal.ownerEmail, "password": "Nope-1234!"})
    wrong_email = await anonymous.post("/login", {"email": "nobody@x.com", "password": "Nope-1234!"})
    assert wrong_password[0] == wrong_email[0] == 401
    assert wrong_password[1] == wrong_email[1]


@pytest.mark.parametrize("field", ["email", "password"])
async def test_nul_in_a_credential_is_refused_naming_the_field(client: Any, portal: Any, field: str) -> None:
    anonymous = Api(client, None)
    sent = {"email": portal.ownerEmail, "password": portal.ownerPassword, field: "a\u0000b"}
    status, body = await anonymous.post("/login", sent)
    assert status == 400 and body["field"] == field, body


async def test_failed_logins_are_throttled(
    aiohttp_client: Any, admin_settings: AdminSettings, portal: Any
) -> None:
    from admin_api.app import create_app

    settings = load(AdminSettings, environ={}, **{**_fields(admin_settings), "login_fail_limit": 3})
    anonymous = Api(await aiohttp_client(create_app(settings)), None)
    for _ in range(3):
        status, _ = await anonymous.post("/login", {"email": portal.ownerEmail, "password": "Wrong-123!"})
        assert status == 401
    status, body = await anonymous.post("/login", {"email": portal.ownerEmail, "password": "Owner-Pass-123"})
    assert status == 429 and body["error"] == "too_many_requests"


async def test_session_expires_when_idle(api: Api, pool: asyncpg.Pool, portal: Any) -> None:
    status, body = await api.as_(None).post(
        "/login", {"email": portal.ownerEmail, "password": "Owner-Pass-123"}
    )
    session = body["portals"][0]["sessionId"]
    assert (await api.as_(session).get("/portal"))[0] == 200
    await pool.execute("UPDATE manager_sessions SET last_seen_at = now() - interval '9 hours'")
    assert (await api.as_(session).get("/portal"))[0] == 401


async def test_reset_api_key_takes_effect_on_next_request(api: Api, portal: Any) -> None:
    status, body = await api.post("/portal/reset_api_key")
    assert status == 200 and body["apiKey"] != portal.apiKey and len(body["apiKey"]) >= 43
    assert (await api.get("/portal"))[0] == 401
    status, again = await api.as_(body["apiKey"]).get("/portal")
    assert status == 200 and again["apiKey"] == body["apiKey"]


@pytest.mark.parametrize("rounds", [12])
def test_default_bcrypt_cost_is_at_least_12(rounds: int) -> None:
    assert load(AdminSettings, environ={}).bcrypt_rounds == rounds
    hashed = passwords.hash_sync(GOOD, load(AdminSettings, environ={}).bcrypt_rounds)
    assert hashed.startswith("$2b$12$") and passwords.verify_sync(GOOD, hashed)


def _fields(settings: AdminSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__struct_fields__}

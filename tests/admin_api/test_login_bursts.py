"""Parallel guessing against the sign-in limits (issue 15 item 1), sent for real.

Every guess is counted before it is checked, atomically, so a burst of concurrent
wrong passwords (or SMS codes) from one address gets at most the limit evaluated;
bcrypt runs without a pooled connection, so a burst does not hold up other requests.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import msgspec
import pytest

from admin_api.client import codes
from catena import ids, passwords
from catena.portals import CreatedPortal
from catena.settings import AdminSettings
from tests.conftest import AdminTestServer, Api

from .client.conftest import PREFIX

GOOD = "Owner-Pass-123"


@pytest.fixture
def make_client(aiohttp_client: Any, admin_settings: AdminSettings, pool: asyncpg.Pool):  # type: ignore[no-untyped-def]
    """An admin API with some settings changed."""
    from admin_api.app import create_app

    async def make(**overrides: Any) -> Any:
        settings = msgspec.structs.replace(admin_settings, **overrides)
        return await aiohttp_client(AdminTestServer(create_app(settings)))

    return make


async def test_a_burst_of_wrong_passwords_evaluates_at_most_the_limit(
    make_client: Any, portal: CreatedPortal
) -> None:
    anonymous = Api(await make_client(login_fail_limit=10), None)
    wrong = {"email": portal.ownerEmail, "password": "Wrong-Pass-1!"}
    answers = await asyncio.gather(*(anonymous.post("/login", wrong) for _ in range(300)))
    statuses = [status for status, _ in answers]
    print("300 concurrent wrong passwords:", {s: statuses.count(s) for s in set(statuses)})
    assert statuses.count(401) == 10
    assert statuses.count(429) == 290
    # The limit is reached: the right password is refused too, for the rest of the window.
    status, body = await anonymous.post("/login", {"email": portal.ownerEmail, "password": GOOD})
    assert status == 429 and body["error"] == "too_many_requests"


async def test_the_right_password_after_a_burst_is_refused(make_client: Any, portal: CreatedPortal) -> None:
    anonymous = Api(await make_client(login_fail_limit=10), None)
    wrong = {"email": portal.ownerEmail, "password": "Wrong-Pass-1!"}
    right = {"email": portal.ownerEmail, "password": GOOD}
    # Sent after three hundred wrong ones, while most of them are still being checked.
    burst = [asyncio.create_task(anonymous.post("/login", wrong)) for _ in range(300)]
    await asyncio.sleep(0)
    status, body = await anonymous.post("/login", right)
    statuses = [status for status, _ in await asyncio.gather(*burst)]
    assert statuses.count(401) == 10
    assert status == 429, body


async def test_a_success_gives_its_slot_back(make_client: Any, portal: CreatedPortal) -> None:
    anonymous = Api(await make_client(login_fail_limit=3), None)
    right = {"email": portal.ownerEmail, "password": GOOD}
    for _ in range(6):
        assert (await anonymous.post("/login", right))[0] == 200


async def test_limit_holds_per_process_while_redis_is_down(
    make_client: Any, portal: CreatedPortal, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on port 1: every Redis call fails at once.
    anonymous = Api(await make_client(login_fail_limit=4, redis_url="redis://127.0.0.1:1/0"), None)
    wrong = {"email": portal.ownerEmail, "password": "Wrong-Pass-1!"}
    answers = await asyncio.gather(*(anonymous.post("/login", wrong) for _ in range(40)))
    statuses = [status for status, _ in answers]
    assert statuses.count(401) == 4 and statuses.count(429) == 36
    fallbacks = [r for r in caplog.records if "per-process" in r.getMessage()]
    assert len(fallbacks) == 1, [r.getMessage() for r in caplog.records]


async def test_a_burst_of_logins_does_not_hold_up_other_requests(
    make_client: Any, portal: CreatedPortal, pool: asyncpg.Pool
) -> None:
    """While bcrypt checks forty passwords, an unrelated request is answered long before the last."""
    client = await make_client(login_fail_limit=1000, database_pool_size=2)
    slow_hash = passwords.hash_sync(GOOD, 10)
    await pool.execute("UPDATE managers SET password_hash = $1", slow_hash)
    anonymous, keyed = Api(client, None), Api(client, portal.apiKey)
    wrong = {"email": portal.ownerEmail, "password": "Wrong-Pass-1!"}
    finished: list[str] = []

    async def login() -> None:
        await anonymous.post("/login", wrong)
        finished.append("login")

    burst = [asyncio.create_task(login()) for _ in range(40)]
    await asyncio.sleep(0.5)
    status, _ = await keyed.get("/portal")
    logins_before = finished.count("login")
    await asyncio.gather(*burst)
    print(f"GET /portal answered after {logins_before} of 40 logins")
    assert status == 200
    assert logins_before < 20


# ------------------------------------------------------------------ SMS codes


async def test_a_burst_of_wrong_sms_codes_evaluates_at_most_the_limit(
    make_client: Any, portal: CreatedPortal, pool: asyncpg.Pool, admin_settings: AdminSettings, redis: Any
) -> None:
    client = await make_client(client_verify_fail_per_ip=30)
    portal_id = ids.decode(portal.portalId)
    assert portal_id is not None
    hasher = codes.CodeHasher(admin_settings.token_secrets)
    phones = [codes.Phone(portal_id, "7", f"90000{n:05d}") for n in range(60)]
    async with pool.acquire() as conn:
        for phone in phones:
            await conn.execute(
                "INSERT INTO subscribers (id, portal_id, name, phone_country_code, phone) "
                "VALUES ($1, $2, 'x', $3, $4)",
                ids.new_id(),
                portal_id,
                phone.country_code,
                phone.number,
            )
            await codes.issue(conn, hasher, phone, "1234", 300, 60)

    async def verify(phone: codes.Phone) -> int:
        body = {"phoneCountryCode": "7", "phone": phone.number, "code": "4321", "portalId": portal.portalId}
        status, _ = await Api(client, None).post(PREFIX + "/login/verify", body)
        return status

    statuses = await asyncio.gather(*(verify(phone) for phone in phones))
    evaluated = await pool.fetchval("SELECT sum(attempts) FROM client_sms_codes")
    print(
        "60 concurrent wrong codes:", {s: statuses.count(s) for s in set(statuses)}, "evaluated:", evaluated
    )
    assert evaluated <= 30
    assert statuses.count(401) == evaluated and statuses.count(429) == 60 - evaluated

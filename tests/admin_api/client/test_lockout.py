"""Nobody can lock a subscriber out of SMS sign-in (issue 15 item 4), attacked for real.

Requests the cooldown refuses do not count toward the phone's hourly limit, and
codes for a phone are counted per client address: the address that keeps asking
is stopped, the subscriber asking from their own address is not.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from .conftest import Made, codes_sent

PHONE = {"phoneCountryCode": "7", "phone": "9000000001"}
PROXY = "127.0.0.0/8, ::1"
ATTACKER = {"X-Forwarded-For": "203.0.113.66"}
VICTIM = {"X-Forwarded-For": "198.51.100.7"}


async def after_the_cooldown(pool: asyncpg.Pool) -> None:
    await pool.execute("UPDATE client_sms_codes SET created_at = now() - interval '61 seconds'")


async def test_requests_refused_by_the_cooldown_do_not_count(
    make_app: Any, made: Made, sms_log: Any, pool: asyncpg.Pool
) -> None:
    app = await make_app()
    await made.subscriber()
    # Five requests within a second: one code, four refused by the cooldown.
    statuses = [(await app.post("/login/sms", PHONE))[0] for _ in range(5)]
    assert statuses == [200, 429, 429, 429, 429]
    await after_the_cooldown(pool)
    status, body = await app.post("/login/sms", PHONE)
    assert status == 200, body
    assert len(codes_sent(sms_log)) == 2


async def test_the_attacker_is_stopped_not_the_victim(
    make_app: Any, made: Made, sms_log: Any, pool: asyncpg.Pool
) -> None:
    app = await make_app(client_trusted_proxies=PROXY)
    await made.subscriber()
    # The attacker gets the phone's five codes of the hour, one per cooldown...
    for _ in range(5):
        assert (await app.post("/login/sms", PHONE, headers=ATTACKER))[0] == 200
        await after_the_cooldown(pool)
    status, body = await app.post("/login/sms", PHONE, headers=ATTACKER)
    assert status == 429 and body["error"] == "too_many_requests", body
    # ...and the subscriber, asking from their own address, still gets a code and signs in.
    assert (await app.post("/login/sms", PHONE, headers=VICTIM))[0] == 200
    code = codes_sent(sms_log)[-1][1]
    status, body = await app.post("/login/verify", {**PHONE, "code": code}, headers=VICTIM)
    assert status == 200, body


async def test_an_address_hammering_a_phone_is_stopped_by_its_own_limit(
    make_app: Any, made: Made, sms_log: Any
) -> None:
    app = await make_app(client_trusted_proxies=PROXY, client_sms_per_ip=20)
    await made.subscriber()
    statuses = [(await app.post("/login/sms", PHONE, headers=ATTACKER))[0] for _ in range(25)]
    assert statuses[0] == 200 and statuses.count(429) == 24
    status, body = await app.post("/login/sms", {**PHONE, "phone": "9000000002"}, headers=ATTACKER)
    assert status == 429 and body["message"] == "too many codes requested from this address; try again later"
    # The phone's own count holds the one code that was sent: its subscriber is not held up.
    assert len(codes_sent(sms_log)) == 1

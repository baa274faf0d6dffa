"""Per-phone and per-address limits on the sign-in endpoints, and life without Redis."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from .conftest import Made, codes_sent, wrong

PHONE = {"phoneCountryCode": "7", "phone": "9000000001"}


async def test_codes_per_phone_are_limited(
    make_app: Any, made: Made, sms_log: Any, pool: asyncpg.Pool
) -> None:
    app = await make_app(client_sms_per_phone=3)
    await made.subscriber()
    statuses = []
    for _ in range(4):
        statuses.append((await app.post("/login/sms", PHONE))[0])
        # Past the cooldown each time: only the hourly limit is left to stop it.
        await pool.execute("UPDATE client_sms_codes SET created_at = now() - interval '1 hour'")
    assert statuses == [200, 200, 200, 429]
    assert len(codes_sent(sms_log)) == 3


async def test_codes_per_address_are_limited(make_app: Any, sms_log: Any) -> None:
    app = await make_app(client_sms_per_ip=2)
    answers = [
        await app.post("/login/sms", {"phoneCountryCode": "7", "phone": f"90000000{n:02d}"}) for n in range(3)
    ]
    assert [status for status, _ in answers] == [200, 200, 429]
    assert answers[2][1]["message"] == "too many codes requested from this address; try again later"


async def test_wrong_codes_per_address_are_limited(make_app: Any, made: Made, sms_log: Any) -> None:
    app = await make_app(client_verify_fail_per_ip=2)
    for n in range(3):
        await made.subscriber(phone=f"90000000{n:02d}")
    statuses = []
    for n in range(3):
        phone = {"phoneCountryCode": "7", "phone": f"90000000{n:02d}"}
        await app.post("/login/sms", phone)
        code = codes_sent(sms_log)[-1][1]
        statuses.append((await app.post("/login/verify", {**phone, "code": wrong(code)}))[0])
    # Two failures are counted, then the address must wait, even with the right code.
    assert statuses == [401, 401, 429]
    assert (await app.post("/login/verify", {**phone, "code": code}))[0] == 429


async def test_trusted_proxy_forwarded_address_is_throttled_per_client(make_app: Any, sms_log: Any) -> None:
    app = await make_app(client_sms_per_ip=1, client_trusted_proxies="127.0.0.0/8, ::1")
    first = {"X-Forwarded-For": "203.0.113.7"}
    second = {"X-Forwarded-For": "198.51.100.9, 203.0.113.8"}
    assert (await app.post("/login/sms", {**PHONE, "phone": "9000000011"}, headers=first))[0] == 200
    assert (await app.post("/login/sms", {**PHONE, "phone": "9000000012"}, headers=second))[0] == 200
    assert (await app.post("/login/sms", {**PHONE, "phone": "9000000013"}, headers=first))[0] == 429


async def test_untrusted_forwarded_header_is_ignored(make_app: Any, sms_log: Any) -> None:
    app = await make_app(client_sms_per_ip=1)
    assert (await app.post("/login/sms", PHONE, headers={"X-Forwarded-For": "203.0.113.7"}))[0] == 200
    status, _ = await app.post(
        "/login/sms", {**PHONE, "phone": "9000000002"}, headers={"X-Forwarded-For": "203.0.113.99"}
    )
    assert status == 429


async def test_sign_in_works_while_redis_is_down(
    make_app: Any, made: Made, sms_log: pytest.LogCaptureFixture, pool: asyncpg.Pool
) -> None:
    # Nothing listens on port 1: every Redis call fails at once.
    app = await make_app(redis_url="redis://127.0.0.1:1/0")
    await made.subscriber()
    assert (await app.post("/login/sms", PHONE))[0] == 200
    code = codes_sent(sms_log)[-1][1]
    # The limits that matter are in PostgreSQL and still hold: cooldown and attempts.
    assert (await app.post("/login/sms", PHONE))[0] == 429
    assert (await app.post("/login/verify", {**PHONE, "code": code}))[0] == 200
    warnings = [r for r in sms_log.records if "per-process counts" in r.getMessage()]
    assert len(warnings) == 1


async def test_limits_hold_per_process_while_redis_is_down(make_app: Any, sms_log: Any) -> None:
    app = await make_app(redis_url="redis://127.0.0.1:1/0", client_sms_per_ip=2)
    answers = [
        await app.post("/login/sms", {"phoneCountryCode": "7", "phone": f"90000000{n:02d}"}) for n in range(3)
    ]
    assert [status for status, _ in answers] == [200, 200, 429]

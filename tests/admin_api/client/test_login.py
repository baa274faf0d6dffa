"""Sign-in by phone and SMS code: POST /login/sms and /login/verify."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from catena import entitlements, ids
from catena.portals import CreatedPortal
from catena.tokens import TokenCodec

from .conftest import App, Made, codes_sent, wrong

PHONE = {"phoneCountryCode": "7", "phone": "9000000001"}


async def request_code(app: App, sms_log: pytest.LogCaptureFixture, phone: dict[str, str] = PHONE) -> str:
    status, body = await app.post("/login/sms", phone)
    assert status == 200, body
    return codes_sent(sms_log)[-1][1]


async def test_known_phone_signs_in_with_the_code_from_the_sms(
    app: App, made: Made, sms_log: Any, codec: TokenCodec, portal_id: int
) -> None:
    subscriber_id = await made.subscriber()
    status, body = await app.post("/login/sms", PHONE)
    assert status == 200
    assert body == {"expiresIn": 300, "resendIn": 60, "status": "sent", "codeLength": 4}
    [(phone, code)] = codes_sent(sms_log)
    assert phone == "79000000001" and len(code) == 4 and code.isdigit()

    status, body = await app.post("/login/verify", {**PHONE, "code": code})
    assert status == 200, body
    assert body["subscriberId"] == ids.encode(subscriber_id)
    assert body["portalId"] == ids.encode(portal_id)
    assert body["name"] == "Subscriber 9000000001"
    # The same token the Management API shows on the subscriber (version 1).
    assert body["playback_token"] == codec.sign(subscriber_id, portal_id, 1)
    assert body["branding"]["title"]


async def test_token_follows_the_subscribers_token_version(
    app: App, made: Made, sms_log: Any, codec: TokenCodec, pool: asyncpg.Pool, portal_id: int
) -> None:
    subscriber_id = await made.subscriber()
    await pool.execute("UPDATE subscribers SET token_version = 4 WHERE id = $1", subscriber_id)
    code = await request_code(app, sms_log)
    status, body = await app.post("/login/verify", {**PHONE, "code": code})
    assert status == 200
    assert body["playback_token"] == codec.sign(subscriber_id, portal_id, 4)


async def test_a_code_works_once(app: App, made: Made, sms_log: Any) -> None:
    await made.subscriber()
    code = await request_code(app, sms_log)
    assert (await app.post("/login/verify", {**PHONE, "code": code}))[0] == 200
    status, body = await app.post("/login/verify", {**PHONE, "code": code})
    assert status == 401 and body["message"] == "sms code doesn't match"


async def test_wrong_code_is_401_with_the_documented_message(app: App, made: Made, sms_log: Any) -> None:
    await made.subscriber()
    code = await request_code(app, sms_log)
    status, body = await app.post("/login/verify", {**PHONE, "code": wrong(code)})
    assert status == 401
    assert body == {"error": "wrong_sms_code", "message": "sms code doesn't match", "field": "code"}
    # A wrong try does not spoil the right code.
    assert (await app.post("/login/verify", {**PHONE, "code": code}))[0] == 200


async def test_code_is_stored_hashed(app: App, made: Made, sms_log: Any, pool: asyncpg.Pool) -> None:
    await made.subscriber()
    code = await request_code(app, sms_log)
    row = await pool.fetchrow("SELECT * FROM client_sms_codes")
    assert len(row["code_hash"]) == 32 and len(row["salt"]) == 16
    assert code.encode() not in bytes(row["code_hash"]) + bytes(row["salt"])
    assert code not in str(dict(row))


async def test_unknown_phone_gets_the_same_answer_and_no_sms(
    app: App, made: Made, sms_log: Any, pool: asyncpg.Pool
) -> None:
    await made.subscriber()
    known = await app.post("/login/sms", PHONE)
    unknown = await app.post("/login/sms", {"phoneCountryCode": "7", "phone": "9111111111"})
    assert known == unknown
    assert [phone for phone, _ in codes_sent(sms_log)] == ["79000000001"]
    # Its cooldown and its verification answer look the same as a known phone's too.
    assert (await app.post("/login/sms", {"phoneCountryCode": "7", "phone": "9111111111"}))[0] == 429
    status, body = await app.post(
        "/login/verify", {"phoneCountryCode": "7", "phone": "9111111111", "code": "1234"}
    )
    assert status == 401 and body["message"] == "sms code doesn't match"
    assert await pool.fetchval("SELECT count(*) FROM subscribers") == 1


async def test_guessing_the_unsent_code_of_an_unknown_phone_signs_nobody_in(
    app: App, sms_log: Any, pool: asyncpg.Pool, admin_settings: Any, portal_id: int
) -> None:
    from admin_api.client import codes

    phone = {"phoneCountryCode": "7", "phone": "9111111111"}
    assert (await app.post("/login/sms", phone))[0] == 200
    # Plant a code we know, as if the attacker had guessed the unsent one.
    hasher = codes.CodeHasher(admin_settings.token_secrets)
    key = codes.Phone(portal_id, "7", "9111111111")
    salt = b"0" * 16
    await pool.execute(
        "UPDATE client_sms_codes SET salt = $1, code_hash = $2", salt, hasher.digest(salt, key, "4321")
    )
    status, body = await app.post("/login/verify", {**phone, "code": "4321"})
    assert status == 401 and body["message"] == "sms code doesn't match"
    assert await pool.fetchval("SELECT count(*) FROM subscribers") == 0


async def test_auto_create_makes_the_subscriber_at_verification(
    app: App, made: Made, sms_log: Any, pool: asyncpg.Pool, portal_id: int, codec: TokenCodec
) -> None:
    await made.settings(autoCreateSubscribers=True)
    channel = await made.channel("free1")
    await made.package("basic", channel, free=True)
    phone = {"phoneCountryCode": "44", "phone": "7700900123"}
    code = await request_code(app, sms_log, phone)
    assert await pool.fetchval("SELECT count(*) FROM subscribers") == 0
    version_before = await entitlements_version(pool, portal_id)

    status, body = await app.post("/login/verify", {**phone, "code": code})
    assert status == 200, body
    row = await pool.fetchrow("SELECT * FROM subscribers")
    assert (row["phone_country_code"], row["phone"], row["name"]) == ("44", "7700900123", "+44 7700900123")
    assert body["subscriberId"] == ids.encode(row["id"])
    assert body["playback_token"] == codec.sign(row["id"], portal_id, 1)
    op = await pool.fetchrow("SELECT * FROM operations WHERE type = 'autoCreateSubscriber'")
    assert op["subscriber_id"] == row["id"] and op["portal_id"] == portal_id
    assert op["payload"] == {
        "name": "+44 7700900123",
        "phoneCountryCode": "44",
        "phone": "7700900123",
        "managerEmail": "client",
    }
    assert await entitlements_version(pool, portal_id) == version_before + 1
    # Free packages apply at once.
    status, listing = await app.with_token(body["playback_token"]).get("/channels")
    assert status == 200 and [c["name"] for c in listing["channels"]] == ["free1"]


async def entitlements_version(pool: asyncpg.Pool, portal_id: int) -> int:
    async with pool.acquire() as conn:
        return await entitlements.current_version(conn, portal_id)


async def test_disabled_subscriber_is_told_at_verification(app: App, made: Made, sms_log: Any) -> None:
    await made.subscriber(disabled=True)
    code = await request_code(app, sms_log)
    status, body = await app.post("/login/verify", {**PHONE, "code": code})
    assert status == 403 and body["error"] == "subscriber_disabled"


async def test_sixth_attempt_is_refused_even_with_the_right_code(app: App, made: Made, sms_log: Any) -> None:
    await made.subscriber()
    code = await request_code(app, sms_log)
    for _ in range(5):
        status, body = await app.post("/login/verify", {**PHONE, "code": wrong(code)})
        assert status == 401 and body["message"] == "sms code doesn't match"
    status, body = await app.post("/login/verify", {**PHONE, "code": code})
    assert status == 429 and body["error"] == "too_many_attempts"


async def test_brute_force_is_stopped_by_the_attempt_limit(
    app: App, made: Made, sms_log: Any, pool: asyncpg.Pool
) -> None:
    await made.subscriber()
    code = await request_code(app, sms_log)
    answers = []
    for guess in (f"{n:04d}" for n in range(10000)):
        if guess == code:
            continue
        status, _ = await app.post("/login/verify", {**PHONE, "code": guess})
        answers.append(status)
        if status != 401:
            break
    # Five wrong guesses, then every further try is refused, the right code included.
    assert answers == [401] * 5 + [429]
    assert (await app.post("/login/verify", {**PHONE, "code": code}))[0] == 429
    assert await pool.fetchval("SELECT attempts FROM client_sms_codes") == 7


async def test_a_new_code_replaces_the_old_one(
    app: App, made: Made, sms_log: Any, pool: asyncpg.Pool
) -> None:
    await made.subscriber()
    first = await request_code(app, sms_log)
    await pool.execute("UPDATE client_sms_codes SET created_at = now() - interval '61 seconds'")
    second = await request_code(app, sms_log)
    if first != second:
        status, body = await app.post("/login/verify", {**PHONE, "code": first})
        assert status == 401 and body["message"] == "sms code doesn't match"
    assert (await app.post("/login/verify", {**PHONE, "code": second}))[0] == 200


async def test_resend_inside_the_cooldown_is_429_with_retry_after(app: App, made: Made, sms_log: Any) -> None:
    await made.subscriber()
    await request_code(app, sms_log)
    async with app.client.post(
        "/client/api/v1/login/sms", json=PHONE, headers={"Host": app.host or ""}
    ) as resp:
        body = await resp.json()
        assert resp.status == 429
        assert body["error"] == "sms_cooldown"
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert len(codes_sent(sms_log)) == 1


async def test_expired_code_is_refused(app: App, made: Made, sms_log: Any, pool: asyncpg.Pool) -> None:
    await made.subscriber()
    code = await request_code(app, sms_log)
    await pool.execute("UPDATE client_sms_codes SET expires_at = now() - interval '1 second'")
    status, body = await app.post("/login/verify", {**PHONE, "code": code})
    assert status == 401 and body["error"] == "sms_code_expired"


async def test_codes_live_five_minutes(app: App, made: Made, sms_log: Any, pool: asyncpg.Pool) -> None:
    await made.subscriber()
    await request_code(app, sms_log)
    lifetime = await pool.fetchval("SELECT extract(epoch FROM expires_at - created_at) FROM client_sms_codes")
    assert lifetime == 300


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"phoneCountryCode": "7", "phone": "90000abc01"}, "phone"),
        ({"phoneCountryCode": "+7", "phone": "9000000001"}, "phoneCountryCode"),
        ({"phoneCountryCode": "7"}, None),
        ({"phoneCountryCode": "7", "phone": 9000000001}, "phone"),
        ({**PHONE, "extra": 1}, None),
    ],
)
async def test_bad_sms_requests_are_400(
    app: App, sms_log: Any, body: dict[str, Any], field: str | None, pool: asyncpg.Pool
) -> None:
    status, answer = await app.post("/login/sms", body)
    assert status == 400, answer
    assert answer["error"] == "invalid_input"
    if field:
        assert answer["field"] == field
    assert await pool.fetchval("SELECT count(*) FROM client_sms_codes") == 0
    assert codes_sent(sms_log) == []


@pytest.mark.parametrize("code", ["123", "12345", "12a4", ""])
async def test_code_of_wrong_length_is_400(
    app: App, made: Made, sms_log: Any, code: str, pool: asyncpg.Pool
) -> None:
    await made.subscriber()
    await request_code(app, sms_log)
    status, body = await app.post("/login/verify", {**PHONE, "code": code})
    assert status == 400 and body["field"] == "code"
    # It does not count as an attempt.
    assert await pool.fetchval("SELECT attempts FROM client_sms_codes") == 0


async def test_malformed_json_and_wrong_media_type(app: App) -> None:
    status, body = await app.post("/login/sms", data=b"{nope", headers={"Content-Type": "application/json"})
    assert status == 400 and body["error"] == "malformed_json"
    status, body = await app.post("/login/sms", data=b"phone=1", headers={"Content-Type": "text/plain"})
    assert status == 415


async def test_portal_by_host_ignores_case_and_port(
    app: App, made: Made, sms_log: Any, portal: CreatedPortal
) -> None:
    await made.subscriber()
    status, _ = await app.at(portal.domain.upper() + ":8443").post("/login/sms", PHONE)
    assert status == 200
    assert len(codes_sent(sms_log)) == 1


async def test_unknown_domain_is_404(app: App, sms_log: Any) -> None:
    status, body = await app.at("nobody.example.org").post("/login/sms", PHONE)
    assert status == 404
    assert body["error"] == "unknown_portal" and "nobody.example.org" in body["message"]


async def test_portal_by_explicit_id(app: App, made: Made, sms_log: Any, portal: CreatedPortal) -> None:
    await made.subscriber()
    elsewhere = app.at("127.0.0.1:8080")
    status, _ = await elsewhere.post("/login/sms", {**PHONE, "portalId": portal.portalId})
    assert status == 200
    code = codes_sent(sms_log)[-1][1]
    status, body = await elsewhere.post("/login/verify", {**PHONE, "code": code, "portalId": portal.portalId})
    assert status == 200 and body["portalId"] == portal.portalId


@pytest.mark.parametrize("portal_text", ["AAAAAAAAAAE.", "not-an-id", ""])
async def test_unknown_or_malformed_portal_id_is_404(app: App, portal_text: str) -> None:
    status, body = await app.post("/login/sms", {**PHONE, "portalId": portal_text})
    assert status == 404 and body["field"] == "portalId"


async def test_phones_of_one_portal_do_not_sign_in_to_another(
    app: App, made: Made, sms_log: Any, make_portal: Any, pool: asyncpg.Pool
) -> None:
    await made.subscriber()
    other = await make_portal()
    code = await request_code(app, sms_log)
    status, body = await app.at(other.domain).post("/login/verify", {**PHONE, "code": code})
    assert status == 401 and body["message"] == "sms code doesn't match"


async def test_portal_info_for_the_sign_in_screen(app: App, portal: CreatedPortal) -> None:
    status, body = await app.get("/portal")
    assert status == 200
    assert body["portalId"] == portal.portalId and body["name"] == portal.name
    assert set(body["branding"]) >= {"title", "description"}
    status, body = await app.at("unknown.example").get("/portal")
    assert status == 404


async def test_one_code_signs_in_once_under_concurrent_use(
    app: App, made: Made, sms_log: Any, pool: asyncpg.Pool
) -> None:
    await made.settings(autoCreateSubscribers=True)
    code = await request_code(app, sms_log)
    answers = await asyncio.gather(*(app.post("/login/verify", {**PHONE, "code": code}) for _ in range(4)))
    assert sorted(status for status, _ in answers) == [200, 401, 401, 401]
    assert await pool.fetchval("SELECT count(*) FROM subscribers") == 1
    assert await pool.fetchval("SELECT count(*) FROM operations WHERE type = 'autoCreateSubscriber'") == 1


async def test_subscriber_created_by_billing_meanwhile_is_used(
    app: App, made: Made, sms_log: Any, pool: asyncpg.Pool
) -> None:
    await made.settings(autoCreateSubscribers=True)
    code = await request_code(app, sms_log)
    subscriber_id = await made.subscriber()
    status, body = await app.post("/login/verify", {**PHONE, "code": code})
    assert status == 200 and body["subscriberId"] == ids.encode(subscriber_id)
    assert await pool.fetchval("SELECT count(*) FROM operations WHERE type = 'autoCreateSubscriber'") == 0

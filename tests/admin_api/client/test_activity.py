"""A subscriber's sign-in in an app is activity: the Management API's lastActivityAt."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from catena import ids
from tests.conftest import Api

from .conftest import App, Made, codes_sent, wrong

PHONE = {"phoneCountryCode": "7", "phone": "9000000001"}


async def code_for(app: App, sms_log: Any, phone: dict[str, str] = PHONE) -> str:
    status, body = await app.post("/login/sms", phone)
    assert status == 200, body
    return codes_sent(sms_log)[-1][1]


async def last_activity(api: Api, subscriber_id: int) -> str | None:
    status, body = await api.get(f"/subscribers/{ids.encode(subscriber_id)}")
    assert status == 200, body
    return body["lastActivityAt"]  # type: ignore[no-any-return]


async def test_sign_in_sets_last_activity(app: App, api: Api, made: Made, sms_log: Any) -> None:
    subscriber_id = await made.subscriber()
    status, listed = await api.get("/subscribers")
    assert status == 200 and listed["subscribers"][0]["lastActivityAt"] is None
    code = await code_for(app, sms_log)
    assert (await app.post("/login/verify", {**PHONE, "code": wrong(code)}))[0] == 401
    assert await last_activity(api, subscriber_id) is None  # a wrong code is not a sign-in
    before = datetime.now(UTC).replace(microsecond=0)
    assert (await app.post("/login/verify", {**PHONE, "code": code}))[0] == 200
    stamp = await last_activity(api, subscriber_id)
    assert stamp is not None
    assert before <= datetime.fromisoformat(stamp.replace("Z", "+00:00")) <= datetime.now(UTC)


async def test_disabled_subscribers_refused_sign_in_is_no_activity(
    app: App, api: Api, made: Made, sms_log: Any
) -> None:
    subscriber_id = await made.subscriber(disabled=True)
    code = await code_for(app, sms_log)
    assert (await app.post("/login/verify", {**PHONE, "code": code}))[0] == 403
    assert await last_activity(api, subscriber_id) is None


async def test_auto_created_subscriber_has_signed_in(
    app: App, api: Api, made: Made, sms_log: Any, pool: asyncpg.Pool
) -> None:
    await made.settings(autoCreateSubscribers=True)
    code = await code_for(app, sms_log)
    status, body = await app.post("/login/verify", {**PHONE, "code": code})
    assert status == 200
    subscriber_id = ids.decode(body["subscriberId"])
    assert subscriber_id is not None and await last_activity(api, subscriber_id) is not None


async def test_activity_never_goes_back(
    app: App, api: Api, made: Made, sms_log: Any, pool: asyncpg.Pool
) -> None:
    subscriber_id = await made.subscriber()
    # A gateway whose clock runs ahead wrote a later time: a sign-in keeps it.
    await pool.execute(
        "UPDATE subscribers SET last_activity_at = now() + interval '1 hour' WHERE id = $1", subscriber_id
    )
    ahead = await last_activity(api, subscriber_id)
    code = await code_for(app, sms_log)
    assert (await app.post("/login/verify", {**PHONE, "code": code}))[0] == 200
    assert await last_activity(api, subscriber_id) == ahead

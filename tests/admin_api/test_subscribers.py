from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from catena import ids
from catena.tokens import TokenCodec
from tests.admin_api._subscribers_support import (
    Signals,
    count,
    create_subscriber,
    make_package,
    manager_session,
    op_types,
    person,
)
from tests.conftest import Api


@pytest.fixture
async def signals(database_url: str, pool: asyncpg.Pool) -> AsyncIterator[Signals]:
    listener = await Signals.listen(database_url)
    yield listener
    await listener.close()


def codec_of(api: Api) -> TokenCodec:
    from admin_api import keys

    codec: TokenCodec = api.client.app[keys.TOKENS]
    return codec


async def test_create_as_in_the_manual(api: Api, portal: Any, pool: asyncpg.Pool) -> None:
    status, body = await api.post("/subscribers", person())
    assert status == 200
    assert body["name"] == "Иван Петров"
    assert (body["phoneCountryCode"], body["phone"]) == ("7", "9161234567")
    assert body["portalId"] == portal.portalId and len(body["subscriberId"]) == 12
    assert body["packages"] == [] and body["disabled"] is False and body["maxSessions"] is None
    claims = codec_of(api).verify(body["playback_token"])
    assert ids.encode(claims.subscriber_id) == body["subscriberId"]
    assert ids.encode(claims.portal_id) == portal.portalId
    status, again = await api.get(f"/subscribers/{body['subscriberId']}")
    assert status == 200 and again == body
    row = await pool.fetchrow("SELECT * FROM operations")
    assert row["type"] == "createSubscriber" and ids.encode(row["subscriber_id"]) == body["subscriberId"]
    assert row["payload"]["name"] == "Иван Петров" and row["payload"]["phone"] == "9161234567"
    assert row["payload"]["managerEmail"] == "apiKey"
    assert body["playback_token"] not in str(row["payload"])


async def test_list_filters_and_pages(api: Api, pool: asyncpg.Pool) -> None:
    made = [await create_subscriber(api, phone=f"90000000{i:02d}") for i in range(5)]
    other_country = await create_subscriber(api, phone="9000000001", code="375")
    status, body = await api.get("/subscribers?phone=9000000001")
    assert status == 200
    assert [s["subscriberId"] for s in body["subscribers"]] == [
        made[1]["subscriberId"],
        other_country["subscriberId"],
    ]
    status, body = await api.get("/subscribers?phone=9000000001&phoneCountryCode=375")
    assert [s["subscriberId"] for s in body["subscribers"]] == [other_country["subscriberId"]]
    seen, cursor = [], None
    while True:
        status, body = await api.get("/subscribers?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200 and len(body["subscribers"]) <= 2
        seen += [s["subscriberId"] for s in body["subscribers"]]
        cursor = body.get("next")
        if not cursor:
            break
    assert seen == [s["subscriberId"] for s in [*made, other_country]]


async def test_list_by_package_and_disabled(api: Api, portal: Any, pool: asyncpg.Pool) -> None:
    sport = await make_package(pool, portal.portalId, "sport")
    fan, other = await create_subscriber(api, phone="1"), await create_subscriber(api, phone="2")
    await api.post("/packages-subscribers", {"subscriberId": fan["subscriberId"], "packageId": sport})
    await api.post(f"/subscribers/{other['subscriberId']}/disable")
    _, body = await api.get(f"/subscribers?packageId={sport}")
    assert [s["subscriberId"] for s in body["subscribers"]] == [fan["subscriberId"]]
    _, body = await api.get("/subscribers?disabled=true")
    assert [s["subscriberId"] for s in body["subscribers"]] == [other["subscriberId"]]


async def test_bad_list_queries(api: Api) -> None:
    for query, field in [
        ("phone=916abc", "phone"),
        ("phoneCountryCode=%2B7", "phoneCountryCode"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("cursor=forged", "cursor"),
        ("packageId=nope", "packageId"),
        ("disabled=maybe", "disabled"),
    ]:
        status, body = await api.get(f"/subscribers?{query}")
        assert status == 400, query
        assert body["field"] == field and body["message"], body


async def test_bad_input_changes_nothing(api: Api, pool: asyncpg.Pool) -> None:
    await create_subscriber(api)
    cases = [
        (person(phone="916123456a"), 400, "phone"),
        (person(phone="+79161234567"), 400, "phone"),
        (person(phone="916 123 45 67"), 400, "phone"),
        (person(phone=""), 400, "phone"),
        (person(code="+7"), 400, "phoneCountryCode"),
        (person(name=""), 400, "name"),
        (person(name="   "), 400, "name"),
        (person(name="x" * 201), 400, "name"),
        ({"name": "Без телефона", "phoneCountryCode": "7"}, 400, "phone"),
        (person(phone="9990001122") | {"maxSessions": 0}, 400, "maxSessions"),
        (person(phone="9990001122") | {"packages": []}, 400, "packages"),
        (person(), 409, "phone"),
    ]
    for body, status, field in cases:
        got, answer = await api.post("/subscribers", body)
        assert (got, answer.get("field")) == (status, field), (body, answer)
        assert answer["message"] and answer["error"]
    assert await count(pool, "subscribers") == 1
    assert await op_types(pool) == ["createSubscriber"]


async def test_update_fields_and_phone_change_rekeys(api: Api, pool: asyncpg.Pool, signals: Signals) -> None:
    made = await create_subscriber(api)
    path = f"/subscribers/{made['subscriberId']}"
    await signals.take()
    status, body = await api.put(path, {"name": "Иван Петрович Петров"})
    assert status == 200 and body["name"] == "Иван Петрович Петров"
    assert body["playback_token"] == made["playback_token"]
    assert await signals.take() == []  # a new name changes nobody's access
    status, body = await api.put(path, person(phone="9167654321", name="Иван Петрович Петров"))
    assert status == 200 and body["phone"] == "9167654321"
    assert body["playback_token"] != made["playback_token"]  # the new number signs in again
    assert await signals.take() == [("subscriber", [made["subscriberId"]])]
    status, body = await api.put(path, {"maxSessions": 5})
    assert body["maxSessions"] == 5 and await signals.take() == [("subscriber", [made["subscriberId"]])]
    status, body = await api.put(path, {"maxSessions": None})
    assert body["maxSessions"] is None
    ops = await pool.fetch("SELECT payload FROM operations WHERE type = 'updateSubscriber' ORDER BY id")
    assert [op["payload"]["fields"] for op in ops] == [["name"], ["phone"], ["maxSessions"], ["maxSessions"]]
    assert ops[1]["payload"]["previous"] == {"phone": "9161234567"}


async def test_update_conflicts_and_no_ops(api: Api, pool: asyncpg.Pool) -> None:
    first = await create_subscriber(api, phone="111")
    second = await create_subscriber(api, phone="222")
    path = f"/subscribers/{second['subscriberId']}"
    status, body = await api.put(path, {"phone": "111"})
    assert status == 409 and body["field"] == "phone"
    for bad, field in [
        ({"phone": "12-34"}, "phone"),
        ({"disabled": True}, "disabled"),
        ({"name": ""}, "name"),
    ]:
        status, body = await api.put(path, bad)
        assert status == 400 and body["field"] == field
    status, body = await api.put(path, {"phone": "222", "name": "Иван Петров"})
    assert status == 200 and body == (await api.get(path))[1]
    assert (await api.get(path))[1]["phone"] == "222"
    assert await op_types(pool) == ["createSubscriber", "createSubscriber"]
    assert first["phone"] == "111"


async def test_disable_enable(api: Api, pool: asyncpg.Pool, signals: Signals) -> None:
    made = await create_subscriber(api)
    path = f"/subscribers/{made['subscriberId']}"
    await signals.take()
    status, body = await api.post(f"{path}/disable", {"reason": "неоплата"})
    assert status == 200 and body["disabled"] is True and body["disabledReason"] == "неоплата"
    assert await signals.take() == [("subscriber", [made["subscriberId"]])]
    status, body = await api.post(f"{path}/disable", {"reason": "again"})
    assert status == 409 and body["error"] == "already_disabled"
    assert (await api.get(path))[1]["disabledReason"] == "неоплата"
    status, body = await api.post(f"{path}/enable")
    assert status == 200 and body["disabled"] is False and body["disabledReason"] is None
    assert (await api.post(f"{path}/enable"))[0] == 409
    status, body = await api.post(f"{path}/disable")  # no body at all: no reason
    assert status == 200 and body["disabledReason"] is None
    ops = await pool.fetch(
        "SELECT type, payload FROM operations WHERE type LIKE '%ableSubscriber' ORDER BY id"
    )
    assert [(o["type"], o["payload"].get("reason")) for o in ops] == [
        ("disableSubscriber", "неоплата"),
        ("enableSubscriber", None),
        ("disableSubscriber", None),
    ]
    assert (await api.post(f"{path}/disable", {"reason": "x" * 501}))[0] == 400


async def test_reset_playback_token(api: Api, pool: asyncpg.Pool, signals: Signals) -> None:
    made = await create_subscriber(api)
    await signals.take()
    status, body = await api.post(f"/subscribers/{made['subscriberId']}/reset_playback_token")
    assert status == 200 and body["playback_token"] != made["playback_token"]
    codec = codec_of(api)
    old, new = codec.verify(made["playback_token"]), codec.verify(body["playback_token"])
    current = await pool.fetchval("SELECT token_version FROM subscribers")
    # The gateway accepts a token only when its version is the subscriber's current one.
    assert new.version == current and old.version != current
    assert await signals.take() == [("subscriber", [made["subscriberId"]])]
    payload = await pool.fetchval("SELECT payload FROM operations WHERE type = 'resetPlaybackToken'")
    assert body["playback_token"] not in str(payload) and made["playback_token"] not in str(payload)


async def test_token_secret_rotation(
    aiohttp_client: Any, admin_settings: Any, api: Api, pool: asyncpg.Pool
) -> None:
    from msgspec import structs

    from admin_api.app import create_app

    made = await create_subscriber(api)
    old_secret = admin_settings.token_secrets
    rotated = structs.replace(
        admin_settings, token_secrets="new:a-brand-new-secret-0123456789-abcdefgh," + old_secret
    )
    rotated_api = api.as_(api.token)
    rotated_api.client = await aiohttp_client(create_app(rotated))
    _, now = await rotated_api.get(f"/subscribers/{made['subscriberId']}")
    codec = codec_of(rotated_api)
    # New tokens are signed with the new secret; the old token still verifies while
    # the old secret is configured second, and names the same subscriber and version.
    assert now["playback_token"] != made["playback_token"]
    assert codec.verify(made["playback_token"]) == codec.verify(now["playback_token"])
    retired = TokenCodec("new:a-brand-new-secret-0123456789-abcdefgh")
    assert retired.verify(now["playback_token"]).subscriber_id == ids.decode(made["subscriberId"])
    with pytest.raises(Exception, match="unknown signing key"):
        retired.verify(made["playback_token"])


async def test_delete_ends_subscriptions_keeps_sessions(
    api: Api, portal: Any, pool: asyncpg.Pool, signals: Signals
) -> None:
    made = await create_subscriber(api)
    basic = await make_package(pool, portal.portalId, "basic")
    await api.post("/packages-subscribers", {"subscriberId": made["subscriberId"], "packageId": basic})
    sid = ids.decode(made["subscriberId"])
    await pool.execute(
        """INSERT INTO play_sessions (id, portal_id, subscriber_id, channel_name, flussonic_id, opened_at,
                                      updated_at, active)
           VALUES ($1, $2, $3, 'news', 'f-1', now(), now(), false)""",
        ids.new_id(),
        ids.decode(portal.portalId),
        sid,
    )
    await signals.take()
    status, body = await api.delete(f"/subscribers/{made['subscriberId']}")
    assert status == 201
    assert (await api.get(f"/subscribers/{made['subscriberId']}"))[0] == 404
    assert await count(pool, "subscriptions") == 0 and await count(pool, "play_sessions") == 1
    assert await signals.take() == [("subscriber", [made["subscriberId"]])]
    ops = await pool.fetch("SELECT type, package_id, payload FROM operations ORDER BY id")
    assert [o["type"] for o in ops][-2:] == ["deletePackageSubscriber", "deleteSubscriber"]
    assert ops[-2]["payload"]["packageName"] == "basic" and ids.encode(ops[-2]["package_id"]) == basic
    assert (await api.delete(f"/subscribers/{made['subscriberId']}"))[0] == 404


async def test_unknown_and_other_portal_ids(api: Api, make_portal: Any, pool: asyncpg.Pool) -> None:
    other = await make_portal()
    theirs = await create_subscriber(api.as_(other.apiKey))
    mine = await create_subscriber(api, phone="5550000")
    for bad in (theirs["subscriberId"], "nope", "AAAAAAAAAAA.", "sK19SW3AAAE."):
        for method, suffix in [
            ("GET", ""),
            ("PUT", ""),
            ("DELETE", ""),
            ("POST", "/disable"),
            ("POST", "/enable"),
            ("POST", "/reset_playback_token"),
        ]:
            json = {"name": "x"} if method == "PUT" else None
            status, body = await api.call(method, f"/subscribers/{bad}{suffix}", json)
            assert status == 404, (method, suffix, bad, body)
    _, listed = await api.get("/subscribers")
    assert [s["subscriberId"] for s in listed["subscribers"]] == [mine["subscriberId"]]
    assert (await api.as_(other.apiKey).get(f"/subscribers/{theirs['subscriberId']}"))[1]["disabled"] is False


async def test_permissions(api: Api, pool: asyncpg.Pool) -> None:
    made = await create_subscriber(api)
    analyst = await manager_session(api, "analyst@b.co")
    status, _ = await analyst.get("/subscribers")
    assert status == 200
    for method, path, body in [
        ("POST", "/subscribers", person(phone="1")),
        ("PUT", f"/subscribers/{made['subscriberId']}", {"name": "x"}),
        ("DELETE", f"/subscribers/{made['subscriberId']}", None),
        ("POST", f"/subscribers/{made['subscriberId']}/disable", None),
        ("POST", f"/subscribers/{made['subscriberId']}/reset_playback_token", None),
    ]:
        status, answer = await analyst.call(method, path, body)
        assert status == 403 and answer["error"] == "permission_denied", (method, path)
    billing = await manager_session(api, "billing@b.co", isSubscriberAdmin=True)
    status, _ = await billing.post("/subscribers", person(phone="2"))
    assert status == 200
    payload = await pool.fetchval(
        "SELECT payload FROM operations WHERE type = 'createSubscriber' ORDER BY id DESC"
    )
    assert payload["managerEmail"] == "billing@b.co"

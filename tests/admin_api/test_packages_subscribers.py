from __future__ import annotations

from typing import Any

import asyncpg

from catena import ids
from tests.admin_api._subscribers_support import (
    Signals,
    count,
    create_subscriber,
    make_free,
    make_package,
    manager_session,
    op_types,
)
from tests.conftest import Api


def link(subscriber: dict[str, Any], package_id: str) -> dict[str, str]:
    return {"subscriberId": subscriber["subscriberId"], "packageId": package_id}


async def test_subscribe_as_in_the_manual(api: Api, portal: Any, pool: asyncpg.Pool) -> None:
    made = await create_subscriber(api)
    basic = await make_package(pool, portal.portalId, "basic")
    status, body = await api.post("/packages-subscribers", link(made, basic))
    assert status == 200
    assert body == {"subscriberId": made["subscriberId"], "packageId": basic, "portalId": portal.portalId}
    _, now = await api.get(f"/subscribers/{made['subscriberId']}")
    assert now["packages"] == [basic]
    row = await pool.fetchrow("SELECT * FROM operations WHERE type = 'createPackageSubscriber'")
    assert ids.encode(row["subscriber_id"]) == made["subscriberId"] and ids.encode(row["package_id"]) == basic
    assert row["payload"]["packageName"] == "basic" and row["payload"]["phone"] == "9161234567"


async def test_subscribe_twice_is_a_conflict(api: Api, portal: Any, pool: asyncpg.Pool) -> None:
    made = await create_subscriber(api)
    basic = await make_package(pool, portal.portalId, "basic")
    await api.post("/packages-subscribers", link(made, basic))
    status, body = await api.post("/packages-subscribers", link(made, basic))
    assert status == 409 and body["error"] == "already_subscribed" and body["message"]
    assert await count(pool, "subscriptions") == 1
    assert await op_types(pool) == ["createSubscriber", "createPackageSubscriber"]


async def test_unknown_and_other_portal_ids(
    api: Api, portal: Any, make_portal: Any, pool: asyncpg.Pool
) -> None:
    other = await make_portal()
    mine = await create_subscriber(api)
    theirs = await create_subscriber(api.as_(other.apiKey), phone="111")
    my_package = await make_package(pool, portal.portalId, "basic")
    their_package = await make_package(pool, other.portalId, "premium")
    cases = [
        (link(mine, their_package), "packageId"),
        (link(theirs, my_package), "subscriberId"),
        (link(mine, "premium-package-id"), "packageId"),
        (link(mine, "pK19SW3AAAE."), "packageId"),
        ({"subscriberId": "sK19SW3AAAE.", "packageId": my_package}, "subscriberId"),
        (link(mine, my_package) | {"portalId": other.portalId}, "portalId"),
    ]
    for body, field in cases:
        for method in ("POST", "DELETE"):
            status, answer = await api.call(method, "/packages-subscribers", body)
            assert (status, answer["field"]) == (404, field), (method, body, answer)
    assert await count(pool, "subscriptions") == 0
    assert await op_types(pool) == ["createSubscriber", "createSubscriber"]
    status, body = await api.post(
        "/packages-subscribers", link(mine, my_package) | {"portalId": portal.portalId}
    )
    assert status == 200


async def test_unsubscribe(api: Api, portal: Any, pool: asyncpg.Pool) -> None:
    made = await create_subscriber(api)
    basic = await make_package(pool, portal.portalId, "basic")
    await api.post("/packages-subscribers", link(made, basic))
    status, body = await api.delete("/packages-subscribers", link(made, basic))
    assert status == 201
    assert (await api.get(f"/subscribers/{made['subscriberId']}"))[1]["packages"] == []
    status, body = await api.delete("/packages-subscribers", link(made, basic))
    assert status == 404 and body["error"] == "not_subscribed" and body["field"] == "packageId"
    assert await op_types(pool) == ["createSubscriber", "createPackageSubscriber", "deletePackageSubscriber"]
    payload = await pool.fetchval("SELECT payload FROM operations WHERE type = 'deletePackageSubscriber'")
    assert payload["packageName"] == "basic"


async def test_free_package_is_not_an_explicit_subscription(
    api: Api, portal: Any, pool: asyncpg.Pool
) -> None:
    made = await create_subscriber(api)
    demo = await make_package(pool, portal.portalId, "demo")
    await make_free(pool, portal.portalId, demo)
    status, body = await api.delete("/packages-subscribers", link(made, demo))
    assert status == 404 and body["error"] == "free_package"
    assert "free" in body["message"] and demo in body["message"]
    # An explicit subscription to a free package is possible and is then removable.
    assert (await api.post("/packages-subscribers", link(made, demo)))[0] == 200
    assert (await api.delete("/packages-subscribers", link(made, demo)))[0] == 201


async def test_malformed_requests(api: Api, portal: Any, pool: asyncpg.Pool) -> None:
    made = await create_subscriber(api)
    basic = await make_package(pool, portal.portalId, "basic")
    for body, field in [
        ({"subscriberId": made["subscriberId"]}, "packageId"),
        ({"packageId": basic}, "subscriberId"),
        (link(made, basic) | {"extra": 1}, "extra"),
        ({"subscriberId": 5, "packageId": basic}, "subscriberId"),
    ]:
        status, answer = await api.post("/packages-subscribers", body)
        assert (status, answer.get("field")) == (400, field), answer
    status, answer = await api.post(
        "/packages-subscribers", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and answer["error"] == "malformed_json"
    status, answer = await api.post(
        "/packages-subscribers", data=b"a=b", headers={"Content-Type": "text/plain"}
    )
    assert status == 415
    assert (await api.delete("/packages-subscribers"))[0] == 400
    assert await count(pool, "subscriptions") == 0


async def test_needs_subscriber_admin(api: Api, portal: Any, pool: asyncpg.Pool) -> None:
    made = await create_subscriber(api)
    basic = await make_package(pool, portal.portalId, "basic")
    content = await manager_session(api, "content@b.co", isContentAdmin=True)
    assert (await content.post("/packages-subscribers", link(made, basic)))[0] == 403
    billing = await manager_session(api, "billing@b.co", isSubscriberAdmin=True)
    assert (await billing.post("/packages-subscribers", link(made, basic)))[0] == 200
    assert (await content.delete("/packages-subscribers", link(made, basic)))[0] == 403
    assert (await billing.delete("/packages-subscribers", link(made, basic)))[0] == 201


async def test_entitlement_signals(api: Api, portal: Any, pool: asyncpg.Pool, database_url: str) -> None:
    signals = await Signals.listen(database_url)
    start = await pool.fetchval("SELECT version FROM entitlement_versions")
    try:
        made = await create_subscriber(api)
        basic = await make_package(pool, portal.portalId, "basic")
        assert await signals.take() == [("subscriber", [made["subscriberId"]])]
        await api.post("/packages-subscribers", link(made, basic))
        assert await signals.take() == [("subscriber", [made["subscriberId"]])]
        await api.post("/packages-subscribers", link(made, basic))  # 409: nothing changed, no signal
        await api.delete("/packages-subscribers", link(made, basic))
        assert await signals.take() == [("subscriber", [made["subscriberId"]])]
        await api.delete("/packages-subscribers", link(made, basic))  # 404
        assert await signals.take() == []
        # Three changes, three versions: failures left no bump behind.
        assert await pool.fetchval("SELECT version FROM entitlement_versions") == start + 3
    finally:
        await signals.close()

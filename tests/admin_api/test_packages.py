from __future__ import annotations

from typing import Any, cast

import asyncpg
import pytest

from catena import ids
from tests.admin_api.content_support import (
    entitlement_version,
    listening,
    login_staff,
    op_types,
    operations_of,
    portal_id,
)
from tests.conftest import Api


async def create(api: Api, path: str, body: dict[str, Any]) -> dict[str, Any]:
    status, created = await api.post(path, body)
    assert status == 200, created
    return cast(dict[str, Any], created)


async def package_count(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        count: int = await conn.fetchval("SELECT count(*) FROM packages")
        return count


async def subscribe(pool: asyncpg.Pool, portal: Any, package: dict[str, Any], phone: str) -> int:
    """A subscriber with an explicit subscription, written the way the subscribers API stores it."""
    subscriber_id = ids.new_id()
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO subscribers (id, portal_id, name, phone_country_code, phone) "
            "VALUES ($1, $2, 'Иван', '7', $3)",
            subscriber_id,
            portal_id(portal),
            phone,
        )
        await conn.execute(
            "INSERT INTO subscriptions (subscriber_id, package_id, portal_id) VALUES ($1, $2, $3)",
            subscriber_id,
            ids.decode(package["packageId"]),
            portal_id(portal),
        )
    return subscriber_id


async def test_create_get_list_update(api: Api, pool: asyncpg.Pool, portal: Any) -> None:
    package = await create(
        api, "/packages", {"name": "premium", "description": "Премиум пакет с HD каналами"}
    )
    assert package["portalId"] == portal.portalId and package["channels"] == []
    assert (await api.get(f"/packages/{package['packageId']}"))[1] == package
    assert (await api.get("/packages"))[1] == {"packages": [package]}
    status, body = await api.put(f"/packages/{package['packageId']}", {"description": "Премиум + 4K"})
    assert status == 200 and body["description"] == "Премиум + 4K" and body["name"] == "premium"
    status, body = await api.put(f"/packages/{package['packageId']}", {**package, "name": "premium-hd"})
    assert status == 200 and body["name"] == "premium-hd", "a package may be renamed (§3.2.6)"
    ops = await operations_of(pool, portal)
    assert [r["type"] for r in ops] == ["createPackage", "updatePackage", "updatePackage"]
    assert ops[0]["package_id"] == ids.decode(package["packageId"])
    assert ops[0]["payload"]["packageName"] == "premium"
    assert ops[2]["payload"]["previousName"] == "premium"


async def test_description_defaults_to_empty(api: Api) -> None:
    assert (await create(api, "/packages", {"name": "basic"}))["description"] == ""


@pytest.mark.parametrize("name", ["a", "x" * 21, "премиум", "pre mium", "pre.mium", "", None, 7])
async def test_name_rules(api: Api, pool: asyncpg.Pool, portal: Any, name: Any) -> None:
    status, body = await api.post("/packages", {"name": name})
    assert status == 400 and body["field"] == "name"
    assert await package_count(pool) == 0
    assert await operations_of(pool, portal) == []


async def test_duplicate_names(api: Api, pool: asyncpg.Pool, portal: Any) -> None:
    await create(api, "/packages", {"name": "basic"})
    premium = await create(api, "/packages", {"name": "premium"})
    status, body = await api.post("/packages", {"name": "basic"})
    assert status == 409 and body["message"] == "Name must be unique" and body["field"] == "name"
    status, body = await api.put(f"/packages/{premium['packageId']}", {"name": "basic"})
    assert status == 409 and body["field"] == "name"
    assert (await api.get(f"/packages/{premium['packageId']}"))[1]["name"] == "premium"
    assert await op_types(pool, portal) == ["createPackage", "createPackage"]


async def test_channels_field_is_read_only(api: Api) -> None:
    package = await create(api, "/packages", {"name": "basic"})
    status, body = await api.put(f"/packages/{package['packageId']}", {"channels": ["sport1"]})
    assert status == 400 and body["field"] == "channels"
    status, body = await api.put(f"/packages/{package['packageId']}", {"unknown": 1})
    assert status == 400 and "unknown" in body["message"]


async def test_two_portals_may_share_names(api: Api, make_portal: Any) -> None:
    other = api.as_((await make_portal()).apiKey)
    await create(api, "/packages", {"name": "basic"})
    theirs = await create(other, "/packages", {"name": "basic"})
    for status, body in [
        await api.get(f"/packages/{theirs['packageId']}"),
        await api.put(f"/packages/{theirs['packageId']}", {"description": "x"}),
        await api.delete(f"/packages/{theirs['packageId']}"),
    ]:
        assert status == 404 and body["field"] == "id"
    assert [p["name"] for p in (await api.get("/packages"))[1]["packages"]] == ["basic"]


async def test_delete_an_unused_package(api: Api, pool: asyncpg.Pool, portal: Any, database_url: str) -> None:
    package = await create(api, "/packages", {"name": "basic"})
    channel = await create(api, "/channels", {"name": "sport1", "title": "Спорт"})
    await create(
        api, "/channels-packages", {"channelId": channel["channelId"], "packageId": package["packageId"]}
    )
    async with listening(database_url) as signals:
        status, body = await api.delete(f"/packages/{package['packageId']}")
        assert status == 201 and body == {}
        [signal] = await signals.wait_for(1)
    assert (signal.kind, signal.ids) == ("package", [ids.decode(package["packageId"])])
    assert (await api.get(f"/packages/{package['packageId']}"))[0] == 404
    assert (await api.get(f"/channels/{channel['channelId']}"))[1]["packages"] == []
    deleted = (await operations_of(pool, portal))[-1]
    assert deleted["type"] == "deletePackage" and deleted["package_id"] == ids.decode(package["packageId"])


async def test_delete_refused_while_subscribed(api: Api, pool: asyncpg.Pool, portal: Any) -> None:
    package = await create(api, "/packages", {"name": "premium"})
    await subscribe(pool, portal, package, "9001112233")
    version = await entitlement_version(pool, portal)
    status, body = await api.delete(f"/packages/{package['packageId']}")
    assert status == 409 and body["error"] == "package_subscribed"
    assert "1 subscriber" in body["message"] and "force=true" in body["message"]
    assert (await api.get(f"/packages/{package['packageId']}"))[0] == 200
    assert await op_types(pool, portal) == ["createPackage"]
    assert await entitlement_version(pool, portal) == version


async def test_delete_refused_while_free(api: Api, pool: asyncpg.Pool, portal: Any) -> None:
    package = await create(api, "/packages", {"name": "trial"})
    assert (await api.post(f"/portal/free-packages/{package['packageId']}"))[0] == 201
    status, body = await api.delete(f"/packages/{package['packageId']}")
    assert status == 409 and body["error"] == "package_free" and "free package" in body["message"]
    assert (await api.get("/portal"))[1]["freePackages"] == [package["packageId"]]


async def test_force_delete_ends_subscriptions_and_free_status(
    api: Api, pool: asyncpg.Pool, portal: Any, database_url: str
) -> None:
    package = await create(api, "/packages", {"name": "premium"})
    other = await create(api, "/packages", {"name": "basic"})
    subscribers = [await subscribe(pool, portal, package, f"900000000{i}") for i in range(3)]
    keeper = await subscribe(pool, portal, other, "9009999999")
    await api.post(f"/portal/free-packages/{package['packageId']}")
    async with listening(database_url) as signals:
        status, _ = await api.delete(f"/packages/{package['packageId']}?force=true")
        assert status == 201
        await signals.wait_for(3)
    package_id = ids.decode(package["packageId"])
    assert sorted(signals.kinds()) == [
        ("package", [package_id]),
        ("portal", []),
        ("subscriber", sorted(subscribers)),
    ]
    async with pool.acquire() as conn:
        remaining = await conn.fetch("SELECT subscriber_id FROM subscriptions")
    assert [r["subscriber_id"] for r in remaining] == [keeper]
    assert (await api.get("/portal"))[1]["freePackages"] == []
    ops = (await operations_of(pool, portal))[-5:]
    assert [r["type"] for r in ops] == ["deletePackageSubscriber"] * 3 + [
        "removeFreePackage",
        "deletePackage",
    ]
    assert sorted(r["subscriber_id"] for r in ops[:3]) == sorted(subscribers)
    assert all(r["package_id"] == package_id for r in ops)
    assert ops[0]["payload"]["packageName"] == "premium" and ops[0]["payload"]["phone"].startswith("900")
    assert ops[-1]["payload"]["endedSubscriptions"] == 3


@pytest.mark.parametrize("force", ["maybe", "2"])
async def test_force_must_be_a_boolean(api: Api, force: str) -> None:
    package = await create(api, "/packages", {"name": "basic"})
    status, body = await api.delete(f"/packages/{package['packageId']}?force={force}")
    assert status == 400 and body["field"] == "force"
    assert (await api.get(f"/packages/{package['packageId']}"))[0] == 200


async def link_pair(api: Api) -> tuple[dict[str, Any], dict[str, Any]]:
    channel = await create(api, "/channels", {"name": "sport1", "title": "Спорт HD"})
    package = await create(api, "/packages", {"name": "premium"})
    return channel, package


async def test_link_twice_is_409(api: Api, pool: asyncpg.Pool, portal: Any, database_url: str) -> None:
    channel, package = await link_pair(api)
    link = {"channelId": channel["channelId"], "packageId": package["packageId"]}
    async with listening(database_url) as signals:
        status, body = await api.post("/channels-packages", link)
        assert status == 200 and body == {**link, "portalId": portal.portalId}
        [signal] = await signals.wait_for(1)
    assert (signal.kind, signal.ids) == ("package", [ids.decode(package["packageId"])])
    status, body = await api.post("/channels-packages", link)
    assert status == 409 and body["error"] == "already_linked"
    assert await op_types(pool, portal) == ["createChannel", "createPackage", "addChannelToPackage"]


async def test_unlink_what_is_not_linked_is_404(api: Api, pool: asyncpg.Pool, portal: Any) -> None:
    channel, package = await link_pair(api)
    status, body = await api.delete(
        "/channels-packages", {"channelId": channel["channelId"], "packageId": package["packageId"]}
    )
    assert status == 404 and body["error"] == "not_linked"
    assert await op_types(pool, portal) == ["createChannel", "createPackage"]


async def test_link_with_other_portals_ids_is_404(api: Api, make_portal: Any, pool: asyncpg.Pool) -> None:
    other_portal = await make_portal()
    other = api.as_(other_portal.apiKey)
    channel, package = await link_pair(api)
    their_channel, their_package = await link_pair(other)
    cases = [
        ({"channelId": their_channel["channelId"], "packageId": package["packageId"]}, "channelId"),
        ({"channelId": channel["channelId"], "packageId": their_package["packageId"]}, "packageId"),
        ({"channelId": "nonsense", "packageId": package["packageId"]}, "channelId"),
        ({"channelId": channel["channelId"], "packageId": "AAAAAAAAAAE."}, "packageId"),
        ({**_link(channel, package), "portalId": other_portal.portalId}, "portalId"),
        ({**_link(channel, package), "portalId": "portal123"}, "portalId"),
    ]
    for body, field in cases:
        for method in (api.post, api.delete):
            status, error = await method("/channels-packages", body)
            assert status == 404 and error["field"] == field, (body, error)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM channel_packages") == 0


def _link(channel: dict[str, Any], package: dict[str, Any]) -> dict[str, str]:
    return {"channelId": channel["channelId"], "packageId": package["packageId"]}


@pytest.mark.parametrize(
    ("body", "field"),
    [({"channelId": "x"}, "packageId"), ({"packageId": "x", "channelId": 5}, "channelId"), ([], None)],
)
async def test_malformed_link_bodies_are_400(api: Api, body: Any, field: str | None) -> None:
    status, error = await api.post("/channels-packages", body)
    assert status == 400 and error.get("field") == field


async def test_permissions(api: Api, pool: asyncpg.Pool) -> None:
    content = await login_staff(api, "content@example.com", isContentAdmin=True)
    subscribers = await login_staff(api, "subs@example.com", isSubscriberAdmin=True)
    analyst = await login_staff(api, "analyst@example.com")
    channel = await create(content, "/channels", {"name": "sport1", "title": "Спорт"})
    package = await create(content, "/packages", {"name": "premium"})
    link = _link(channel, package)
    for reader in (subscribers, analyst):
        assert (await reader.get("/packages"))[0] == 200
        assert (await reader.get(f"/packages/{package['packageId']}"))[0] == 200
        for status, _ in [
            await reader.post("/packages", {"name": "nope"}),
            await reader.put(f"/packages/{package['packageId']}", {"description": "x"}),
            await reader.delete(f"/packages/{package['packageId']}"),
            await reader.post("/channels-packages", link),
        ]:
            assert status == 403
    assert (await content.post("/channels-packages", link))[0] == 200
    for reader in (subscribers, analyst):
        assert (await reader.delete("/channels-packages", link))[0] == 403
    assert (await content.delete("/channels-packages", link))[0] == 201
    assert (await content.delete(f"/packages/{package['packageId']}"))[0] == 201
    assert await package_count(pool) == 0


async def test_description_cannot_hold_nul(api: Api, pool: asyncpg.Pool) -> None:
    status, body = await api.post("/packages", {"name": "basic", "description": "a\u0000b"})
    assert status == 400 and body["field"] == "description"
    assert await package_count(pool) == 0


async def test_packages_page(api: Api) -> None:
    names = [f"pkg{i:02d}" for i in range(12)]
    for name in names:
        await create(api, "/packages", {"name": name})
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 5}
    while True:
        status, body = await api.get("/packages", params=params)
        assert status == 200 and len(body["packages"]) <= 5
        seen += [p["name"] for p in body["packages"]]
        if not body.get("next"):
            break
        params["cursor"] = body["next"]
    assert seen == names
    status, body = await api.get("/packages?name=pkg03&name=pkg07")
    assert [p["name"] for p in body["packages"]] == ["pkg03", "pkg07"]

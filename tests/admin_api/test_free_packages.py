from __future__ import annotations

from typing import Any

import asyncpg

from catena import ids
from tests.admin_api.content_support import entitlement_version, listening, login_staff, operations_of
from tests.conftest import Api


async def package(api: Api, name: str = "trial") -> str:
    status, body = await api.post("/packages", {"name": name})
    assert status == 200, body
    return str(body["packageId"])


async def test_add_and_remove(api: Api, pool: asyncpg.Pool, portal: Any, database_url: str) -> None:
    trial, basic = await package(api, "trial"), await package(api, "basic")
    async with listening(database_url) as signals:
        status, body = await api.post(f"/portal/free-packages/{trial}")
        assert status == 201 and body["freePackages"] == [trial]
        [signal] = await signals.wait_for(1)
    assert signal.kind == "portal" and signal.portal_id == ids.decode(portal.portalId)
    await api.post(f"/portal/free-packages/{basic}")
    assert (await api.get("/portal"))[1]["freePackages"] == [trial, basic]

    status, body = await api.delete(f"/portal/free-packages/{trial}")
    assert status == 201 and body["freePackages"] == [basic]
    assert (await api.get("/portal"))[1]["freePackages"] == [basic]
    assert (await api.get(f"/packages/{trial}"))[0] == 200, "the package itself stays"
    ops = await operations_of(pool, portal)
    assert [(r["type"], r["package_id"]) for r in ops[2:]] == [
        ("addFreePackage", ids.decode(trial)),
        ("addFreePackage", ids.decode(basic)),
        ("removeFreePackage", ids.decode(trial)),
    ]
    assert ops[2]["payload"]["packageName"] == "trial"


async def test_adding_twice_is_409_and_changes_nothing(api: Api, pool: asyncpg.Pool, portal: Any) -> None:
    trial = await package(api)
    await api.post(f"/portal/free-packages/{trial}")
    version = await entitlement_version(pool, portal)
    status, body = await api.post(f"/portal/free-packages/{trial}")
    assert status == 409 and body["error"] == "already_free"
    assert (await api.get("/portal"))[1]["freePackages"] == [trial]
    assert [r["type"] for r in await operations_of(pool, portal)] == ["createPackage", "addFreePackage"]
    assert await entitlement_version(pool, portal) == version


async def test_removing_one_that_is_not_free_is_404(api: Api, pool: asyncpg.Pool, portal: Any) -> None:
    trial = await package(api)
    status, body = await api.delete(f"/portal/free-packages/{trial}")
    assert status == 404 and body["error"] == "not_free" and body["field"] == "packageId"
    assert [r["type"] for r in await operations_of(pool, portal)] == ["createPackage"]


async def test_unknown_and_other_portals_packages_are_404(api: Api, make_portal: Any) -> None:
    theirs = await package(api.as_((await make_portal()).apiKey))
    for target in (theirs, "AAAAAAAAAAE.", "basicKl9SW3AAAE."):
        for method in (api.post, api.delete):
            status, body = await method(f"/portal/free-packages/{target}")
            assert status == 404 and body["field"] == "packageId"
    assert (await api.get("/portal"))[1]["freePackages"] == []


async def test_permissions(api: Api) -> None:
    trial = await package(api)
    content = await login_staff(api, "content@example.com", isContentAdmin=True)
    subscribers = await login_staff(api, "subs@example.com", isSubscriberAdmin=True)
    analyst = await login_staff(api, "analyst@example.com")
    for reader in (subscribers, analyst):
        assert (await reader.post(f"/portal/free-packages/{trial}"))[0] == 403
    assert (await content.post(f"/portal/free-packages/{trial}"))[0] == 201
    for reader in (subscribers, analyst):
        assert (await reader.get("/portal"))[1]["freePackages"] == [trial]
        assert (await reader.delete(f"/portal/free-packages/{trial}"))[0] == 403
    assert (await content.delete(f"/portal/free-packages/{trial}"))[0] == 201

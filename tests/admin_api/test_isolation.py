from __future__ import annotations

from typing import Any

import asyncpg

from tests.conftest import Api


async def test_two_portals_never_see_each_others_managers(
    client: Any, make_portal: Any, pool: asyncpg.Pool
) -> None:
    first, second = await make_portal(), await make_portal()
    one, two = Api(client, first.apiKey), Api(client, second.apiKey)
    _, created = await one.post(
        "/managers", {"email": "staff@one.tv", "name": "Staff", "password": "Secure-Pass-123"}
    )
    _, listed = await two.get("/managers")
    assert [m["managerId"] for m in listed["managers"]] == [second.ownerId]
    target = f"/managers/{created['managerId']}"
    assert (await two.get(target))[0] == 404
    assert (await two.put(target, {"name": "Hijacked"}))[0] == 404
    assert (await two.delete(target))[0] == 404
    assert (await two.get(f"/managers/{first.ownerId}"))[0] == 404
    _, still = await one.get(target)
    assert still["name"] == "Staff"
    _, portal = await two.get("/portal")
    assert portal["portalId"] == second.portalId
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM managers WHERE portal_id <> (SELECT id FROM portals WHERE name = $1)",
            first.name,
        )
        == 1
    )


async def test_same_email_in_two_portals_is_two_managers(client: Any, make_portal: Any) -> None:
    first, second = await make_portal(), await make_portal()
    body = {"email": "same@company.com", "name": "Same", "password": "Secure-Pass-123"}
    assert (await Api(client, first.apiKey).post("/managers", body))[0] == 200
    assert (await Api(client, second.apiKey).post("/managers", body))[0] == 200

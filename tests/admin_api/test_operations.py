from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from admin_api import operations
from catena import ids
from tests.admin_api._subscribers_support import create_subscriber, insert_operations, make_package
from tests.conftest import CURSORS, Api


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def all_pages(api: Api, query: str, limit: int = 1000) -> tuple[list[str], int]:
    """Every operation id a query returns, following ``next``, and the number of pages."""
    seen: list[str] = []
    cursor, pages = None, 0
    while True:
        suffix = f"&cursor={cursor}" if cursor else ""
        status, body = await api.get(f"/operations?{query}&limit={limit}{suffix}")
        assert status == 200, body
        pages += 1
        seen += [op["operationId"] for op in body["operations"]]
        cursor = body.get("next")
        if not cursor:
            return seen, pages


async def test_every_mutation_is_logged_oldest_first(api: Api, portal: Any, pool: asyncpg.Pool) -> None:
    basic = await make_package(pool, portal.portalId, "basic")
    made = await create_subscriber(api)
    await api.post("/packages-subscribers", {"subscriberId": made["subscriberId"], "packageId": basic})
    await api.post(f"/subscribers/{made['subscriberId']}/disable", {"reason": "неоплата"})
    status, body = await api.get("/operations")
    assert status == 200 and body.get("next") is None
    ops = body["operations"]
    assert [op["type"] for op in ops] == ["createSubscriber", "createPackageSubscriber", "disableSubscriber"]
    first = ops[0]
    assert set(first) == {
        "operationId",
        "type",
        "portalId",
        "subscriberId",
        "packageId",
        "createdAt",
        "updatedAt",
        "payload",
    }
    assert first["packageId"] is None and first["subscriberId"] == made["subscriberId"]
    assert first["portalId"] == portal.portalId and first["createdAt"].endswith("Z")
    assert ops[1]["packageId"] == basic and ops[1]["payload"]["packageName"] == "basic"
    assert ops[2]["payload"]["reason"] == "неоплата"
    for op in ops:
        status, one = await api.get(f"/operations/{op['operationId']}")
        assert status == 200 and one == op
        # createdAt is the instant the id was made: date filters and id ranges agree.
        made_at = datetime.fromtimestamp(ids.timestamp_ms(ids.decode(op["operationId"]) or 0) / 1000, UTC)
        assert op["createdAt"] == made_at.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_filters(api: Api, portal: Any, pool: asyncpg.Pool) -> None:
    basic = await make_package(pool, portal.portalId, "basic")
    sport = await make_package(pool, portal.portalId, "sport")
    a, b, c = [await create_subscriber(api, phone=p) for p in ("1", "2", "3")]
    for who, package in [(a, basic), (b, sport), (c, basic)]:
        await api.post("/packages-subscribers", {"subscriberId": who["subscriberId"], "packageId": package})
    await api.delete("/packages-subscribers", {"subscriberId": a["subscriberId"], "packageId": basic})

    async def types(query: str) -> list[tuple[str, str | None]]:
        status, body = await api.get(f"/operations?{query}")
        assert status == 200, body
        return [(op["type"], op["subscriberId"]) for op in body["operations"]]

    assert await types(f"subscriberId={a['subscriberId']}") == [
        ("createSubscriber", a["subscriberId"]),
        ("createPackageSubscriber", a["subscriberId"]),
        ("deletePackageSubscriber", a["subscriberId"]),
    ]
    both = await types(
        f"subscriberId={a['subscriberId']}&subscriberId={b['subscriberId']}&type=createSubscriber"
    )
    assert both == [("createSubscriber", a["subscriberId"]), ("createSubscriber", b["subscriberId"])]
    assert await types(f"packageId={sport}") == [("createPackageSubscriber", b["subscriberId"])]
    subscriptions = await types("type=createPackageSubscriber&type=deletePackageSubscriber")
    assert [t for t, _ in subscriptions] == ["createPackageSubscriber"] * 3 + ["deletePackageSubscriber"]
    assert await types("type=deletePackage") == []
    # Another portal's id filters to nothing rather than leaking anything.
    assert await types("subscriberId=AAAAAAAAAAA.") == []


async def test_bad_filters(api: Api) -> None:
    for query, field in [
        ("type=createSubscriber&type=fooBar", "type"),
        ("subscriberId=nope", "subscriberId"),
        ("packageId=premium-package-id", "packageId"),
        ("created_at_gte=2024-13-01", "created_at_gte"),
        ("created_at_gte=2024-10-32", "created_at_gte"),
        ("created_at_gte=yesterday", "created_at_gte"),
        ("created_at_lt=2024/10/01", "created_at_lt"),
        ("created_at_lt=2024-10-01T25:00:00Z", "created_at_lt"),
        ("created_at_lt=", "created_at_lt"),
        ("created_at_gte=2024-11-01&created_at_lt=2024-10-01", "created_at_lt"),
        ("limit=1001", "limit"),
        ("limit=0", "limit"),
        ("cursor=bm90IGEgY3Vyc29y", "cursor"),
    ]:
        status, body = await api.get(f"/operations?{query}")
        assert (status, body.get("field")) == (400, field), (query, body)
        assert body["message"]
    status, body = await api.get("/operations?type=fooBar")
    assert "fooBar" in body["message"] and "createPackageSubscriber" in body["message"]
    for bad in ("nope", "AAAAAAAAAAA.", "oK19SW3AAAE."):
        assert (await api.get(f"/operations/{bad}"))[0] == 404


async def test_date_bounds_and_formats(api: Api, portal: Any, pool: asyncpg.Pool) -> None:
    instants = [
        at("2024-09-30T23:59:59.999"),
        at("2024-10-01T00:00:00"),
        at("2024-10-16T10:00:00"),
        at("2024-10-31T23:59:59.999"),
        at("2024-11-01T00:00:00"),
    ]
    made = await insert_operations(pool, portal.portalId, instants)
    october = [ids.encode(i) for i in made[1:4]]
    for gte, lt in [
        ("2024-10-01", "2024-11-01"),
        ("2024-10-01T00:00:00Z", "2024-11-01T00:00:00Z"),
        ("2024-10-01T03:00:00%2B03:00", "2024-10-31T20:00:00-04:00"),
        # What the manual's pro-rata script sends: isoformat() of an aware datetime, '+' unencoded.
        ("2024-10-01T00:00:00+00:00", "2024-11-01T00:00:00+00:00"),
        ("2024-10-01T00:00:00", "2024-11-01T00:00:00"),
    ]:
        seen, _ = await all_pages(api, f"created_at_gte={gte}&created_at_lt={lt}")
        assert seen == october, (gte, lt)
    seen, _ = await all_pages(api, "created_at_gte=2024-10-16T10:00:00Z")
    assert seen == [ids.encode(i) for i in made[2:]]
    seen, _ = await all_pages(api, "created_at_lt=2024-10-01")
    assert seen == [ids.encode(made[0])]


async def test_paging_50000_operations(api: Api, portal: Any, make_portal: Any, pool: asyncpg.Pool) -> None:
    other = await make_portal()
    start = datetime.now(UTC) - timedelta(days=70)
    # Spread over three months (several partitions and the default one), 2 minutes apart.
    instants = [start + timedelta(minutes=2 * n) for n in range(50_000)]
    mine = await insert_operations(pool, portal.portalId, instants)
    await insert_operations(pool, other.portalId, instants[::50], node=1)
    seen, pages = await all_pages(api, "type=createSubscriber", limit=1000)
    assert pages == 50
    assert seen == [ids.encode(i) for i in mine]  # each once, oldest first
    seen, _ = await all_pages(api, "", limit=1000)
    assert len(seen) == 50_000 and len(set(seen)) == 50_000


async def test_date_filters_prune_partitions(portal: Any, pool: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    month = now.strftime("%Y-%m-01")
    query = operations.OperationsQuery(created_at_gte=month, created_at_lt=now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    where = operations._where(ids.decode(portal.portalId) or 0, query, None)
    sql = operations._LIST.format(where=where.sql, limit=where.next_param())
    async with pool.acquire() as conn:
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *where.args, 100))
    this_month = "operations_y" + now.strftime("%Ym%m")
    scanned = {name for name in plan.replace("(", " ").split() if name.startswith("operations_")}
    assert this_month in plan
    assert not any(name.startswith("operations_y") and this_month not in name for name in scanned), plan
    assert "operations_default" not in plan


async def test_forged_cursors_are_400_on_every_list(api: Api) -> None:
    for path in ("/operations", "/subscribers", "/play-sessions", "/webhooks"):
        tag = path.strip("/")
        for value in (99999999999999999999, 9223372036854775807, -9223372036854775809, "x", 1.5):
            status, body = await api.get(f"{path}?cursor={CURSORS.encode(tag, (value,))}")
            if value == 9223372036854775807:  # the largest id: a valid, empty continuation
                assert status == 200, (path, body)
            else:
                assert (status, body.get("field")) == (400, "cursor"), (path, value, body)


async def test_hand_made_cursors_are_400_on_every_list(api: Api) -> None:
    """A well-formed position without this deployment's signature is refused (docs/api.md)."""
    for path in ("/operations", "/subscribers", "/play-sessions", "/webhooks"):
        tag = path.strip("/")
        unsigned = base64.urlsafe_b64encode(f'["{tag}",1]'.encode()).decode().rstrip("=")
        signed = CURSORS.encode(tag, (1,))
        tampered = ("B" if signed[0] == "A" else "A") + signed[1:]
        for cursor in (unsigned, signed[:-3], signed[:10], tampered):
            status, body = await api.get(f"{path}?cursor={cursor}")
            assert (status, body.get("field")) == (400, "cursor"), (path, cursor, body)
        assert (await api.get(f"{path}?cursor={signed}"))[0] == 200


async def test_values_postgresql_cannot_store_are_400(api: Api, pool: asyncpg.Pool) -> None:
    made = await create_subscriber(api)
    for method, path, body, field in [
        ("POST", "/subscribers", {"name": "a\u0000b", "phoneCountryCode": "7", "phone": "2"}, "name"),
        ("PUT", f"/subscribers/{made['subscriberId']}", {"name": "a\u0000b"}, "name"),
        ("POST", f"/subscribers/{made['subscriberId']}/disable", {"reason": "a\u0000"}, "reason"),
        ("POST", "/webhooks", {"url": "http://a.example.com/\u0000"}, "url"),
    ]:
        status, answer = await api.call(method, path, body)
        assert (status, answer.get("field")) == (400, field), (path, answer)
    # Modules without a field rule still answer 400, never 500 (the middleware's safety net).
    status, answer = await api.put("/portal", {"branding": {"description": "x\u0000"}})
    assert status == 400 and answer["error"] == "invalid_text" and "U+0000" in answer["message"]
    assert await pool.fetchval("SELECT count(*) FROM operations") == 1

"""CSV exports of /operations and /play-sessions, and CSV negotiation everywhere else."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import msgspec
import pytest

from admin_api import csv_export, operations, play_sessions
from catena import ids
from tests.admin_api._subscribers_support import create_subscriber, insert_operations, make_package
from tests.admin_api.test_play_sessions import T0, insert_session
from tests.conftest import BASE, Api

CSV = {"Accept": "text/csv"}


async def csv_rows(api: Api, path: str, headers: dict[str, str] | None = None) -> list[dict[str, str]]:
    """GET ``path`` as CSV, check the response's form, and parse it back with the csv module."""
    async with api.client.get(BASE + path, headers={"X-Auth-Token": api.token or "", **(headers or {})}) as r:
        raw = await r.read()
        assert r.status == 200, raw
        assert r.headers["Content-Type"] == "text/csv; charset=utf-8; header=present"
        assert r.headers["Content-Disposition"].startswith('attachment; filename="')
        assert r.headers["Vary"] == "Accept"
    text = raw.decode()
    assert text.endswith("\r\n")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    header, body = rows[0], rows[1:]
    return [dict(zip(header, row, strict=True)) for row in body]


async def json_pages(api: Api, path: str, key: str, limit: int = 1000) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    sep = "&" if "?" in path else "?"
    while True:
        status, body = await api.get(f"{path}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, body
        items += body[key]
        cursor = body.get("next")
        if not cursor:
            return items


def as_csv(value: Any) -> str:
    """How a JSON value reads in the CSV file."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def unix_to_iso(value: int | None) -> str:
    return "" if value is None else datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def some_operations(api: Api, pool: asyncpg.Pool, portal: Any) -> list[dict[str, Any]]:
    basic = await make_package(pool, portal.portalId, "basic")
    for phone in ("1", "2", "3"):
        made = await create_subscriber(api, phone=phone, name=f'Иван "{phone}", Петров\nмл.')
        await api.post("/packages-subscribers", {"subscriberId": made["subscriberId"], "packageId": basic})
    await api.post(f"/subscribers/{made['subscriberId']}/disable", {"reason": "неоплата, долг\r\n"})
    return await json_pages(api, "/operations", "operations")


async def test_operations_csv_is_every_json_row(api: Api, portal: Any, pool: asyncpg.Pool) -> None:
    expected = await some_operations(api, pool, portal)
    rows = await csv_rows(api, "/operations", CSV)
    assert list(rows[0]) == list(operations.CSV_HEADER) == list(expected[0])
    assert len(rows) == len(expected) == 7
    names = [json.loads(row["payload"]).get("name") for row in rows]
    for row, op in zip(rows, expected, strict=True):
        payload = row.pop("payload")
        assert json.loads(payload) == op.pop("payload")
        assert row == {k: as_csv(v) for k, v in op.items()}
    # Quotes, commas and line breaks in names survive the round trip.
    assert names[0] == 'Иван "1", Петров\nмл.'
    assert await csv_rows(api, "/operations?format=csv") == await csv_rows(api, "/operations", CSV)


async def test_operations_csv_applies_the_filters(api: Api, portal: Any, pool: asyncpg.Pool) -> None:
    expected = await some_operations(api, pool, portal)
    subscriber = expected[0]["subscriberId"]
    first_day = expected[0]["createdAt"][:10]
    for query in (
        f"subscriberId={subscriber}",
        "type=createPackageSubscriber&type=disableSubscriber",
        f"packageId={expected[1]['packageId']}",
        f"created_at_gte={first_day}&created_at_lt=2999-01-01",
        "created_at_lt=2024-01-02",
    ):
        wanted = [op["operationId"] for op in await json_pages(api, f"/operations?{query}", "operations")]
        got = [row["operationId"] for row in await csv_rows(api, f"/operations?{query}&format=csv")]
        assert got == wanted, query
    # limit does not cut an export; a cursor starts it after the page that issued it.
    status, page = await api.get("/operations?limit=2")
    rows = await csv_rows(api, f"/operations?limit=2&cursor={page['next']}&format=csv")
    assert [r["operationId"] for r in rows] == [op["operationId"] for op in expected[2:]]
    assert len(await csv_rows(api, "/operations?limit=1&format=csv")) == len(expected)


async def test_an_empty_export_is_the_header_alone(api: Api) -> None:
    async with api.client.get(
        BASE + "/operations?format=csv", headers={"X-Auth-Token": api.token or ""}
    ) as r:
        assert r.status == 200 and await r.read() == (",".join(operations.CSV_HEADER) + "\r\n").encode()


async def test_play_sessions_csv(api: Api, portal: Any, make_portal: Any, pool: asyncpg.Pool) -> None:
    subscriber, channel = ids.new_id(), ids.new_id()
    for n in range(5):
        await insert_session(pool, portal.portalId, T0 + 3600 * n, subscriber=subscriber, channel=channel,
                             active=n % 2 == 0)  # fmt: skip
    other = await make_portal()
    await insert_session(pool, other.portalId, T0 + 60, subscriber=subscriber, n=1)
    # Text a player sent, with everything CSV must quote.
    odd = 'Player/1.0 (X11, "Linux")\r\nnext, line'
    sql = "UPDATE play_sessions SET user_agent = $1, device_id = '' WHERE opened_at = to_timestamp($2)"
    await pool.execute(sql, odd, T0)
    expected = await json_pages(api, "/play-sessions", "sessions")
    rows = await csv_rows(api, "/play-sessions", CSV)
    assert list(rows[0]) == list(play_sessions.CSV_HEADER) == list(expected[0])
    assert len(rows) == 5
    for row, session in zip(rows, expected, strict=True):
        times = {k: unix_to_iso(session.pop(k)) for k in ("openedAt", "closedAt", "updatedAt")}
        assert row == {k: as_csv(v) for k, v in session.items()} | times
    assert rows[0]["openedAt"] == "2024-04-27T20:00:00Z" and rows[0]["closedAt"] == ""
    assert rows[-1]["userAgent"] == 'Player/1.0 (X11, "Linux")\r\nnext, line'
    assert rows[-1]["deviceId"] == "" and expected[-1]["deviceId"] == ""
    active = await csv_rows(api, f"/play-sessions?active=true&opened_at_gte={T0 + 3600}&format=csv")
    assert [r["sessionId"] for r in active] == [s["sessionId"] for s in expected if s["active"]][:2]
    # Tenant isolation: the other portal's export has its own session only.
    theirs = await csv_rows(api.as_(other.apiKey), "/play-sessions?format=csv")
    assert len(theirs) == 1 and theirs[0]["portalId"] == other.portalId


@pytest.mark.parametrize(
    ("accept", "is_csv"),
    [
        ("text/csv", True),
        ("text/*", True),
        ("application/json;q=0.5, text/csv", True),
        ("text/csv, */*;q=0.1", True),
        ("text/csv, application/json", False),
        ("text/csv;q=0.5, application/json", False),
        ("*/*", False),
        ("application/json", False),
        ("text/html", False),
        ("text/csv;q=0", False),
        ("garbage;;, /, text/csv;q=x", False),
        ("", False),
    ],
)
async def test_accept_negotiation(api: Api, accept: str, is_csv: bool) -> None:
    for path in ("/operations", "/play-sessions"):
        async with api.client.get(
            BASE + path, headers={"X-Auth-Token": api.token or "", "Accept": accept}
        ) as r:
            assert r.status == 200
            assert r.content_type == ("text/csv" if is_csv else "application/json"), (path, accept)
            assert r.headers["Vary"] == "Accept"


async def test_csv_asked_of_an_endpoint_without_it_is_406(api: Api, pool: asyncpg.Pool) -> None:
    made = await create_subscriber(api)
    before = await pool.fetchval("SELECT count(*) FROM operations")
    op = (await api.get("/operations"))[1]["operations"][0]["operationId"]
    for path in ("/channels", "/subscribers", f"/subscribers/{made['subscriberId']}", f"/operations/{op}",
                 "/stats", "/portal"):  # fmt: skip
        status, body = await api.get(path, headers=CSV)
        assert (status, body["error"], body.get("field")) == (406, "not_acceptable", "Accept"), (path, body)
        status, body = await api.get(path + "?format=csv")
        assert (status, body["error"], body.get("field")) == (406, "not_acceptable", "format"), (path, body)
        # A list that also allows JSON gets JSON; format=json is JSON.
        assert (await api.get(path, headers={"Accept": "text/csv, application/json"}))[0] == 200
        assert (await api.get(path, headers={"Accept": "text/csv, */*;q=0.1"}))[0] == 200
        assert (await api.get(path + "?format=json", headers=CSV))[0] == 200
    # A write asked for CSV changes nothing.
    status, _ = await api.post(
        "/subscribers", {"name": "x", "phoneCountryCode": "7", "phone": "5"}, headers=CSV
    )
    assert status == 406
    assert await pool.fetchval("SELECT count(*) FROM operations") == before
    # Authentication still comes first.
    assert (await api.as_("nope").get("/channels?format=csv"))[0] == 401


async def test_bad_export_requests_are_typed_400s(api: Api, pool: asyncpg.Pool) -> None:
    await create_subscriber(api)
    for query, field in [
        ("format=xml", "format"),
        ("format=CSV", "format"),
        ("format=csv&type=fooBar", "type"),
        ("format=csv&created_at_gte=yesterday", "created_at_gte"),
        ("format=csv&cursor=abc", "cursor"),
        ("format=csv&limit=0", "limit"),
        ("format=csv&subscriberId=nope", "subscriberId"),
    ]:
        status, body = await api.get(f"/operations?{query}")
        assert (status, body.get("field")) == (400, field), (query, body)
    for query, field in [
        ("format=json2", "format"),
        ("format=csv&opened_at_gte=yesterday", "opened_at_gte"),
        ("format=csv&cursor=" + (await api.get("/operations?limit=1"))[1].get("next", "x"), "cursor"),
    ]:
        status, body = await api.get(f"/play-sessions?{query}", headers=CSV)
        assert (status, body.get("field")) == (400, field), (query, body)
    assert await pool.fetchval("SELECT count(*) FROM operations") == 1


async def test_a_large_export_streams(api: Api, portal: Any, make_portal: Any, pool: asyncpg.Pool) -> None:
    start = datetime.now(UTC) - timedelta(days=70)
    mine = await insert_operations(
        pool, portal.portalId, [start + timedelta(minutes=2 * n) for n in range(30_000)]
    )
    other = await make_portal()
    await insert_operations(
        pool, other.portalId, [start + timedelta(minutes=3 * n) for n in range(500)], node=1
    )
    headers = {"X-Auth-Token": api.token or "", **CSV}
    chunks = 0
    async with api.client.get(BASE + "/operations", headers=headers) as r:
        assert r.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in r.headers
        buffer = io.StringIO(newline="")
        async for chunk in r.content.iter_any():
            chunks += 1
            buffer.write(chunk.decode())
    rows = list(csv.reader(io.StringIO(buffer.getvalue(), newline="")))[1:]
    assert [r[0] for r in rows] == [ids.encode(i) for i in mine]  # every one, oldest first, no other portal's
    assert chunks > 1


async def test_a_failure_mid_export_cuts_the_download(
    api: Api, portal: Any, pool: asyncpg.Pool, admin_settings: Any
) -> None:
    """PostgreSQL's backend killed mid-export: the client sees an incomplete body, not a short file."""
    start = datetime.now(UTC) - timedelta(days=20)
    await insert_operations(
        pool, portal.portalId, [start + timedelta(seconds=10 * n) for n in range(100_000)]
    )
    headers = {"X-Auth-Token": api.token or "", **CSV}
    async with api.client.get(BASE + "/operations", headers=headers) as r:
        await r.content.readany()
        killed = await pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE query LIKE '%to_char(created_at%FROM operations WHERE%' AND pid <> pg_backend_pid()"
        )
        assert killed == 1
        with pytest.raises(aiohttp.ClientPayloadError):
            while await r.content.readany():
                pass
    # The API goes on answering, the pool heals, and the next export is whole.
    status, _ = await api.get("/operations?limit=1")
    assert status == 200
    first_hour = (start + timedelta(hours=1)).isoformat()[:19]
    assert len(await csv_rows(api, f"/operations?created_at_lt={first_hour}", CSV)) == 360


async def test_exports_at_once_are_bounded(api: Api, portal: Any, pool: asyncpg.Pool) -> None:
    """Each export holds a pooled connection: past half the pool, a 429 to retry, not a stall."""
    start = datetime.now(UTC) - timedelta(days=20)
    await insert_operations(
        pool, portal.portalId, [start + timedelta(seconds=10 * n) for n in range(100_000)]
    )
    headers = {"X-Auth-Token": api.token or "", **CSV}
    limit = csv_export._Exports.limit(_services(api))
    held = []
    try:
        for _ in range(limit):  # readers that stop after the first chunk keep their export open
            response = await api.client.get(BASE + "/operations", headers=headers)
            assert response.status == 200
            await response.content.readany()
            held.append(response)
        status, body = await api.get("/operations", headers=CSV)
        assert (status, body["error"]) == (429, "too_many_requests"), body
        assert (await api.get("/operations?limit=5"))[0] == 200  # JSON still served
    finally:
        for response in held:
            response.close()
    for _ in range(100):
        if csv_export._Exports.running == 0:
            break
        await asyncio.sleep(0.05)
    assert csv_export._Exports.running == 0
    assert len(await csv_rows(api, "/operations?limit=5&created_at_lt=2000-01-01", CSV)) == 0


def _services(api: Api) -> Any:
    from admin_api import keys

    return api.client.app[keys.SERVICES]


def _reference_id(value: int | None) -> str | None:
    return (
        None
        if value is None
        else base64.urlsafe_b64encode(struct.pack(">q", value)).decode().replace("=", ".")
    )


def _reference_iso(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


async def test_json_pages_keep_their_bytes(api: Api, portal: Any, pool: asyncpg.Pool) -> None:
    """The faster page encoding writes exactly what the straightforward one did."""
    await some_operations(api, pool, portal)
    portal_id = ids.decode(portal.portalId)
    odd = datetime(2024, 10, 16, 10, 5, 59, 999_999, tzinfo=UTC)
    await pool.execute(
        "INSERT INTO operations (id, portal_id, type, package_id, payload, created_at, updated_at)"
        " VALUES ($1, $2, 'updatePackage', $3, $4, $5, $6)",
        ids.lowest_at(int(odd.timestamp() * 1000)),
        portal_id,
        ids.new_id(),
        {"name": 'a "quoted"\\ \u2028 name\n', "n": [1, 2.5, None]},
        odd,
        odd + timedelta(days=1),
    )
    rows = await pool.fetch(
        "SELECT id, portal_id, type, subscriber_id, package_id, payload::text AS payload, created_at,"
        " updated_at FROM operations WHERE portal_id = $1 ORDER BY id",
        portal_id,
    )
    reference = [
        {
            "operationId": _reference_id(r["id"]),
            "type": r["type"],
            "portalId": _reference_id(r["portal_id"]),
            "subscriberId": _reference_id(r["subscriber_id"]),
            "packageId": _reference_id(r["package_id"]),
            "createdAt": _reference_iso(r["created_at"]),
            "updatedAt": _reference_iso(r["updated_at"]),
            "payload": msgspec.Raw(r["payload"].encode()),
        }
        for r in rows
    ]
    expected = msgspec.json.encode({"operations": reference})
    async with api.client.get(
        BASE + "/operations?limit=1000", headers={"X-Auth-Token": api.token or ""}
    ) as r:
        assert await r.read() == expected
    one = await api.client.get(
        BASE + f"/operations/{_reference_id(rows[0]['id'])}", headers={"X-Auth-Token": api.token or ""}
    )
    assert await one.read() == msgspec.json.encode(reference[0])


async def test_session_pages_keep_their_bytes(api: Api, portal: Any, pool: asyncpg.Pool) -> None:
    for n in range(3):
        await insert_session(
            pool,
            portal.portalId,
            T0 + n,
            subscriber=ids.new_id() if n else None,
            channel=ids.new_id(),
            active=n == 1,
            n=n,
        )
    odd = "UPDATE play_sessions SET user_agent = 'Плеер \"1\"\\\\', program_id = $1 WHERE active"
    await pool.execute(odd, ids.new_id())
    rows = await pool.fetch("SELECT * FROM play_sessions ORDER BY id DESC")

    def unix(value: datetime | None) -> int | None:
        return None if value is None else int(value.timestamp() // 1)

    expected = msgspec.json.encode(
        {
            "sessions": [
                {
                    "sessionId": _reference_id(r["id"]),
                    "subscriberId": _reference_id(r["subscriber_id"]),
                    "channelId": _reference_id(r["channel_id"]),
                    "channelName": r["channel_name"],
                    "programId": _reference_id(r["program_id"]),
                    "portalId": _reference_id(r["portal_id"]),
                    "openedAt": unix(r["opened_at"]),
                    "closedAt": unix(r["closed_at"]),
                    "updatedAt": unix(r["updated_at"]),
                    "active": r["active"],
                    "bytes": r["bytes"],
                    "ip": r["ip"],
                    "userAgent": r["user_agent"],
                    "token": r["token"],
                    "deviceId": r["device_id"],
                    "closeReason": r["close_reason"],
                }
                for r in rows
            ]
        }
    )
    async with api.client.get(BASE + "/play-sessions", headers={"X-Auth-Token": api.token or ""}) as r:
        assert await r.read() == expected

"""``?q=`` on /channels and /packages (issue 11): case-insensitive substrings, keyset pages.

A page can be found three ways (admin_api._search): walking the list, walking then
asking the n-gram index, or the index alone after a stretch without matches.  The
property tests make lists where each way is needed and compare every page with a
plain Python filter of the same rows.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest

from admin_api import _search, channels, packages
from catena import ids
from tests.admin_api.content_support import login_staff, operations_of, portal_id
from tests.conftest import Api

WORDS = ["Спорт", "спорт", "СПОРТ", "Кино", "News", "news", "Discovery", "Ёлка", "Мир", "x", "50%", "a_b"]


async def insert_channels(
    pool: asyncpg.Pool, portal: Any, rows: Sequence[tuple[str, str, int | None]]
) -> list[int]:
    """(name, title, number) rows, written in one COPY; their ids in insertion order."""
    made = [(ids.new_id(), portal_id(portal), name, title, number) for name, title, number in rows]
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "channels", records=made, columns=["id", "portal_id", "name", "title", "number"]
        )
    return [row[0] for row in made]


async def walk(api: Api, path: str, plural: str, **params: Any) -> list[dict[str, Any]]:
    """Every page of a list, following ``next``; checks that no page is larger than asked."""
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        status, body = await api.get(path, params=query)
        assert status == 200, body
        assert len(body[plural]) <= int(params.get("limit", 100))
        seen += body[plural]
        cursor = body.get("next")
        if cursor is None:
            return seen


def matching(rows: list[dict[str, Any]], q: str, *fields: str) -> list[str]:
    return [r["name"] for r in rows if any(q.lower() in r[f].lower() for f in fields)]


async def test_channel_search_finds_name_or_title_ignoring_case(api: Api) -> None:
    for name, title in [
        ("sport1", "Спорт HD"),
        ("news24", "Новости 24"),
        ("kino", "Кино СПОРТ"),
        ("x1", "Мир"),
    ]:
        assert (await api.post("/channels", {"name": name, "title": title}))[0] == 200
    status, body = await api.get("/channels", params={"q": "спорт"})
    assert status == 200 and [c["name"] for c in body["channels"]] == ["sport1", "kino"]
    assert [c["name"] for c in (await api.get("/channels", params={"q": "SPORT"}))[1]["channels"]] == [
        "sport1"
    ]
    assert [c["name"] for c in (await api.get("/channels", params={"q": "ws2"}))[1]["channels"]] == ["news24"]
    assert (await api.get("/channels", params={"q": "нет такого"}))[1] == {"channels": []}
    assert len((await api.get("/channels", params={"q": ""}))[1]["channels"]) == 4, "empty q: no filter"


async def test_wildcards_are_plain_characters(api: Api) -> None:
    for name, title in [("sale", "Скидка 50%"), ("fifty", "50 x"), ("under", "a_b"), ("other", "axb")]:
        await api.post("/channels", {"name": name, "title": title})
    assert [c["name"] for c in (await api.get("/channels", params={"q": "50%"}))[1]["channels"]] == ["sale"]
    assert [c["name"] for c in (await api.get("/channels", params={"q": "a_b"}))[1]["channels"]] == ["under"]


@pytest.mark.parametrize("seed", [1, 2])
async def test_channel_search_pages_match_a_plain_filter(
    api: Api, pool: asyncpg.Pool, portal: Any, seed: int
) -> None:
    """Dense, sparse and clustered matches, numbered and unnumbered, every page size."""
    rng = random.Random(seed)
    count = _search.MIN_WALK + 1500  # more than one walk: the index path runs too
    numbers = dict(zip(rng.sample(range(count), 300), rng.sample(range(1, 99_999), 300), strict=True))
    rows = [(f"c{i}", _title(rng, i, count), numbers.get(i)) for i in range(count)]
    await insert_channels(pool, portal, rows)
    everything = await walk(api, "/channels", "channels", limit=1000)
    assert len(everything) == count
    for q in ["спорт", "ёлка", "x", "50%", "c12", "редкое", "ничего", "NEWS"]:
        expected = matching(everything, q, "name", "title")
        limit = page_size(rng, len(expected))
        found = await walk(api, "/channels", "channels", q=q, limit=limit)
        assert [c["name"] for c in found] == expected, (q, limit)


def page_size(rng: random.Random, matches: int) -> int:
    """A page size from 1 up, large enough that walking takes at most about 30 pages."""
    return max(rng.choice([1, 7, 100, 1000]), matches // 30 + 1)


def _title(rng: random.Random, i: int, count: int) -> str:
    # "редкое" three times, far apart; "ёлка" only in the last stretch (clustered).
    if i in (3, count // 2, count - 2):
        return "Редкое кино"
    if i > count - 300 and i % 3 == 0:
        return "Ёлка " + str(i)
    return f"{rng.choice(WORDS)} {rng.choice(WORDS)} {i % 13}"


class Spy:
    """A real connection that remembers which of a list's search statements ran."""

    def __init__(self, conn: asyncpg.Connection, sql: _search.SearchSql) -> None:
        self.conn = conn
        self.names = {getattr(sql, name): name for name in ("count", "walk", "edge", "indexed")}
        self.ran: list[str] = []

    async def fetch(self, statement: str, *args: Any) -> list[asyncpg.Record]:
        self.ran.append(self.names[statement])
        return list(await self.conn.fetch(statement, *args))

    async def fetchrow(self, statement: str, *args: Any) -> asyncpg.Record | None:
        self.ran.append(self.names[statement])
        return await self.conn.fetchrow(statement, *args)

    async def fetchval(self, statement: str, *args: Any) -> Any:
        self.ran.append(self.names[statement])
        return await self.conn.fetchval(statement, *args)


async def test_search_takes_each_way_and_each_is_exact(api: Api, pool: asyncpg.Pool, portal: Any) -> None:
    count = _search.MIN_WALK + 2500
    # "кластер": 1 row in 100 up to MIN_WALK, then 2,200 in a row after it.
    rows = [
        (
            f"c{i}",
            "Кластер" if (i < _search.MIN_WALK and i % 100 == 0) or 5100 <= i < 7300 else "Прочее",
            None,
        )
        for i in range(count)
    ]
    rows[10] = ("c10", "Редкость", None)
    await insert_channels(pool, portal, rows)
    everything = await walk(api, "/channels", "channels", limit=1000)
    expected_ways = {
        "прочее": ["walk"],  # common: the peek fills the page
        "редкость": ["walk", "count", "indexed"],  # rare: the index answers
        "кластер": ["walk", "count", "walk", "edge", "indexed"],  # common, but not here
    }
    async with pool.acquire() as conn:
        for q, ways in expected_ways.items():
            spy = Spy(conn, channels._SEARCH)
            found = await _search.search(spy, channels._SEARCH, portal_id(portal), (0, _FIRST), q, 101)
            assert spy.ran == ways, q
            assert [r["name"] for r in found] == matching(everything, q, "name", "title")[:101], q


_FIRST = -(2**63)


async def test_search_pages_while_channels_are_added(api: Api, pool: asyncpg.Pool, portal: Any) -> None:
    """Keyset pages: rows added while a client pages never make it see a row twice or miss an old one."""
    existing = await insert_channels(pool, portal, [(f"old{i}", f"Спорт {i}", None) for i in range(400)])
    stop = asyncio.Event()

    async def add() -> int:
        made = 0
        while not stop.is_set():
            number = random.choice([None, random.randint(1, 99_999)])
            status, _ = await api.post(
                "/channels", {"name": f"new{made}", "title": "Спорт", "number": number}
            )
            made += status == 200
            await asyncio.sleep(0)
        return made

    writer = asyncio.create_task(add())
    seen = await walk(api, "/channels", "channels", q="спорт", limit=7)
    stop.set()
    assert await writer > 0
    found = [ids.decode(c["channelId"]) for c in seen]
    assert len(found) == len(set(found)), "no channel twice"
    assert set(existing) <= set(found), "every channel that was there before is seen"


async def test_search_with_name_filter_and_numbers(api: Api) -> None:
    for name, title, number in [("bb", "Спорт 2", 20), ("aa", "Спорт 1", 10), ("cc", "Кино", None)]:
        assert (await api.post("/channels", {"name": name, "title": title, "number": number}))[0] == 200
    assert (await api.post("/channels", {"name": "dd", "title": "Спорт 3"}))[0] == 200
    found = (await api.get("/channels", params={"q": "спорт"}))[1]["channels"]
    assert [c["name"] for c in found] == ["aa", "bb", "dd"], "numbered first, then creation order"
    status, body = await api.get("/channels?q=спорт&name=bb&name=cc&name=dd")
    assert status == 200 and [c["name"] for c in body["channels"]] == ["bb", "dd"]


async def test_search_stays_in_its_portal(api: Api, client: Any, make_portal: Any) -> None:
    other = Api(client, (await make_portal()).apiKey)
    await other.post("/channels", {"name": "sport1", "title": "Спорт"})
    await other.post("/packages", {"name": "sport", "description": "Спорт"})
    await api.post("/channels", {"name": "news", "title": "Новости"})
    assert (await api.get("/channels", params={"q": "спорт"}))[1] == {"channels": []}
    assert (await api.get("/channels", params={"q": "sport1"}))[1] == {"channels": []}
    assert (await api.get("/packages", params={"q": "спорт"}))[1] == {"packages": []}


@pytest.mark.parametrize("path", ["/channels", "/packages"])
@pytest.mark.parametrize(
    "q, status", [("x" * 100, 200), ("x" * 101, 400), ("a\nb", 400), ("a\tb", 400), ("\x7f", 400)]
)
async def test_bad_q_is_400_naming_q(api: Api, pool: asyncpg.Pool, path: str, q: str, status: int) -> None:
    got, body = await api.get(path, params={"q": q})
    assert got == status, body
    if status == 400:
        assert body["field"] == "q", body


async def test_search_with_a_cursor_from_another_list_is_400(api: Api) -> None:
    await api.post("/packages", {"name": "p1"})
    await api.post("/packages", {"name": "p2"})
    _, page = await api.get("/packages?limit=1")
    status, body = await api.get("/channels", params={"q": "p", "cursor": page["next"]})
    assert status == 400 and body["field"] == "cursor"


async def test_package_search_pages_match_a_plain_filter(api: Api, pool: asyncpg.Pool, portal: Any) -> None:
    rng = random.Random(7)
    count = _search.MIN_WALK + 800
    rows = [
        (ids.new_id(), portal_id(portal), f"p{i}", " ".join(rng.choice(WORDS) for _ in range(3)))
        for i in range(count)
    ]
    rows[count // 3] = (*rows[count // 3][:3], "Единственный пакет")
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "packages", records=rows, columns=["id", "portal_id", "name", "description"]
        )
    everything = await walk(api, "/packages", "packages", limit=1000)
    for q in ["спорт", "единствен", "p12", "ёлка", "ничего", "%"]:
        expected = matching(everything, q, "name", "description")
        limit = page_size(rng, len(expected))
        found = await walk(api, "/packages", "packages", q=q, limit=limit)
        assert [p["name"] for p in found] == expected, (q, limit)


@pytest.mark.parametrize("statement", ["channels", "packages"])
async def test_index_path_uses_the_ngram_index_in_a_generic_plan(
    pool: asyncpg.Pool, portal: Any, statement: str
) -> None:
    """Prepared statements get generic plans; with a table of some size, this one asks the GIN index
    alone (never a btree range ANDed to it, never the n-gram function row by row)."""
    rows = [(ids.new_id(), portal_id(portal), f"n{i}", f"Канал {i}") for i in range(3000)]
    async with pool.acquire() as conn:
        columns = ["id", "portal_id", "name", "title" if statement == "channels" else "description"]
        await conn.copy_records_to_table(statement, records=rows, columns=columns)
        await conn.execute(f"ANALYZE {statement}")
    sql = (channels._SEARCH if statement == "channels" else packages._SEARCH).indexed
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE probe AS {sql}")
        try:
            values = "1, 1, 1, 'abc', 10" if statement == "channels" else "1, 1, 'abc', 10"
            plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN EXECUTE probe({values})"))
        finally:
            await conn.execute("DEALLOCATE probe")
    assert f"Bitmap Index Scan on {statement}_search" in plan, plan
    assert "BitmapAnd" not in plan and "Filter: (catena_search_grams" not in plan, plan


# -- channel numbers -------------------------------------------------------------------


async def test_numbers_order_the_list(api: Api, pool: asyncpg.Pool, portal: Any) -> None:
    for name, number in [("first", None), ("ten", 10), ("second", None), ("two", 2), ("big", 99_999)]:
        status, body = await api.post("/channels", {"name": name, "title": name.title(), "number": number})
        assert status == 200 and body["number"] == number
    names = [c["name"] for c in await walk(api, "/channels", "channels", limit=2)]
    assert names == ["two", "ten", "big", "first", "second"]
    status, body = await api.get("/channels?name=first&name=ten")
    assert [c["name"] for c in body["channels"]] == ["ten", "first"]
    ops = await operations_of(pool, portal)
    assert ops[1]["payload"]["number"] == 10 and "number" not in ops[0]["payload"]


async def test_number_update_clear_and_echo(api: Api) -> None:
    _, channel = await api.post("/channels", {"name": "sport1", "title": "Спорт", "number": 5})
    path = f"/channels/{channel['channelId']}"
    status, body = await api.put(path, {"number": 7})
    assert status == 200 and body["number"] == 7
    status, body = await api.put(path, {**body, "title": "Спорт HD"})
    assert status == 200 and body["number"] == 7, "a GET body PUT back keeps the number"
    status, body = await api.put(path, {"number": None})
    assert status == 200 and body["number"] is None
    status, body = await api.put(path, {"title": "x"})
    assert status == 200 and body["number"] is None


@pytest.mark.parametrize("number", [0, -1, 100_000, 10**12, "5", 1.5, True])
async def test_number_out_of_range_is_400(api: Api, pool: asyncpg.Pool, number: Any) -> None:
    status, body = await api.post("/channels", {"name": "sport1", "title": "T", "number": number})
    assert status == 400 and body["field"] == "number", body
    _, channel = await api.post("/channels", {"name": "news", "title": "T", "number": 3})
    status, body = await api.put(f"/channels/{channel['channelId']}", {"number": number})
    assert status == 400 and body["field"] == "number", body
    assert [c["number"] for c in (await api.get("/channels"))[1]["channels"]] == [3]


async def test_duplicate_number_is_409_and_changes_nothing(
    api: Api, pool: asyncpg.Pool, portal: Any, client: Any, make_portal: Any
) -> None:
    _, first = await api.post("/channels", {"name": "sport1", "title": "T", "number": 5})
    _, second = await api.post("/channels", {"name": "news", "title": "T", "number": 6})
    before = await operations_of(pool, portal)
    status, body = await api.post("/channels", {"name": "kino", "title": "T", "number": 5})
    assert status == 409 and body["field"] == "number" and body["error"] == "number_taken", body
    assert "sport1" in body["message"]
    status, body = await api.put(f"/channels/{second['channelId']}", {"number": 5, "title": "changed"})
    assert status == 409 and body["field"] == "number"
    assert (await api.get(f"/channels/{second['channelId']}"))[1]["title"] == "T"
    assert await operations_of(pool, portal) == before
    assert (await api.put(f"/channels/{first['channelId']}", {"number": 5}))[0] == 200, "its own number"
    other = Api(client, (await make_portal()).apiKey)
    assert (await other.post("/channels", {"name": "sport1", "title": "T", "number": 5}))[0] == 200


async def test_parallel_creates_with_one_number(api: Api, pool: asyncpg.Pool) -> None:
    results = await asyncio.gather(
        *(api.post("/channels", {"name": f"c{i}", "title": "T", "number": 42}) for i in range(8))
    )
    assert sorted(status for status, _ in results) == [200] + [409] * 7
    assert all(body["field"] == "number" for status, body in results if status == 409)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM channels") == 1


# -- EPG status ------------------------------------------------------------------------


async def test_epg_status_follows_the_link_the_source_and_its_programmes(
    api: Api, pool: asyncpg.Pool
) -> None:
    _, channel = await api.post("/channels", {"name": "sport1", "title": "Спорт"})
    path = f"/channels/{channel['channelId']}"
    assert channel["epgStatus"] == "unlinked"
    status, body = await api.put(path, {"epgSourceName": "main-epg", "epgChannelName": "sport.ru"})
    assert status == 200 and body["epgStatus"] == "no_source"
    _, source = await api.post("/epg-sources", {"name": "main-epg", "url": "https://epg.example.com/x.xml"})
    assert (await api.get(path))[1]["epgStatus"] == "no_programs"
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO epg_programs (id, portal_id, epg_source_id, epg_channel_name, start_at, title) "
            "VALUES ($1, $2, $3, 'sport.ru', now(), 'Матч')",
            ids.new_id(),
            ids.decode(channel["portalId"]),
            ids.decode(source["epgSourceId"]),
        )
    listed = (await api.get("/channels"))[1]["channels"]
    assert [c["epgStatus"] for c in listed] == ["ok"]
    status, body = await api.put(path, {**listed[0], "title": "Спорт HD"})
    assert status == 200 and body["epgStatus"] == "ok", "a GET body may be PUT back"
    assert (await api.put(path, {"epgChannelName": None}))[1]["epgStatus"] == "unlinked"


# -- package sizes ---------------------------------------------------------------------


async def subscriber(api: Api, phone: str) -> str:
    status, body = await api.post("/subscribers", {"name": "Иван", "phoneCountryCode": "7", "phone": phone})
    assert status == 200, body
    return str(body["subscriberId"])


async def test_package_counts_follow_links_and_subscriptions(api: Api, pool: asyncpg.Pool) -> None:
    _, package = await api.post("/packages", {"name": "premium"})
    _, other = await api.post("/packages", {"name": "basic"})
    assert (package["channelCount"], package["subscriberCount"], package["free"]) == (0, 0, False)
    for name in ("a1", "a2"):
        _, channel = await api.post("/channels", {"name": name, "title": name})
        await api.post(
            "/channels-packages", {"channelId": channel["channelId"], "packageId": package["packageId"]}
        )
    people = [await subscriber(api, f"90000000{i:02d}") for i in range(5)]
    for person in people:
        link = {"subscriberId": person, "packageId": package["packageId"]}
        assert (await api.post("/packages-subscribers", link))[0] == 200
    await api.post("/packages-subscribers", {"subscriberId": people[0], "packageId": other["packageId"]})
    await api.delete("/packages-subscribers", {"subscriberId": people[1], "packageId": package["packageId"]})
    await api.delete(f"/subscribers/{people[2]}")
    await api.post(f"/portal/free-packages/{other['packageId']}")
    _, body = await api.get(f"/packages/{package['packageId']}")
    assert (body["channelCount"], body["subscriberCount"], body["free"]) == (2, 3, False)
    listed = {p["name"]: p for p in (await api.get("/packages"))[1]["packages"]}
    assert listed["premium"] == body
    assert (listed["basic"]["subscriberCount"], listed["basic"]["free"]) == (1, True)
    status, echoed = await api.put(f"/packages/{package['packageId']}", {**body, "subscriberCount": 99})
    assert status == 200 and echoed["subscriberCount"] == 3, "counts sent back are ignored"
    await assert_counts_exact(pool)


async def assert_counts_exact(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        drift = await conn.fetch(
            "SELECT p.id, coalesce(n.subscribers, 0) AS kept, "
            "(SELECT count(*) FROM subscriptions s WHERE s.package_id = p.id) AS real "
            "FROM packages p LEFT JOIN package_subscriber_counts n ON n.package_id = p.id"
        )
    assert [(r["kept"], r["real"]) for r in drift if r["kept"] != r["real"]] == []


async def test_counts_survive_parallel_subscriptions_and_a_forced_delete(
    api: Api, pool: asyncpg.Pool
) -> None:
    _, big = await api.post("/packages", {"name": "big"})
    _, small = await api.post("/packages", {"name": "small"})
    people = await asyncio.gather(*(subscriber(api, f"91000000{i:02d}") for i in range(30)))
    await asyncio.gather(
        *(
            api.post("/packages-subscribers", {"subscriberId": person, "packageId": package["packageId"]})
            for person in people
            for package in (big, small)
        )
    )
    await asyncio.gather(*(api.delete(f"/subscribers/{person}") for person in people[:10]))
    await assert_counts_exact(pool)
    assert (await api.get(f"/packages/{big['packageId']}"))[1]["subscriberCount"] == 20
    status, body = await api.delete(f"/packages/{big['packageId']}")
    assert status == 409 and "20 subscriber(s)" in body["message"]
    assert (await api.delete(f"/packages/{big['packageId']}?force=true"))[0] == 201
    await assert_counts_exact(pool)
    assert (await api.get(f"/packages/{small['packageId']}"))[1]["subscriberCount"] == 20


async def test_reader_sees_counts_but_cannot_delete(api: Api) -> None:
    _, package = await api.post("/packages", {"name": "premium"})
    await api.post(f"/portal/free-packages/{package['packageId']}")
    reader = await login_staff(api, "reader@example.com")
    status, body = await reader.get(f"/packages/{package['packageId']}")
    assert status == 200 and body["free"] is True
    assert (await reader.delete(f"/packages/{package['packageId']}"))[0] == 403

"""``GET /subscribers?q=``: phone digits and names as substrings, paged, per portal."""

from __future__ import annotations

import random
import re
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest

from admin_api import subscriber_search
from catena import ids
from tests.admin_api._subscribers_support import count, create_subscriber, make_package, op_types
from tests.conftest import Api

FIRST = ["Иван", "Пётр", "Анна", "Ольга", "Sergey", "Мария", "Юлия", "Ёлка"]
LAST = ["Петров", "Иванов", "Фёдоров", "Семёнова", "Smith", "Щукин", "Ли", "O'Brien 100%_x"]


async def listed(api: Api, query: str) -> list[str]:
    """Every subscriber id the list returns for ``query``, following ``next``."""
    seen: list[str] = []
    cursor = None
    while True:
        status, body = await api.get(f"/subscribers?{query}" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, (query, body)
        seen += [s["subscriberId"] for s in body["subscribers"]]
        cursor = body.get("next")
        if not cursor:
            return seen


def q(text: str) -> str:
    return "q=" + quote(text)


async def insert_people(pool: asyncpg.Pool, portal_id: str, people: list[tuple[str, str, str]]) -> list[str]:
    """(name, country code, phone) rows written straight into the table, in id order."""
    made = [ids.new_id() for _ in people]
    await pool.executemany(
        "INSERT INTO subscribers (id, portal_id, name, phone_country_code, phone)"
        " VALUES ($1, $2, $3, $4, $5)",
        [(i, ids.decode(portal_id), *p) for i, p in zip(made, people, strict=True)],
    )
    return [ids.encode(i) for i in made]


def expected(people: list[tuple[str, str, str]], made: list[str], text: str) -> list[str]:
    """What ``q=text`` must find, computed here the plain way."""
    words = " ".join(text.split())
    if re.fullmatch(r"\+?[0-9 ()\-.]*[0-9][0-9 ()\-.]*", words):
        digits = re.sub(r"[^0-9]", "", words)
        return [m for m, (_, code, phone) in zip(made, people, strict=True) if digits in code + phone]
    folded = words.lower().replace("ё", "е")
    return [
        m for m, (name, _, _) in zip(made, people, strict=True) if folded in name.lower().replace("ё", "е")
    ]


async def test_phone_digits_with_or_without_country_code(api: Api) -> None:
    ivan = await create_subscriber(api, phone="9161234567", name="Иван Петров")
    minsk = await create_subscriber(api, phone="291234567", code="375", name="Алесь")
    other = await create_subscriber(api, phone="9035550000", name="Анна")
    ivan_id, minsk_id = ivan["subscriberId"], minsk["subscriberId"]
    for text, found in [
        ("916", [ivan_id]),  # prefix of the number
        ("1234", [ivan_id, minsk_id]),  # a substring of both
        ("79161234567", [ivan_id]),  # with the country code
        ("+7 916 123-45-67", [ivan_id]),
        ("+7 (916) 123-45-67", [ivan_id]),
        ("375 29", [minsk_id]),
        ("+375291234567", [minsk_id]),
        ("5550000", [other["subscriberId"]]),
        ("9", [ivan_id, minsk_id, other["subscriberId"]]),
        ("12", [ivan_id, minsk_id]),
        ("8916", []),
    ]:
        assert await listed(api, q(text)) == found, text


async def test_names_case_insensitive_and_yo(api: Api) -> None:
    fedorov = await create_subscriber(api, phone="1", name="Фёдоров Пётр")
    smith = await create_subscriber(api, phone="2", name="John SMITH")
    percent = await create_subscriber(api, phone="3", name="100% _фан_")
    for text, found in [
        ("федоров", [fedorov]),
        ("ФЁДОРОВ", [fedorov]),
        ("дОров", [fedorov]),
        ("петр", [fedorov]),
        ("smith", [smith]),
        ("n sm", [smith]),
        ("  john   smith ", [smith]),  # spaces around and between words are not significant
        ("%", [percent]),  # no LIKE wildcards: % and _ are characters like others
        ("_", [percent]),
        ("0% _ф", [percent]),
        ("ф", [fedorov, percent]),
        ("' OR 1=1 --", []),
        ("Петров", []),
    ]:
        assert await listed(api, q(text)) == [s["subscriberId"] for s in found], text


async def test_blank_q_lists_everybody(api: Api) -> None:
    made = [await create_subscriber(api, phone=str(n)) for n in range(3)]
    everybody = [s["subscriberId"] for s in made]
    assert await listed(api, "q=") == everybody
    assert await listed(api, q("   ")) == everybody


async def test_combined_with_the_filters(api: Api, portal: Any, pool: asyncpg.Pool) -> None:
    sport = await make_package(pool, portal.portalId, "sport")
    a = await create_subscriber(api, phone="9160000001", name="Иван А")
    b = await create_subscriber(api, phone="9160000002", name="Иван Б")
    c = await create_subscriber(api, phone="9260000003", name="Иван В")
    await api.post("/packages-subscribers", {"subscriberId": b["subscriberId"], "packageId": sport})
    await api.post(f"/subscribers/{c['subscriberId']}/disable")
    assert await listed(api, q("иван") + f"&packageId={sport}") == [b["subscriberId"]]
    assert await listed(api, q("иван") + "&disabled=true") == [c["subscriberId"]]
    assert await listed(api, q("иван") + "&disabled=false") == [a["subscriberId"], b["subscriberId"]]
    assert await listed(api, q("916") + "&phone=9160000002") == [b["subscriberId"]]
    assert await listed(api, q("0000") + "&phoneCountryCode=7&disabled=false") == [
        a["subscriberId"],
        b["subscriberId"],
    ]
    assert await listed(api, q("иван") + "&phoneCountryCode=375") == []


@pytest.mark.parametrize("budget", [2, 25, subscriber_search.FIRST_WALK])
async def test_every_way_to_a_page_finds_the_same(
    api: Api, portal: Any, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, budget: int
) -> None:
    """Walk, walk on and the index, with pages cut anywhere, against a plain filter."""
    monkeypatch.setattr(subscriber_search, "FIRST_WALK", budget)
    monkeypatch.setattr(subscriber_search, "WALK_ON", budget * 4)
    taken = spy_on_paths(monkeypatch)
    rnd = random.Random(budget)
    people = [
        (
            f"{rnd.choice(FIRST)} {rnd.choice(LAST)}",
            rnd.choice(["7", "7", "375"]),
            rnd.choice(["916", "903", "29"]) + "".join(rnd.choice("0123456789") for _ in range(7)),
        )
        for _ in range(150)
    ]
    made = await insert_people(pool, portal.portalId, people)
    queries = ["иван", "ИВАНОВ", "ё", "е", "ли", "щ", "sm", "100%", "петр", "ол", "x", "zz", "ёлка петров"]
    queries += ["916", "7916", "+375 29", "29", "0", "00", "123", "99999"]
    queries += [people[n][2][3:8] for n in (0, 70, 149)] + [people[5][1] + people[5][2]]
    for text in queries:
        for limit in (1, 7, 100):
            assert await listed(api, f"{q(text)}&limit={limit}") == expected(people, made, text), (
                text,
                limit,
            )
    if budget < len(people):
        assert taken["index"] > 0 and taken["walked_on"] > 0, taken
    else:
        assert taken == {"index": 0, "walked_on": 0}


@pytest.mark.parametrize(
    ("names", "limit", "way"),
    [
        # One match in the first walk of three rows, the next far away: the index goes on.
        (["Анна", "Анна", "Иван 1"] + ["Анна"] * 10 + ["Иван 2"], 1, "index"),
        # Two in three: dense enough to walk on for the one more a page of two needs.
        (["Анна", "Иван 1", "Иван 2", "Анна", "Иван 3"], 2, "walked_on"),
    ],
)
async def test_a_page_goes_on_right_after_its_first_walk(
    api: Api,
    portal: Any,
    pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
    names: list[str],
    limit: int,
    way: str,
) -> None:
    monkeypatch.setattr(subscriber_search, "FIRST_WALK", 3)
    monkeypatch.setattr(subscriber_search, "WALK_ON", 5)
    taken = spy_on_paths(monkeypatch)
    people = [(name, "7", f"90000000{n:02d}") for n, name in enumerate(names)]
    made = await insert_people(pool, portal.portalId, people)
    assert await listed(api, f"q=иван&limit={limit}") == expected(people, made, "иван")
    assert taken[way] >= 1, taken


def spy_on_paths(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many pages walked on past their first walk, and how many asked the index."""
    taken = {"walked_on": 0, "index": 0}
    walks: list[int] = []
    real_ids, real_walk, real_index = (
        subscriber_search.matching_ids,
        subscriber_search._walk,
        subscriber_search._from_index,
    )

    async def matching_ids(*args: Any) -> list[int]:
        walks.clear()
        found = await real_ids(*args)
        taken["walked_on"] += len(walks) > 1
        return found

    async def walk(*args: Any) -> Any:
        walks.append(1)
        return await real_walk(*args)

    async def from_index(*args: Any) -> list[int]:
        taken["index"] += 1
        return await real_index(*args)

    monkeypatch.setattr(subscriber_search, "matching_ids", matching_ids)
    monkeypatch.setattr(subscriber_search, "_walk", walk)
    monkeypatch.setattr(subscriber_search, "_from_index", from_index)
    return taken


async def test_only_the_callers_portal(api: Api, client: Any, make_portal: Any) -> None:
    mine = await create_subscriber(api, phone="9161234567", name="Иван Петров")
    other_portal = await make_portal()
    other = Api(client, other_portal.apiKey)
    theirs = await create_subscriber(other, phone="9161234567", name="Иван Петров")
    for text in ("иван", "916", "79161234567", "ив"):
        assert await listed(api, q(text)) == [mine["subscriberId"]]
        assert await listed(other, q(text)) == [theirs["subscriberId"]]
    # A cursor of one portal's search pages nothing of the other's.
    await create_subscriber(other, phone="9161234568", name="Иван Второй")
    _, first = await other.get("/subscribers?q=916&limit=1")
    status, body = await api.get(f"/subscribers?q=916&limit=1&cursor={first['next']}")
    assert status == 200 and body["subscribers"] == []


async def test_the_index_follows_changes(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subscriber_search, "FIRST_WALK", 1)  # every page asks the index
    made = await create_subscriber(api, phone="9161234567", name="Иван Петров")
    path = f"/subscribers/{made['subscriberId']}"
    await api.put(path, {"name": "Мария Кузнецова", "phone": "9037654321"})
    assert await listed(api, q("иван")) == [] and await listed(api, q("9161234")) == []
    assert await listed(api, q("кузнецова")) == [made["subscriberId"]]
    assert await listed(api, q("9037654")) == [made["subscriberId"]]
    await api.delete(path)
    assert await listed(api, q("кузнецова")) == []


async def test_bad_q(api: Api, pool: asyncpg.Pool) -> None:
    await create_subscriber(api)
    before = (await count(pool, "subscribers"), await op_types(pool))
    for query in (q("x" * 101), q("9" * 101), "q=%00", q("иван\x00"), q("я" * 101)):
        status, body = await api.get(f"/subscribers?{query}")
        assert status == 400 and body["field"] == "q", (query, body)
        assert body["error"] == "invalid_input" and body["message"]
    status, body = await api.get("/subscribers?" + q("x" * 100))
    assert status == 200 and body["subscribers"] == []
    status, body = await api.get("/subscribers?" + q("иван") + "&cursor=forged")
    assert status == 400 and body["field"] == "cursor"
    status, body = await api.get("/subscribers?" + q("иван") + "&packageId=nope")
    assert status == 400 and body["field"] == "packageId"
    assert (await count(pool, "subscribers"), await op_types(pool)) == before

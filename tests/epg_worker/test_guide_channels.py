"""The channels of a source's guide (issue 11): kept at import, listed by GET /epg-sources/{id}/channels."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pytest

from catena import ids
from epg_worker import importer, xmltv
from epg_worker.scheduler import Worker
from tests.admin_api.content_support import login_staff
from tests.conftest import CURSORS, Api
from tests.epg_worker.conftest import NOW, GuideServer, Sources, run_queued, schedule

DECLARED = (
    '<channel id="news.ru"><display-name lang="ru">Новости</display-name>'
    '<display-name lang="en">  News\n 24 </display-name><icon src="x"/></channel>'
    '<channel id="empty.ru"><display-name>Пусто</display-name></channel>'
    '<channel id="sport.ru"></channel>'
    '<channel id="">nameless</channel>'
)


def guide(declared: str, programmes: str) -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<tv>{declared}\n{programmes}</tv>\n'.encode()


def hours(channel: str, count: int) -> str:
    return "\n".join(p.xml() for p in schedule([channel], count))


def test_parser_hands_over_channels_and_keeps_programmes_the_same() -> None:
    document = guide(
        DECLARED + "<channel id='many'>" + "<display-name>n</display-name>" * 9 + "</channel>",
        hours("news.ru", 3),
    )
    declared: list[tuple[str, list[str]]] = []
    with_channels = list(xmltv.iter_programmes(io.BytesIO(document), lambda i, n: declared.append((i, n))))
    assert with_channels == list(xmltv.iter_programmes(io.BytesIO(document)))
    assert declared == [
        ("news.ru", ["Новости", "News 24"]),
        ("empty.ru", ["Пусто"]),
        ("sport.ru", []),
        ("many", ["n"] * xmltv.MAX_DISPLAY_NAMES),
    ]


async def test_guide_channels_listed_with_figures_and_links(
    api: Api, guides: GuideServer, sources: Sources, worker: Worker
) -> None:
    programmes = hours("news.ru", 5) + "\n" + hours("sport.ru", 2) + "\n" + hours("undeclared", 1)
    url = guides.put("/g.xml", guide(DECLARED, programmes))
    _, source = await api.post("/epg-sources", {"name": "main-epg", "url": url})
    for name, epg_channel in [
        ("news", "news.ru"),
        ("news2", "news.ru"),
        ("typo", "nwes.ru"),
        ("other", None),
    ]:
        body = {
            "name": name,
            "title": name.upper(),
            "epgSourceName": "main-epg",
            "epgChannelName": epg_channel,
        }
        assert (await api.post("/channels", body))[0] == 200
    await api.post(
        "/channels", {"name": "elsewhere", "title": "X", "epgSourceName": "b", "epgChannelName": "news.ru"}
    )
    await api.post(f"/epg-sources/{source['epgSourceId']}/update")
    await run_queued(worker)

    status, body = await api.get(f"/epg-sources/{source['epgSourceId']}/channels")
    assert status == 200, body
    listed = {c["epgChannelName"]: c for c in body["channels"]}
    assert list(listed) == ["empty.ru", "news.ru", "nwes.ru", "sport.ru", "undeclared"]
    news = listed["news.ru"]
    assert (news["displayName"], news["displayNames"], news["programs"]) == (
        "Новости",
        ["Новости", "News 24"],
        5,
    )
    assert news["firstStart"] == iso(NOW) and news["lastEnd"] == iso(NOW, 5)
    assert [c["name"] for c in news["linkedChannels"]] == ["news", "news2"]
    assert news["linkedChannels"][0]["title"] == "NEWS" and news["inGuide"] is True
    assert listed["empty.ru"] == {
        "epgChannelName": "empty.ru",
        "displayName": "Пусто",
        "displayNames": ["Пусто"],
        "programs": 0,
        "firstStart": None,
        "lastEnd": None,
        "inGuide": True,
        "linkedChannels": [],
    }
    assert (listed["sport.ru"]["displayNames"], listed["sport.ru"]["programs"]) == ([], 2)
    assert (listed["undeclared"]["displayName"], listed["undeclared"]["programs"]) == (None, 1)
    typo = listed["nwes.ru"]
    assert (typo["inGuide"], typo["programs"], [c["name"] for c in typo["linkedChannels"]]) == (
        False,
        0,
        ["typo"],
    )

    paged = await walk(api, f"/epg-sources/{source['epgSourceId']}/channels", limit=2)
    assert paged == body["channels"]


async def test_reimport_replaces_the_declared_channels(
    api: Api, guides: GuideServer, sources: Sources, worker: Worker
) -> None:
    url = guides.put("/g.xml", guide(DECLARED, hours("news.ru", 2)))
    _, source = await api.post("/epg-sources", {"name": "main-epg", "url": url})
    await sources.update(worker, ids_of(source))
    guides.put(
        "/g.xml", guide('<channel id="kino"><display-name>Кино</display-name></channel>', hours("kino", 3))
    )
    await sources.update(worker, ids_of(source))
    _, body = await api.get(f"/epg-sources/{source['epgSourceId']}/channels")
    assert [(c["epgChannelName"], c["displayName"], c["programs"]) for c in body["channels"]] == [
        ("kino", "Кино", 3)
    ]
    assert await sources.pool.fetchval("SELECT count(*) FROM epg_guide_channels") == 1
    await api.delete(f"/epg-sources/{source['epgSourceId']}")
    assert await sources.pool.fetchval("SELECT count(*) FROM epg_guide_channels") == 0


async def test_a_failed_import_keeps_the_declared_channels(
    api: Api, guides: GuideServer, sources: Sources, worker: Worker
) -> None:
    url = guides.put("/g.xml", guide(DECLARED, hours("news.ru", 2)))
    _, source = await api.post("/epg-sources", {"name": "main-epg", "url": url})
    await sources.update(worker, ids_of(source))
    guides.put(
        "/g.xml", guide('<channel id="kino"><display-name>Кино</display-name></channel>', "<programme")
    )
    assert (await sources.update(worker, ids_of(source)))["status"] == "error"
    _, body = await api.get(f"/epg-sources/{source['epgSourceId']}/channels")
    assert [c["epgChannelName"] for c in body["channels"]] == ["empty.ru", "news.ru", "sport.ru"]


async def test_declarations_are_bounded(
    api: Api, guides: GuideServer, sources: Sources, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "MAX_GUIDE_CHANNELS", 2)
    url = guides.put("/g.xml", guide(DECLARED, hours("news.ru", 1)))
    _, source = await api.post("/epg-sources", {"name": "main-epg", "url": url})
    assert (await sources.update(worker, ids_of(source)))["status"] == "success"
    assert await sources.pool.fetchval("SELECT count(*) FROM epg_guide_channels") == 2


async def test_bad_requests(api: Api, client: Any, make_portal: Any, sources: Sources) -> None:
    _, source = await api.post("/epg-sources", {"name": "main-epg", "url": "https://epg.example.com/x.xml"})
    path = f"/epg-sources/{source['epgSourceId']}/channels"
    assert (await api.get(path))[1] == {"channels": []}, "never imported: nothing yet"
    other = Api(client, (await make_portal()).apiKey)
    for status, body in [await other.get(path), await api.get("/epg-sources/garbage/channels")]:
        assert status == 404 and body["field"] == "id"
    for query, field in [
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        (f"cursor={CURSORS.encode('programs', (1, 1))}", "cursor"),
    ]:
        status, body = await api.get(f"{path}?{query}")
        assert status == 400 and body["field"] == field, (query, body)
    reader = await login_staff(api, "reader@example.com")
    assert (await reader.get(path))[0] == 200, "every manager may read"
    assert (await api.as_(None).get(path))[0] == 401


async def walk(api: Api, path: str, limit: int) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        status, body = await api.get(path, params={"limit": limit, **({"cursor": cursor} if cursor else {})})
        assert status == 200 and len(body["channels"]) <= limit
        seen += body["channels"]
        cursor = body.get("next")
        if cursor is None:
            return seen


def iso(moment: dt.datetime, plus_hours: int = 0) -> str:
    return (moment + dt.timedelta(hours=plus_hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def ids_of(source: dict[str, Any]) -> int:
    value = ids.decode(source["epgSourceId"])
    assert value is not None
    return value

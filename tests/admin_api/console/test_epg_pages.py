"""The EPG sources screen through the test client, with a guide served on loopback and
a real EPG worker (the outbound guard allows loopback here, as the EPG tests do)."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from admin_api.console import channels as console_channels
from catena import portals
from epg_worker.scheduler import Worker
from tests.admin_api.content_support import op_types
from tests.conftest import Api
from tests.epg_worker import conftest as epg
from tests.epg_worker.conftest import NOW, GuideServer, document, run_queued, schedule

from .conftest import Console, make_manager, owner_console

# The EPG tests' fixtures: a guide server on 127.0.0.1, a worker, loopback allowed.
admin_settings = epg.admin_settings
epg_settings = epg.epg_settings
guides = epg.guides
session = epg.session
make_worker = epg.make_worker
worker = epg.worker


async def make_source(console: Console, url: str, name: str = "main-epg") -> Any:
    page = await console.post("/epg-sources/new", {"name": name, "url": url, "period": "24"})
    assert page.notice() == f"EPG source {name} created", page.text[-2000:]
    return page


async def test_create_edit_and_errors_beside_their_field(
    console: Console, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    await api.post("/epg-sources", {"name": "taken", "url": "https://epg.example.com/a.xml"})
    await owner_console(console, portal)
    form = await console.get("/epg-sources/new")
    assert [label.text_content() for label in form.css("main form label")] == [
        "Name",
        "URL",
        "Period (hours)",
    ]
    cases = [
        (
            {"name": "taken", "url": "https://epg.example.com/b.xml", "period": "24"},
            409,
            "name",
            "Name must be unique",
        ),
        ({"name": "x", "url": "https://e.example.com/", "period": "24"}, 400, "name", "2-20 characters"),
        ({"name": "ok1", "url": "ftp://epg.example.com/", "period": "24"}, 400, "url", "http:// or https://"),
        ({"name": "ok1", "url": "http://10.1.2.3/guide.xml", "period": "24"}, 400, "url", ""),
        ({"name": "ok1", "url": "https://e.example.com/", "period": "0"}, 400, "period", ">= 1"),
        ({"name": "ok1", "url": "https://e.example.com/", "period": "weekly"}, 400, "period", ""),
        (
            {"name": "ok1", "url": "https://e.example.com/", "period": "12"},
            400,
            "period",
            "multiple of 24 hours",
        ),
    ]
    for data, status, field, words in cases:
        page = await console.post("/epg-sources/new", data)
        assert page.status == status, (data, page.text[-1500:])
        assert words in page.field_error(field), (data, page.field_error(field))
        assert page.one(f"#f-{field}").get("aria-invalid") == "true"
    page = await make_source(console, "https://epg.example.com/guide.xml")
    assert page.one("h1").text_content() == "EPG source main-epg"
    assert "never updated" in page.one("dl.details").text_content()
    edit = page.one("a[href$='/edit']").get("href")
    page = await console.post(
        edit, {"name": "taken", "url": "https://epg.example.com/guide.xml", "period": "48"}
    )
    assert page.status == 409 and page.field_error("name") == "Name must be unique"
    page = await console.post(
        edit, {"name": "renamed", "url": "https://epg.example.com/g2.xml", "period": "168"}
    )
    assert page.notice() == "EPG source renamed saved"
    listing = await console.get("/epg-sources")
    rows = [
        [" ".join(td.text_content().split()) for td in tr.cssselect("td")[:6]]
        for tr in listing.css("#rows tr")
    ]
    assert rows[1] == ["renamed", "https://epg.example.com/g2.xml", "168", "—", "never updated", "—"]
    assert (await op_types(pool, portal))[-2:] == ["createEpgSource", "updateEpgSource"]


async def test_update_now_shows_progress_until_success_then_history_and_programmes(
    console: Console,
    portal: portals.CreatedPortal,
    guides: GuideServer,
    worker: Worker,
    api: Api,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = guides.put("/guide.xml", document(schedule(["one", "two"], 30)))
    await owner_console(console, portal)
    page = await make_source(console, url)
    update = page.one("form[action$='/update']").get("action")
    assert page.texts("form[action$='/update'] button") == ["Update now"]
    page = await console.post(update)
    assert "?job=" in page.url
    waiting = page.one("#progress")
    assert "waiting for the EPG worker" in waiting.text_content()
    poll = waiting.get("hx-get")
    assert waiting.get("hx-trigger") == "every 1s"
    await run_queued(worker)
    done = await console.get(poll, headers={"HX-Request": "true"})
    assert done.headers["HX-Refresh"] == "true"
    assert done.one("#progress").get("hx-trigger") is None  # polling stops
    assert "success" in done.one("#progress .badge").text_content()
    assert "60 programmes imported for 2 channels" in done.one("#progress").text_content()
    page = await console.get(page.url.removeprefix(console.origin))
    assert "success" in page.one("dl.details").text_content()
    history = [
        [" ".join(td.text_content().split()) for td in tr.cssselect("td")[1:6]] for tr in page.css("tbody tr")
    ]
    assert history == [["success", "2", "60", "60", "0"]]
    listing = await console.get("/epg-sources")
    assert [td.text_content() for td in listing.css("#rows td.num")] == ["24", "60"]
    browser = page.one("a[href$='/programs']").get("href")
    programmes = await console.get(f"{browser}?date={NOW.date().isoformat()}&epgChannelName=two")
    assert programmes.texts("#f-epgChannelName option") == ["All channels", "one", "two"]
    assert set(programmes.texts("tbody code")) == {"two"}
    assert programmes.texts("tbody tr td:nth-child(4)")[0].startswith("Передача 0")
    bad = await console.get(f"{browser}?date=tomorrow")
    assert bad.status == 400 and "YYYY-MM-DD" in bad.form_error()
    # The channel form offers the guide's channels once the source has them.
    status, channel = await api.post(
        "/channels", {"name": "ch2", "title": "Two", "epgSourceName": "main-epg", "epgChannelName": "two"}
    )
    form = await console.get(f"/channels/{channel['channelId']}")
    assert form.one("#f-epgSourceName option[selected]").get("value") == "main-epg"
    assert [o.get("value") for o in form.css("#f-epgChannelName option")] == ["", "one", "two"]
    assert form.one("#f-epgChannelName option[selected]").get("value") == "two"
    # A guide longer than one page: a text field suggesting the first channels.
    monkeypatch.setattr(console_channels, "GUIDE", 1)
    form = await console.get(f"/channels/{channel['channelId']}")
    assert form.one("input#f-epgChannelName").get("value") == "two"
    assert [o.get("value") for o in form.css("datalist#guide-channels option")] == ["one"]
    field = await console.get("/channels/epg-channel-field?epgSourceName=", headers={"HX-Request": "true"})
    assert field.one("#f-epgChannelName").tag == "input"
    channels = await console.get("/channels")
    assert channels.texts("tbody .badge") == ["has programmes"]


async def test_a_failed_update_shows_its_error(
    console: Console,
    portal: portals.CreatedPortal,
    guides: GuideServer,
    worker: Worker,
) -> None:
    await owner_console(console, portal)
    page = await make_source(console, guides.url("/missing.xml"))
    page = await console.post(page.one("form[action$='/update']").get("action"))
    await run_queued(worker)
    page = await console.get(page.url.removeprefix(console.origin))
    progress = page.one("#progress")
    assert progress.get("hx-trigger") is None
    assert "The update failed:" in progress.text_content() and "404" in progress.text_content()
    assert page.texts("tbody .badge") == ["error"]


async def test_delete_says_its_channels_are_unlinked(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    status, source = await api.post(
        "/epg-sources", {"name": "main-epg", "url": "https://epg.example.com/g.xml"}
    )
    status, channel = await api.post(
        "/channels", {"name": "ch1", "title": "One", "epgSourceName": "main-epg", "epgChannelName": "one"}
    )
    await owner_console(console, portal)
    confirm = await console.get(f"/epg-sources/{source['epgSourceId']}/delete")
    assert "unlinks its channels" in confirm.one(".warning").text_content()
    page = await console.post(f"/epg-sources/{source['epgSourceId']}/delete")
    assert page.notice() == "EPG source main-epg deleted"
    assert page.texts("#rows .empty") == ["No EPG sources yet."]
    status, after = await api.get(f"/channels/{channel['channelId']}")
    assert (after["epgSourceName"], after["epgStatus"]) == (None, "unlinked")


async def test_a_manager_without_the_content_flag_reads_but_cannot_write(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    status, source = await api.post(
        "/epg-sources", {"name": "main-epg", "url": "https://epg.example.com/g.xml"}
    )
    await make_manager(api, "reader@example.com")
    await console.sign_in("reader@example.com")
    listing = await console.get("/epg-sources")
    assert listing.texts("#rows code") == ["main-epg"]
    assert listing.css(".heading .button") == [] and listing.css(".row-actions a") == []
    path = f"/epg-sources/{source['epgSourceId']}"
    view = await console.get(path)
    assert view.css("main form") == [] and view.css(".danger") == []
    assert view.texts("main .heading .button") == ["Programmes"]
    forged: dict[str, Any] = {
        "/epg-sources/new": {"name": "sneaky", "url": "https://e.example.com/", "period": "24"},
        f"{path}/edit": {"name": "sneaky", "url": "https://e.example.com/", "period": "24"},
        f"{path}/update": {},
        f"{path}/delete": {},
    }
    for target, data in forged.items():
        page = await console.post(target, data)
        assert page.status == 403, target
        assert page.form_error() == "this change needs the isContentAdmin permission", target
    status, body = await api.get(path)
    assert (body["name"], body["last_fetch_result"]) == ("main-epg", None)


async def test_another_portals_source_is_not_found(
    console: Console, portal: portals.CreatedPortal, make_portal: Any
) -> None:
    other = await make_portal()
    status, foreign = await Api(console.client, other.apiKey).post(
        "/epg-sources", {"name": "theirs", "url": "https://epg.example.com/g.xml"}
    )
    await owner_console(console, portal)
    base = f"/epg-sources/{foreign['epgSourceId']}"
    for path in (base, f"{base}/programs", f"{base}/progress?job=x", f"{base}/delete", f"{base}/edit"):
        page = await console.get(path)
        assert page.status == 404, path
    page = await console.post(f"{base}/update")
    assert page.status == 404

"""The Channels screen through the test client: what its pages contain and what forms do."""

from __future__ import annotations

import io
from typing import Any

import asyncpg
from aiohttp import FormData

from catena import portals
from tests.admin_api.content_support import GIF, data_uri, op_types, png
from tests.conftest import Api

from .conftest import Console, make_manager


def channel_form(
    name: str | None = None, title: str = "", logo: bytes | None = None, **fields: str
) -> FormData:
    form = FormData()
    if name is not None:
        form.add_field("name", name)
    form.add_field("title", title)
    for key, value in fields.items():
        form.add_field(key, value)
    if logo is not None:
        form.add_field("logo", io.BytesIO(logo), filename="logo.png", content_type="image/png")
    else:
        form.add_field("logo", b"", filename="", content_type="application/octet-stream")
    return form


async def signed_in_owner(console: Console, portal: portals.CreatedPortal) -> Console:
    await console.sign_in(portal.ownerEmail, portal.ownerPassword)
    await console.get("/channels")
    return console


async def test_the_list_shows_logo_title_name_packages_and_epg(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    await api.post("/epg-sources", {"name": "main-epg", "url": "https://epg.example.com/guide.xml"})
    status, sport = await api.post(
        "/channels",
        {
            "name": "sport1",
            "title": "Спорт 1",
            "number": 7,
            "logo": data_uri(png()),
            "epgSourceName": "main-epg",
            "epgChannelName": "sport",
        },
    )
    assert status == 200, sport
    await api.post("/channels", {"name": "news", "title": "News"})
    status, package = await api.post("/packages", {"name": "basic"})
    await api.post("/channels-packages", {"channelId": sport["channelId"], "packageId": package["packageId"]})
    await signed_in_owner(console, portal)
    page = await console.get("/channels")
    rows = page.css("tbody#rows tr")
    assert [r.cssselect("td")[2].text_content() for r in rows] == ["Спорт 1", "News"]
    assert [r.cssselect("td.num")[0].text_content() for r in rows] == ["7", "—"]
    assert page.texts("tbody code") == ["sport1", "news"]
    assert [img.get("src") for img in page.css("img.thumb")] == [f"/channels/{sport['channelId']}/logo"]
    assert page.texts("tbody .tag") == ["basic"]
    assert page.texts("tbody .badge") == ["linked, no programmes", "not linked"]
    assert page.texts(".heading .button") == ["Create channel"]
    async with console.client.get(f"/channels/{sport['channelId']}/logo") as resp:
        assert resp.status == 200 and resp.content_type == "image/png"
        assert await resp.read() == png()


async def test_create_with_a_logo(
    console: Console, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    await signed_in_owner(console, portal)
    form = await console.get("/channels/new")
    assert {label.text_content().strip() for label in form.css("form label")} >= {
        "Name",
        "Title",
        "Logo",
        "EPG source",
        "EPG channel",
    }
    page = await console.post("/channels/new", channel_form("sport1", "Sport One", logo=png(4, 4)))
    assert page.status == 200 and page.url.endswith("/channels")
    assert page.notice() == "Channel sport1 created"
    assert page.texts("tbody code") == ["sport1"]
    assert len(page.css("img.thumb")) == 1
    assert await op_types(pool, portal) == ["createChannel"]


async def test_errors_land_beside_the_field_they_name(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    await api.post("/channels", {"name": "sport1", "title": "Sport"})
    await signed_in_owner(console, portal)
    page = await console.post("/channels/new", channel_form("sport1", "Again"))
    assert page.status == 409
    assert page.field_error("name") == "Name must be unique"
    assert page.one("#f-name").get("aria-invalid") == "true"
    assert page.one("#f-title").get("value") == "Again"
    page = await console.post("/channels/new", channel_form("bad name!", "Bad"))
    assert page.status == 400
    assert "2-20 characters" in page.field_error("name")
    page = await console.post("/channels/new", channel_form("good", "Good", logo=GIF))
    assert page.status == 400
    assert page.field_error("logo") == "logo data is not a PNG or JPEG image"
    # A source that does not exist yet is accepted (issue 11); a name no source can have is not.
    page = await console.post("/channels/new", channel_form("good", "Good", epgSourceName="no where"))
    assert page.status == 400
    assert "2-20 characters" in page.field_error("epgSourceName")
    page = await console.post("/channels/new", channel_form("good", ""))
    assert page.status == 400 and page.field_error("title")
    listing = await console.get("/channels")
    assert listing.texts("tbody code") == ["sport1"]


async def test_an_oversized_logo_is_named(console: Console, portal: portals.CreatedPortal) -> None:
    await signed_in_owner(console, portal)
    page = await console.post("/channels/new", channel_form("big", "Big", logo=png(noise=b"x" * 1_200_000)))
    assert page.status == 400
    assert "at most 1 MiB" in page.field_error("logo")


async def test_edit_changes_title_and_removes_the_logo(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    status, channel = await api.post(
        "/channels", {"name": "sport1", "title": "Sport", "logo": data_uri(png())}
    )
    await signed_in_owner(console, portal)
    form = await console.get(f"/channels/{channel['channelId']}")
    assert form.one("#f-title").get("value") == "Sport"
    assert form.css("input[name=name]") == []  # the name cannot change
    assert form.one("#logo-preview").get("src") == f"/channels/{channel['channelId']}/logo"
    edit = FormData({"title": "Sport HD", "epgSourceName": "", "epgChannelName": "", "removeLogo": "1"})
    page = await console.post(f"/channels/{channel['channelId']}", edit)
    assert page.notice() == "Channel sport1 saved"
    status, after = await api.get(f"/channels/{channel['channelId']}")
    assert (after["title"], after["logoUrl"]) == ("Sport HD", None)


async def test_delete_says_what_goes_with_the_channel(
    console: Console, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    status, channel = await api.post("/channels", {"name": "sport1", "title": "Sport"})
    status, package = await api.post("/packages", {"name": "premium"})
    await api.post(
        "/channels-packages", {"channelId": channel["channelId"], "packageId": package["packageId"]}
    )
    await signed_in_owner(console, portal)
    confirm = await console.get(f"/channels/{channel['channelId']}/delete")
    assert "removed from every package" in confirm.one(".warning").text_content()
    assert confirm.texts(".warning .tag") == ["premium"]
    page = await console.post(f"/channels/{channel['channelId']}/delete")
    assert page.notice() == "Channel sport1 deleted"
    assert page.texts("tbody code") == []
    assert "deleteChannel" in await op_types(pool, portal)


async def test_another_portals_channel_is_not_found(
    console: Console, portal: portals.CreatedPortal, make_portal: Any
) -> None:
    other = await make_portal()
    status, foreign = await Api(console.client, other.apiKey).post(
        "/channels", {"name": "theirs", "title": "T"}
    )
    await signed_in_owner(console, portal)
    for path in (
        f"/channels/{foreign['channelId']}",
        f"/channels/{foreign['channelId']}/delete",
        "/channels/nonsense",
    ):
        page = await console.get(path)
        assert page.status == 404, path
    page = await console.post(f"/channels/{foreign['channelId']}/delete")
    assert page.status == 404
    status, still = await Api(console.client, other.apiKey).get(f"/channels/{foreign['channelId']}")
    assert status == 200


async def test_a_manager_without_the_content_flag_reads_but_cannot_write(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    status, channel = await api.post("/channels", {"name": "sport1", "title": "Sport"})
    await make_manager(api, "reader@example.com")
    await console.sign_in("reader@example.com")
    page = await console.get("/channels")
    assert page.texts("tbody code") == ["sport1"]
    assert page.css(".heading .button") == [] and page.css(".row-actions a") == []
    detail = await console.get(f"/channels/{channel['channelId']}")
    assert detail.css("form[enctype]") == [] and detail.css(".danger") == []
    assert "Sport" in detail.one("dl.details").text_content()
    # A form made by hand still reaches the action, which refuses it with the API's message.
    forged = await console.post("/channels/new", channel_form("sneaky", "Sneaky"))
    assert forged.status == 403
    assert forged.form_error() == "this change needs the isContentAdmin permission"
    forged = await console.post(f"/channels/{channel['channelId']}/delete")
    assert forged.status == 403
    assert forged.form_error() == "this change needs the isContentAdmin permission"
    status, body = await api.get("/channels")
    assert [c["name"] for c in body["channels"]] == ["sport1"]


async def test_next_page_continues_the_list(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    for n in range(5):
        await api.post("/channels", {"name": f"ch{n}", "title": f"Channel {n}"})
    await signed_in_owner(console, portal)
    page = await console.get("/channels?limit=2")
    assert page.texts("tbody code") == ["ch0", "ch1"]
    more = page.one("tr.more a")
    assert more.get("href") == more.get("hx-get")
    fragment = await console.get(more.get("hx-get"), headers={"HX-Request": "true"})
    assert fragment.texts("code") == ["ch2", "ch3"]
    assert fragment.css("nav") == []  # a fragment, not a whole page

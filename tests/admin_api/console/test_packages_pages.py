"""The Packages screen through the test client: list, forms, composition, delete and force."""

from __future__ import annotations

from typing import Any

import asyncpg

from catena import portals
from tests.admin_api.content_support import op_types
from tests.admin_api.test_packages import subscribe
from tests.conftest import Api

from .conftest import Console, make_manager, owner_console


async def test_the_list_shows_counts_the_free_marker_and_searches(
    console: Console, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    status, sport = await api.post("/channels", {"name": "sport1", "title": "Sport"})
    status, basic = await api.post("/packages", {"name": "basic", "description": "Everyday channels"})
    status, free = await api.post("/packages", {"name": "promo"})
    await api.post("/channels-packages", {"channelId": sport["channelId"], "packageId": basic["packageId"]})
    await api.post(f"/portal/free-packages/{free['packageId']}")
    await subscribe(pool, portal, basic, "9000000001")
    await owner_console(console, portal)
    page = await console.get("/packages")
    rows = [
        [" ".join(td.text_content().split()) for td in tr.cssselect("td")[:4]] for tr in page.css("#rows tr")
    ]
    assert rows == [["basic", "Everyday channels", "1", "1"], ["promo free", "—", "0", "0"]]
    assert page.texts(".heading .button") == ["Create package"]
    assert page.one("label[for=f-q]").text_content() == "Search by name or description"
    found = await console.get("/packages?q=EVERYDAY", headers={"HX-Request": "true"})
    assert found.texts("code") == ["basic"] and found.css("nav") == []
    none = await console.get("/packages?q=nothing")
    assert none.texts("#rows .empty") == ["No packages match “nothing”."]


async def test_create_edit_and_errors_beside_their_field(
    console: Console, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    await api.post("/packages", {"name": "basic"})
    await owner_console(console, portal)
    form = await console.get("/packages/new")
    assert [label.text_content().strip() for label in form.css("form label")] == ["Name", "Description"]
    page = await console.post("/packages/new", {"name": "basic", "description": "again"})
    assert page.status == 409 and page.field_error("name") == "Name must be unique"
    assert page.one("#f-description").text_content() == "again"
    page = await console.post("/packages/new", {"name": "x", "description": ""})
    assert page.status == 400 and "2-20 characters" in page.field_error("name")
    page = await console.post("/packages/new", {"name": "premium", "description": "d" * 2001})
    assert page.status == 400 and page.field_error("description")
    page = await console.post("/packages/new", {"name": "premium", "description": "The best"})
    assert page.notice() == "Package premium created"
    assert page.one("h1").text_content().strip() == "Package premium"
    edit_path = page.one("a[href$='/edit']").get("href")
    page = await console.post(edit_path, {"name": "basic", "description": "x"})
    assert page.status == 409 and page.field_error("name") == "Name must be unique"
    page = await console.post(edit_path, {"name": "gold", "description": "Renamed"})
    assert page.notice() == "Package gold saved"
    status, body = await api.get("/packages?name=gold")
    assert [p["description"] for p in body["packages"]] == ["Renamed"]
    assert await op_types(pool, portal) == ["createPackage", "createPackage", "updatePackage"]


async def test_composition_adds_and_removes_channels(
    console: Console, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    status, sport = await api.post("/channels", {"name": "sport1", "title": "Sport", "number": 3})
    status, news = await api.post("/channels", {"name": "news", "title": "News"})
    status, package = await api.post("/packages", {"name": "basic"})
    path = f"/packages/{package['packageId']}"
    await owner_console(console, portal)
    page = await console.get(path)
    assert page.texts("#f-channelId option") == ["Sport (sport1)", "News (news)"]
    assert page.texts("form.add-channel button") == ["Add channel"]
    choices = await console.get(f"{path}/choices?q=new", headers={"HX-Request": "true"})
    assert choices.texts("#f-channelId option") == ["News (news)"]
    page = await console.post(f"{path}/channels", {"channelId": sport["channelId"]})
    assert page.notice() == "Channel added to the package"
    assert page.texts("tbody code") == ["sport1"] and page.texts("tbody td.num") == ["3"]
    assert page.texts("#f-channelId option") == ["News (news)"]
    page = await console.post(f"{path}/channels", {"channelId": sport["channelId"]})
    assert page.status == 409 and page.form_error() == "the channel is already in this package"
    page = await console.post(f"{path}/channels", {"channelId": "nonsense"})
    assert page.status == 404 and page.field_error("channelId") == "no such channel"
    page = await console.post(f"{path}/channels/{sport['channelId']}/remove")
    assert page.notice() == "Channel removed from the package"
    assert page.texts("tbody .empty") == ["The package has no channels yet."]
    status, body = await api.get(f"/packages/{package['packageId']}")
    assert body["channels"] == []
    assert (await op_types(pool, portal))[-2:] == ["addChannelToPackage", "removeChannelFromPackage"]


async def test_delete_shows_what_blocks_it_and_offers_the_forced_delete(
    console: Console, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    status, package = await api.post("/packages", {"name": "basic"})
    await subscribe(pool, portal, package, "9000000001")
    await subscribe(pool, portal, package, "9000000002")
    path = f"/packages/{package['packageId']}/delete"
    await owner_console(console, portal)
    confirm = await console.get(path)
    assert "2 subscribers are subscribed to it." in confirm.one(".warning").text_content()
    assert "A forced delete ends every subscription" in confirm.one(".warning").text_content()
    refused = await console.post(path)
    assert refused.status == 409
    assert refused.form_error().startswith("the package cannot be deleted: 2 subscriber(s) are subscribed")
    assert refused.texts(".actions button") == ["Delete anyway, ending the subscriptions"]
    status, still = await api.get(f"/packages/{package['packageId']}")
    assert status == 200
    page = await console.post(path, {"force": "true"})
    assert page.notice() == "Package basic deleted"
    status, gone = await api.get(f"/packages/{package['packageId']}")
    assert status == 404
    ops = await op_types(pool, portal)
    assert ops.count("deletePackageSubscriber") == 2 and ops[-1] == "deletePackage"


async def test_an_unused_package_is_deleted_at_once(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    status, package = await api.post("/packages", {"name": "basic"})
    await owner_console(console, portal)
    confirm = await console.get(f"/packages/{package['packageId']}/delete")
    assert confirm.texts(".actions button") == ["Delete"]
    page = await console.post(f"/packages/{package['packageId']}/delete")
    assert page.notice() == "Package basic deleted"
    assert page.texts("#rows .empty") == ["No packages yet."]


async def test_a_manager_without_the_content_flag_reads_but_cannot_write(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    status, sport = await api.post("/channels", {"name": "sport1", "title": "Sport"})
    status, package = await api.post("/packages", {"name": "basic"})
    await api.post("/channels-packages", {"channelId": sport["channelId"], "packageId": package["packageId"]})
    await make_manager(api, "reader@example.com")
    await console.sign_in("reader@example.com")
    listing = await console.get("/packages")
    assert listing.texts("#rows code") == ["basic"]
    assert listing.css(".heading .button") == [] and listing.css(".row-actions a") == []
    path = f"/packages/{package['packageId']}"
    view = await console.get(path)
    assert view.texts("tbody code") == ["sport1"]
    assert view.css("main form") == [] and view.css("main button") == []
    assert view.css(".danger") == [] and view.css("a[href$='/edit']") == []
    forged: dict[str, Any] = {
        "/packages/new": {"name": "sneaky"},
        f"{path}/edit": {"name": "sneaky"},
        f"{path}/channels": {"channelId": sport["channelId"]},
        f"{path}/channels/{sport['channelId']}/remove": {},
        f"{path}/delete": {"force": "true"},
    }
    for target, data in forged.items():
        page = await console.post(target, data)
        assert page.status == 403, target
        assert page.form_error() == "this change needs the isContentAdmin permission", (
            target,
            page.text[-1500:],
        )
    status, body = await api.get(path)
    assert (body["name"], body["channels"]) == ("basic", ["sport1"])


async def test_another_portals_package_is_not_found(
    console: Console, portal: portals.CreatedPortal, make_portal: Any
) -> None:
    other = await make_portal()
    status, foreign = await Api(console.client, other.apiKey).post("/packages", {"name": "theirs"})
    await owner_console(console, portal)
    for path in (
        f"/packages/{foreign['packageId']}",
        f"/packages/{foreign['packageId']}/delete",
        "/packages/x",
    ):
        page = await console.get(path)
        assert page.status == 404, path
    page = await console.post(f"/packages/{foreign['packageId']}/delete", {"force": "true"})
    assert page.status == 404
    status, still = await Api(console.client, other.apiKey).get(f"/packages/{foreign['packageId']}")
    assert status == 200

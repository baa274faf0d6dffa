"""The Subscribers screens through the test client: what the pages contain and what forms do."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import asyncpg

from catena import ids, portals
from tests.admin_api.content_support import op_types
from tests.conftest import Api

from .conftest import Console, Page, make_manager


async def signed_in_owner(console: Console, portal: portals.CreatedPortal) -> Console:
    await console.sign_in(portal.ownerEmail, portal.ownerPassword)
    await console.get("/subscribers")
    return console


async def make_subscriber(api: Api, name: str = "Иван Петров", phone: str = "9161234567") -> dict[str, Any]:
    status, body = await api.post("/subscribers", {"name": name, "phoneCountryCode": "7", "phone": phone})
    assert status == 200, body
    return dict(body)


async def make_package(api: Api, name: str, *, free: bool = False) -> str:
    status, body = await api.post("/packages", {"name": name})
    assert status == 200, body
    if free:
        status, portal = await api.post(f"/portal/free-packages/{body['packageId']}")
        assert status == 201, portal
    return str(body["packageId"])


async def add_session(
    pool: asyncpg.Pool, portal: portals.CreatedPortal, subscriber: str, *, active: bool
) -> str:
    session_id = ids.new_id()
    await pool.execute(
        """INSERT INTO play_sessions (id, portal_id, subscriber_id, channel_name, flussonic_id, opened_at,
                                      updated_at, closed_at, active, bytes, ip, user_agent)
           VALUES ($1, $2, $3, $4, $5, now() - interval '1 hour', now(),
                   CASE WHEN $6 THEN NULL ELSE now() END, $6, 157286400, '203.0.113.5', 'VLC/3.0.20')""",
        session_id,
        ids.decode(portal.portalId),
        ids.decode(subscriber),
        "sport1" if active else "news24",
        f"f-{session_id}",
        active,
    )
    return ids.encode(session_id)


def card_path(subscriber: dict[str, Any]) -> str:
    return f"/subscribers/{subscriber['subscriberId']}"


async def test_the_list_shows_phone_status_packages_and_last_activity(
    console: Console, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    ivan = await make_subscriber(api)
    petr = await make_subscriber(api, "Пётр Фёдоров", "9035550101")
    basic = await make_package(api, "basic")
    await api.post("/packages-subscribers", {"subscriberId": ivan["subscriberId"], "packageId": basic})
    await api.post(f"/subscribers/{petr['subscriberId']}/disable", {"reason": "неоплата"})
    await pool.execute(
        "UPDATE subscribers SET last_activity_at = '2026-11-30T18:05:00Z' WHERE id = $1",
        ids.decode(ivan["subscriberId"]),
    )
    await signed_in_owner(console, portal)
    page = await console.get("/subscribers")
    rows = [
        [" ".join(td.text_content().split()) for td in tr.cssselect("td")] for tr in page.css("tbody#rows tr")
    ]
    assert rows == [
        ["Иван Петров", "+7 9161234567", "enabled", "1", "2026-11-30 18:05 UTC"],
        ["Пётр Фёдоров", "+7 9035550101", "disabled", "0", "—"],
    ]
    assert page.one("tbody time").get("datetime") == "2026-11-30T18:05:00Z"
    assert page.css("tbody a")[0].get("href") == card_path(ivan)
    assert page.texts(".heading .button") == ["Create subscriber"]
    assert page.one("label[for=f-q]").text_content() == "Search by phone or name"


async def test_search_by_phone_or_name_and_status(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    await make_subscriber(api)
    petr = await make_subscriber(api, "Пётр Фёдоров", "9035550101")
    await api.post(f"/subscribers/{petr['subscriberId']}/disable", {})
    await signed_in_owner(console, portal)

    def names(page: Page) -> list[str]:
        return page.texts("tbody#rows td:first-child")

    assert names(await console.get("/subscribers?q=916123")) == ["Иван Петров"]
    assert names(await console.get("/subscribers?q=" + quote("+7 903 555"))) == ["Пётр Фёдоров"]
    assert names(await console.get("/subscribers?q=" + quote("федор"))) == ["Пётр Фёдоров"]
    assert names(await console.get("/subscribers?disabled=true")) == ["Пётр Фёдоров"]
    # The form's "All" sends an empty status: no filter.
    assert names(await console.get("/subscribers?q=&disabled=")) == ["Иван Петров", "Пётр Фёдоров"]
    bad = await console.get("/subscribers?disabled=maybe")
    assert bad.status == 400 and "bool" in bad.field_error("disabled")
    assert names(await console.get("/subscribers?q=7&disabled=false")) == ["Иван Петров"]
    none = await console.get("/subscribers?q=nobody")
    assert none.texts("tbody#rows td") == ["No subscribers match."]
    # htmx asks as the operator types: the rows alone come back.
    fragment = await console.get("/subscribers?q=916", headers={"HX-Request": "true"})
    assert fragment.texts("td:first-child") == ["Иван Петров"] and fragment.css("nav") == []
    # Too long a search is the API's 400, shown beside the search field.
    long = await console.get("/subscribers?q=" + "9" * 101)
    assert long.status == 400
    assert "length <= 100" in long.field_error("q")
    assert long.one("#f-q").get("aria-invalid") == "true"


async def test_keyset_pages_continue_the_list(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    for n in range(5):
        await make_subscriber(api, f"Subscriber {n}", f"900000000{n}")
    await signed_in_owner(console, portal)
    page = await console.get("/subscribers?limit=2&q=Subscriber")
    assert page.texts("tbody#rows tr:not(.more) td:first-child") == ["Subscriber 0", "Subscriber 1"]
    more = page.one("tr.more a").get("hx-get")
    assert "q=Subscriber" in more and "cursor=" in more
    fragment = await console.get(more, headers={"HX-Request": "true"})
    assert fragment.texts("td:first-child")[:2] == ["Subscriber 2", "Subscriber 3"]


async def test_create_with_errors_beside_their_fields(
    console: Console, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    await make_subscriber(api)
    await signed_in_owner(console, portal)
    form = await console.get("/subscribers/new")
    assert {label.text_content().strip() for label in form.css("form label")} >= {
        "Phone country code",
        "Phone",
        "Name",
    }
    taken = {"phoneCountryCode": "7", "phone": "9161234567", "name": "Again", "maxSessions": ""}
    page = await console.post("/subscribers/new", taken)
    assert page.status == 409
    assert page.field_error("phone") == "A subscriber with this phone number already exists"
    assert page.one("#f-name").get("value") == "Again"
    page = await console.post("/subscribers/new", {**taken, "phone": "916-12a"})
    assert page.status == 400 and "digits only" in page.field_error("phone")
    page = await console.post("/subscribers/new", {**taken, "phoneCountryCode": "+7", "phone": "1"})
    assert page.status == 400 and "digits only" in page.field_error("phoneCountryCode")
    page = await console.post("/subscribers/new", {**taken, "phone": "1", "name": "   "})
    assert page.status == 400 and page.field_error("name")
    page = await console.post("/subscribers/new", {**taken, "phone": "1", "maxSessions": "0"})
    assert page.status == 400 and ">= 1" in page.field_error("maxSessions")
    page = await console.post(
        "/subscribers/new", {**taken, "phone": "9035550101", "name": "Пётр", "maxSessions": "2"}
    )
    assert page.status == 200 and page.notice() == "Subscriber Пётр created"
    assert page.one("h1").text_content().startswith("Пётр")
    status, body = await api.get("/subscribers?phone=9035550101")
    assert body["subscribers"][0]["maxSessions"] == 2
    assert await op_types(pool, portal) == ["createSubscriber", "createSubscriber"]


async def test_edit(console: Console, api: Api, portal: portals.CreatedPortal) -> None:
    ivan = await make_subscriber(api)
    await signed_in_owner(console, portal)
    form = await console.get(card_path(ivan) + "/edit")
    assert form.one("#f-phone").get("value") == "9161234567"
    edit = {"phoneCountryCode": "7", "phone": "9161234567", "name": "Иван Сидоров", "maxSessions": "3"}
    page = await console.post(card_path(ivan) + "/edit", edit)
    assert page.notice() == "Subscriber Иван Сидоров saved"
    status, after = await api.get(card_path(ivan))
    assert (after["name"], after["maxSessions"], after["playback_token"]) == (
        "Иван Сидоров",
        3,
        ivan["playback_token"],
    )
    page = await console.post(card_path(ivan) + "/edit", {**edit, "phone": "x"})
    assert page.status == 400 and "digits only" in page.field_error("phone")


async def test_the_card_shows_packages_sessions_operations_and_the_playlist(
    console: Console, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    ivan = await make_subscriber(api)
    premium = await make_package(api, "premium")
    await make_package(api, "basic", free=True)
    await make_package(api, "sport")
    await api.post("/packages-subscribers", {"subscriberId": ivan["subscriberId"], "packageId": premium})
    await add_session(pool, portal, ivan["subscriberId"], active=True)
    await add_session(pool, portal, ivan["subscriberId"], active=False)
    await signed_in_owner(console, portal)
    page = await console.get(card_path(ivan))
    assert page.texts(".package-list .package-name") == ["premium", "basic"]
    assert page.texts(".package-list li.free .badge") == ["free"]
    assert page.texts(".package-list button") == ["Remove"]  # only the explicit one
    assert page.one(".package-list button").get("aria-label") == "Remove package premium"
    assert page.texts("#f-packageId option") == ["Choose a package", "basic (free)", "sport"]
    assert page.texts("#open-sessions tbody code") == ["sport1"]
    assert page.texts("#past-sessions tbody code") == ["news24"]
    assert "150.0 MiB" in page.texts("#past-sessions tbody td")
    assert page.texts("#operations tbody td:nth-child(2)") == ["Created", "Package added"]
    playlist = page.one("#playlist-link").get("value")
    assert playlist == f"{console.origin}/client/api/v1/playlist.m3u8?token={quote(ivan['playback_token'])}"
    async with console.client.get(playlist.removeprefix(console.origin)) as resp:
        assert resp.status == 200 and resp.content_type == "audio/x-mpegurl"


async def test_add_and_remove_packages(
    console: Console, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    ivan = await make_subscriber(api)
    premium = await make_package(api, "premium")
    basic = await make_package(api, "basic", free=True)
    await signed_in_owner(console, portal)
    page = await console.post(card_path(ivan) + "/packages", {"packageId": premium})
    assert page.notice() == "Package premium added"
    assert page.texts(".package-list .package-name") == ["premium", "basic"]
    again = await console.post(card_path(ivan) + "/packages", {"packageId": premium})
    assert again.status == 409
    assert again.field_error("packageId") == "the subscriber is already subscribed to this package"
    empty = await console.post(card_path(ivan) + "/packages", {"packageId": ""})
    assert empty.status == 404 and empty.field_error("packageId") == "no such package"
    page = await console.post(f"{card_path(ivan)}/packages/{premium}/remove")
    assert page.notice() == "Package premium removed"
    status, after = await api.get(card_path(ivan))
    assert after["packages"] == []
    # A free package is not the subscriber's to remove: the API says so.
    refused = await console.post(f"{card_path(ivan)}/packages/{basic}/remove")
    assert refused.status == 404 and "free packages" in refused.form_error()
    assert [t for t in await op_types(pool, portal) if "Subscriber" in t] == [
        "createSubscriber",
        "createPackageSubscriber",
        "deletePackageSubscriber",
    ]


async def test_disable_with_a_reason_and_enable(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    ivan = await make_subscriber(api)
    await signed_in_owner(console, portal)
    card = await console.get(card_path(ivan))
    assert card.one("label[for=f-reason]").text_content() == "Reason"
    page = await console.post(card_path(ivan) + "/disable", {"reason": "x" * 501})
    assert page.status == 400 and "length <= 500" in page.field_error("reason")
    page = await console.post(card_path(ivan) + "/disable", {"reason": "неоплата"})
    assert page.notice() == "Subscriber Иван Петров disabled"
    assert "Disabled: неоплата" in page.texts("dl.details dd")
    assert page.css("#f-reason") == [] and "Enable" in page.texts("form button.primary")
    status, after = await api.get(card_path(ivan))
    assert (after["disabled"], after["disabledReason"]) == (True, "неоплата")
    again = await console.post(card_path(ivan) + "/disable", {"reason": ""})
    assert again.status == 409 and again.form_error() == "the subscriber is already disabled"
    assert again.one("h1").text_content() == "That did not work"
    page = await console.post(card_path(ivan) + "/enable")
    assert page.notice() == "Subscriber Иван Петров enabled"
    status, after = await api.get(card_path(ivan))
    assert after["disabled"] is False
    assert page.texts("#operations tbody td:nth-child(2)") == ["Created", "Disabled", "Enabled"]


async def test_reset_the_playback_token(console: Console, api: Api, portal: portals.CreatedPortal) -> None:
    ivan = await make_subscriber(api)
    await signed_in_owner(console, portal)
    confirm = await console.get(card_path(ivan) + "/reset-token")
    assert "stops working at once" in confirm.one(".warning").text_content()
    page = await console.post(card_path(ivan) + "/reset-token")
    assert page.notice() == "A new playback token was issued to Иван Петров"
    status, after = await api.get(card_path(ivan))
    assert after["playback_token"] != ivan["playback_token"]
    assert quote(after["playback_token"]) in page.one("#playlist-link").get("value")
    status, _ = await Api(console.client, None).get(
        "/client/api/v1/playlist.m3u8?token=" + quote(ivan["playback_token"])
    )
    assert status == 401


async def test_delete_says_what_ends(
    console: Console, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    ivan = await make_subscriber(api)
    premium = await make_package(api, "premium")
    await api.post("/packages-subscribers", {"subscriberId": ivan["subscriberId"], "packageId": premium})
    await signed_in_owner(console, portal)
    confirm = await console.get(card_path(ivan) + "/delete")
    warning = confirm.one(".warning").text_content()
    assert "subscriptions" in warning and "history of play sessions is kept" in warning
    assert confirm.texts(".warning .tag") == ["premium"]
    page = await console.post(card_path(ivan) + "/delete")
    assert page.notice() == "Subscriber Иван Петров deleted"
    assert page.url.endswith("/subscribers")
    assert (await api.get(card_path(ivan)))[0] == 404
    assert (await op_types(pool, portal))[-2:] == ["deletePackageSubscriber", "deleteSubscriber"]


async def test_a_manager_without_the_subscriber_flag_reads_but_cannot_write(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    ivan = await make_subscriber(api)
    premium = await make_package(api, "premium")
    await api.post("/packages-subscribers", {"subscriberId": ivan["subscriberId"], "packageId": premium})
    await make_manager(api, "reader@example.com", isContentAdmin=True)
    await console.sign_in("reader@example.com")
    listing = await console.get("/subscribers")
    assert listing.texts("tbody#rows td:first-child") == ["Иван Петров"]
    assert listing.css(".heading .button") == []
    card = await console.get(card_path(ivan))
    assert card.texts(".package-list .package-name") == ["premium"]
    assert card.css("form[method=post] button") == [
        b for b in card.css("header form button, .languages button")
    ]
    assert (
        card.css("#f-packageId") == [] and card.css("#f-reason") == [] and card.css(".heading .button") == []
    )
    assert card.one("#playlist-link").get("value")
    message = "this change needs the isSubscriberAdmin permission"
    forged = [
        ("/subscribers/new", {"phoneCountryCode": "7", "phone": "1", "name": "X"}),
        (card_path(ivan) + "/edit", {"phoneCountryCode": "7", "phone": "1", "name": "X"}),
        (card_path(ivan) + "/packages", {"packageId": premium}),
        (f"{card_path(ivan)}/packages/{premium}/remove", {}),
        (card_path(ivan) + "/disable", {"reason": "x"}),
        (card_path(ivan) + "/enable", {}),
        (card_path(ivan) + "/reset-token", {}),
        (card_path(ivan) + "/delete", {}),
    ]
    for path, data in forged:
        page = await console.post(path, data)
        assert page.status == 403, path
        assert message in page.text, path
    status, after = await api.get(card_path(ivan))
    assert after == {**ivan, "packages": [premium], "updatedAt": after["updatedAt"]}


async def test_another_portals_subscriber_is_not_found(
    console: Console, portal: portals.CreatedPortal, make_portal: Any
) -> None:
    other = await make_portal()
    theirs = await make_subscriber(Api(console.client, other.apiKey))
    await signed_in_owner(console, portal)
    for path in ("", "/edit", "/delete", "/reset-token", "/sessions", "/operations"):
        page = await console.get(card_path(theirs) + path)
        assert page.status == 404, path
    assert (await console.get("/subscribers/nonsense")).status == 404
    for path in ("/delete", "/disable", "/enable", "/reset-token", "/edit"):
        page = await console.post(
            card_path(theirs) + path, {"name": "X", "phoneCountryCode": "7", "phone": "1"}
        )
        assert page.status == 404, path
    status, still = await Api(console.client, other.apiKey).get(card_path(theirs))
    assert status == 200 and still["disabled"] is False and still["name"] == "Иван Петров"


async def test_history_pages_continue(
    console: Console, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    ivan = await make_subscriber(api)
    for _ in range(22):
        await add_session(pool, portal, ivan["subscriberId"], active=False)
    for n in range(12):
        await api.post(f"/subscribers/{ivan['subscriberId']}/disable", {"reason": f"r{n}"})
        await api.post(f"/subscribers/{ivan['subscriberId']}/enable")
    await signed_in_owner(console, portal)
    card = await console.get(card_path(ivan))
    assert len(card.css("#past-sessions tbody code")) == 20
    assert len(card.css("#operations tbody tr:not(.more)")) == 20
    more = card.one("#past-sessions tr.more a").get("hx-get")
    rows = await console.get(more, headers={"HX-Request": "true"})
    assert len(rows.css("code")) == 2 and rows.css("tr.more") == []
    whole = await console.get(more)
    assert whole.one("h1").text_content() == "Past sessions" and len(whole.css("tbody code")) == 2
    more = card.one("#operations tr.more a").get("hx-get")
    rows = await console.get(more, headers={"HX-Request": "true"})
    assert len(rows.css("tr")) == 5  # 25 operations in all


async def test_htmx_restoring_history_gets_the_whole_page_and_bad_cursors_are_400s(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    ivan = await make_subscriber(api)
    await signed_in_owner(console, portal)
    restore = {"HX-Request": "true", "HX-History-Restore-Request": "true"}
    page = await console.get("/subscribers?q=916", headers=restore)
    assert page.css("nav.sections") and page.texts("tbody#rows td:first-child") == ["Иван Петров"]
    for path in ("/subscribers?cursor=forged", card_path(ivan) + "/sessions?cursor=forged"):
        bad = await console.get(path)
        assert bad.status == 400 and "cursor" in bad.form_error(), path

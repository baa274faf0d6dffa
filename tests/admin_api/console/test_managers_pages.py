"""The Managers screen through the test client: the list, create, edit rights, delete,
and the manual's rules refused with the API's words beside the field they concern."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from catena import portals
from tests.conftest import Api

from .conftest import PASSWORD, Console, make_manager


def error_beside(page: Any, name: str) -> str:
    """The error shown beside field ``name`` (ids may hold dots, so no ``#id`` selector)."""
    found = page.css(f'[id="{name}-error"]')
    assert len(found) == 1, (name, page.text[:3000])
    return " ".join(found[0].text_content().split())


async def owner(console: Console, portal: portals.CreatedPortal) -> Console:
    await console.sign_in(portal.ownerEmail, portal.ownerPassword)
    await console.get("/managers")
    return console


async def test_the_list_shows_rights_owner_and_last_sign_in(
    console: Console, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    await make_manager(api, "content@example.com", isContentAdmin=True, isSubscriberAdmin=True)
    await make_manager(api, "reader@example.com")
    await owner(console, portal)
    page = await console.get("/managers")
    rows = page.css("tbody#rows tr")
    assert [r.cssselect("td")[1].text_content() for r in rows] == [
        portal.ownerEmail,
        "content@example.com",
        "reader@example.com",
    ]
    assert page.texts("tbody .badge.owner") == ["owner"]
    assert [" ".join(r.cssselect("td.rights")[0].text_content().split()) for r in rows] == [
        "all rights",
        "isContentAdmin isSubscriberAdmin",
        "read only",
    ]
    # The owner signed in just now; the others never did.  Times are UTC <time> elements.
    last = [r.cssselect("td")[3] for r in rows]
    assert last[0].cssselect("time")[0].get("datetime").endswith("Z")
    assert [" ".join(cell.text_content().split()) for cell in last[1:]] == ["never", "never"]
    assert page.texts(".heading .button") == ["Create manager"]
    # The owner row has no Edit or Delete: nobody changes the owner.
    assert rows[0].cssselect(".row-actions a") == []
    assert [a.text_content() for a in rows[1].cssselect(".row-actions a")] == ["Edit", "Delete"]


async def test_create_a_manager_with_rights(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    await owner(console, portal)
    form = await console.get("/managers/new")
    labels = {" ".join(label.text_content().split()) for label in form.css("form label")}
    assert {"Email", "Name", "Password"} <= labels
    assert form.texts("legend") == ["Rights"]
    page = await console.post(
        "/managers/new",
        {
            "email": "Tech@Example.com",
            "name": "Tech",
            "password": PASSWORD,
            "isAdmin": "1",
            "isContentAdmin": "1",
        },
    )
    assert page.status == 200 and page.url.endswith("/managers"), page.text[:2000]
    assert page.notice() == "Manager tech@example.com created"
    status, body = await api.get("/managers")
    created = body["managers"][-1]
    assert (
        created["email"],
        created["isAdmin"],
        created["isContentAdmin"],
        created["isSubscriberAdmin"],
    ) == (
        "tech@example.com",
        True,
        True,
        False,
    )
    # The new manager signs in with that password.
    status, _ = await api.as_(None).post("/login", {"email": "tech@example.com", "password": PASSWORD})
    assert status == 200


async def test_create_errors_land_beside_their_field(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    await make_manager(api, "taken@example.com")
    await owner(console, portal)
    page = await console.post(
        "/managers/new", {"email": "taken@example.com", "name": "T", "password": PASSWORD}
    )
    assert page.status == 409
    assert error_beside(page, "email") == "a manager with this email already exists in this portal"
    assert page.one("#f-name").get("value") == "T"
    page = await console.post("/managers/new", {"email": "new@example.com", "name": "N", "password": "short"})
    assert page.status == 400
    assert error_beside(page, "password").startswith("password needs at least")
    page = await console.post("/managers/new", {"email": "new@example.com", "name": "N"})
    assert page.status == 400 and "password" in error_beside(page, "password")
    status, body = await api.get("/managers")
    assert len(body["managers"]) == 2


async def test_edit_rights_name_and_password(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    manager = await make_manager(api, "staff@example.com", isSubscriberAdmin=True)
    await owner(console, portal)
    form = await console.get(f"/managers/{manager['managerId']}")
    assert form.one("#f-email").get("value") == "staff@example.com"
    assert form.one("#f-isSubscriberAdmin").get("checked") is not None
    assert form.one("#f-isAdmin").get("checked") is None
    page = await console.post(
        f"/managers/{manager['managerId']}",
        {
            "email": "staff@example.com",
            "name": "Staff Lead",
            "password": "",
            "flags": "1",
            "isContentAdmin": "1",
        },
    )
    assert page.notice() == "Manager staff@example.com saved"
    status, after = await api.get(f"/managers/{manager['managerId']}")
    assert (after["name"], after["isContentAdmin"], after["isSubscriberAdmin"]) == ("Staff Lead", True, False)
    # An empty password kept the old one.
    status, _ = await api.as_(None).post("/login", {"email": "staff@example.com", "password": PASSWORD})
    assert status == 200


async def test_nobody_changes_their_own_rights(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    me = await make_manager(api, "admin@example.com", isAdmin=True)
    await make_manager(api, "admin2@example.com", isAdmin=True)
    await console.sign_in("admin@example.com")
    form = await console.get(f"/managers/{me['managerId']}")
    # The page offers the rights disabled, with the rule...
    assert all(box.get("disabled") is not None for box in form.css("fieldset.rights input[type=checkbox]"))
    assert form.css("input[name=flags]") == []
    assert form.one("#flags-hint").text_content() == "a manager cannot change their own permissions"
    # ...and a form that sends them anyway gets the API's refusal beside the rights.
    page = await console.post(
        f"/managers/{me['managerId']}",
        {"email": "admin@example.com", "name": "Me", "flags": "1", "isAdmin": "1", "isContentAdmin": "1"},
    )
    assert page.status == 403
    assert error_beside(page, "flags") == "a manager cannot change their own permissions"
    status, after = await api.get(f"/managers/{me['managerId']}")
    assert (after["name"], after["isContentAdmin"]) == ("admin", False)
    # Their own name they may change.
    page = await console.post(f"/managers/{me['managerId']}", {"email": "admin@example.com", "name": "Me"})
    assert page.notice() == "Manager admin@example.com saved"


async def test_nobody_changes_or_deletes_the_owner(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    await make_manager(api, "admin@example.com", isAdmin=True)
    await console.sign_in("admin@example.com")
    page = await console.get(f"/managers/{portal.ownerId}")
    assert page.css("form.stacked") == []
    assert "managed by the system operator" in page.one(".rule-note").text_content()
    forged = await console.post(
        f"/managers/{portal.ownerId}", {"email": portal.ownerEmail, "name": "Hijacked", "password": PASSWORD}
    )
    assert forged.status == 403
    assert forged.form_error() == "the portal owner is managed by the system operator, not through this API"
    confirm = await console.get(f"/managers/{portal.ownerId}/delete")
    assert confirm.css("button.danger") == []
    forged = await console.post(f"/managers/{portal.ownerId}/delete")
    assert forged.status == 403
    assert forged.form_error() == "the portal owner is managed by the system operator, not through this API"
    status, after = await api.get(f"/managers/{portal.ownerId}")
    assert after["name"] != "Hijacked"


async def test_the_last_admin_stays(console: Console, api: Api, portal: portals.CreatedPortal) -> None:
    last = await make_manager(api, "admin@example.com", isAdmin=True)
    await owner(console, portal)
    form = await console.get(f"/managers/{last['managerId']}")
    assert "last isAdmin manager cannot be removed" in form.text
    page = await console.post(
        f"/managers/{last['managerId']}", {"email": "admin@example.com", "name": "admin", "flags": "1"}
    )
    assert page.status == 409
    assert error_beside(page, "isAdmin") == "the portal's last isAdmin manager cannot be removed"
    assert page.one("#f-isAdmin").get("aria-invalid") == "true"
    forged = await console.post(f"/managers/{last['managerId']}/delete")
    assert forged.status == 409
    assert forged.form_error() == "the portal's last isAdmin manager cannot be removed"
    status, after = await api.get(f"/managers/{last['managerId']}")
    assert after["isAdmin"] is True


async def test_delete_asks_then_ends_the_managers_sessions(
    client: Any, console: Console, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    manager = await make_manager(api, "leaving@example.com")
    status, login = await api.as_(None).post("/login", {"email": "leaving@example.com", "password": PASSWORD})
    their_session = login["portals"][0]["sessionId"]
    await owner(console, portal)
    confirm = await console.get(f"/managers/{manager['managerId']}/delete")
    assert "loses access to the console and the API at once" in confirm.one(".warning").text_content()
    page = await console.post(f"/managers/{manager['managerId']}/delete")
    assert page.notice() == "Manager leaving@example.com deleted"
    assert "leaving@example.com" not in page.texts("tbody td")
    status, _ = await api.as_(their_session).get("/channels")
    assert status == 401
    async with pool.acquire() as conn:
        types = await conn.fetch("SELECT type FROM operations WHERE portal_id = $1", _portal_id(portal))
    assert "deleteManager" in [r["type"] for r in types]


async def test_a_manager_without_flags_reads_but_cannot_write(
    console: Console, api: Api, portal: portals.CreatedPortal
) -> None:
    other = await make_manager(api, "other@example.com", isContentAdmin=True)
    await make_manager(api, "reader@example.com")
    await console.sign_in("reader@example.com")
    page = await console.get("/managers")
    assert len(page.css("tbody#rows tr")) == 3
    assert page.css(".heading .button") == [] and page.css(".row-actions a") == []
    detail = await console.get(f"/managers/{other['managerId']}")
    assert detail.css("form.stacked") == [] and "other@example.com" in detail.one("dl.details").text_content()
    forged = await console.post(
        "/managers/new", {"email": "sneaky@example.com", "name": "S", "password": PASSWORD}
    )
    assert forged.status == 403
    assert forged.form_error() == "this change needs the isAdmin permission"
    forged = await console.post(
        f"/managers/{other['managerId']}",
        {"email": "other@example.com", "name": "X", "flags": "1", "isAdmin": "1"},
    )
    assert forged.status == 403
    assert forged.form_error() == "this change needs the isAdmin permission"
    forged = await console.post(f"/managers/{other['managerId']}/delete")
    assert forged.status == 403
    assert forged.form_error() == "this change needs the isAdmin permission"
    status, body = await api.get("/managers")
    assert len(body["managers"]) == 3 and body["managers"][1]["isAdmin"] is False


async def test_the_rules_in_russian(console: Console, api: Api, portal: portals.CreatedPortal) -> None:
    me = await make_manager(api, "admin@example.com", isAdmin=True)
    await console.sign_in("admin@example.com")
    await console.post("/language", {"lang": "ru", "next": "/managers"})
    page = await console.post(
        f"/managers/{me['managerId']}",
        {"email": "admin@example.com", "name": "Me", "flags": "1", "isContentAdmin": "1"},
    )
    assert page.one("h1").text_content().startswith("Редактирование менеджера")
    assert error_beside(page, "flags") == "Менеджер не может изменить свои права"


async def test_another_portals_manager_is_not_found(
    console: Console, portal: portals.CreatedPortal, make_portal: Any
) -> None:
    other = await make_portal()
    await owner(console, portal)
    for path in (f"/managers/{other.ownerId}", f"/managers/{other.ownerId}/delete", "/managers/nonsense"):
        page = await console.get(path)
        assert page.status == 404, path


def _portal_id(portal: portals.CreatedPortal) -> int:
    from catena import ids

    value = ids.decode(portal.portalId)
    assert value is not None
    return value


@pytest.mark.parametrize(
    ("field", "value"),
    [("email", "not-an-email"), ("email", ""), ("name", ""), ("name", "n" * 201), ("password", "P-1a" * 60)],
)
async def test_bad_fields_are_a_400_beside_them(
    console: Console, api: Api, portal: portals.CreatedPortal, field: str, value: str
) -> None:
    await owner(console, portal)
    sent = {"email": "new@example.com", "name": "New", "password": PASSWORD, field: value}
    page = await console.post("/managers/new", sent)
    assert page.status == 400, page.text[:2000]
    assert error_beside(page, field)
    status, body = await api.get("/managers")
    assert len(body["managers"]) == 1

"""Terminating a play session from the console: confirmation, the action's effects and refusals."""

from __future__ import annotations

from typing import Any

import asyncpg

from catena import ids, portals
from tests.admin_api.content_support import op_types
from tests.conftest import Api

from .conftest import Console, make_manager
from .test_subscribers_pages import add_session, card_path, make_subscriber, signed_in_owner


async def row(pool: asyncpg.Pool, session: str) -> asyncpg.Record:
    found = await pool.fetchrow(
        "SELECT active, close_reason FROM play_sessions WHERE id = $1", ids.decode(session)
    )
    assert found is not None
    return found


async def test_terminate_from_the_card_asks_then_closes_with_the_reason(
    console: Console, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    ivan = await make_subscriber(api)
    session = await add_session(pool, portal, ivan["subscriberId"], active=True)
    await signed_in_owner(console, portal)
    card = await console.get(card_path(ivan))
    link = card.one("#open-sessions a.danger")
    assert " ".join(link.text_content().split()) == "Terminate sport1"
    confirm = await console.get(link.get("href"))
    assert confirm.status == 200
    assert "stops within that time" in confirm.one(".warning").text_content()
    assert confirm.texts("main form label") == ["Reason"]
    assert await op_types(pool, portal) == ["createSubscriber"]

    done = await console.post(link.get("href"), {"reason": "account sharing"})
    assert done.url.endswith(card_path(ivan))
    assert done.notice() == "Session on sport1 terminated"
    assert done.texts("#open-sessions tbody code") == []
    assert tuple(await row(pool, session)) == (False, "account sharing")
    assert (await op_types(pool, portal))[-1] == "terminatePlaySession"

    again = await console.post(f"/play-sessions/{session}/terminate", {"reason": ""})
    assert again.status == 409 and "already closed" in again.form_error()


async def test_bad_reason_is_refused_beside_the_field_and_changes_nothing(
    console: Console, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    ivan = await make_subscriber(api)
    session = await add_session(pool, portal, ivan["subscriberId"], active=True)
    await signed_in_owner(console, portal)
    page = await console.post(f"/play-sessions/{session}/terminate", {"reason": "x" * 201})
    assert page.status == 400 and "200" in page.field_error("reason")
    assert tuple(await row(pool, session)) == (True, None)


async def test_without_the_permission_there_is_no_button_and_a_forged_post_is_refused(
    console: Console, api: Api, portal: portals.CreatedPortal, pool: asyncpg.Pool
) -> None:
    ivan = await make_subscriber(api)
    session = await add_session(pool, portal, ivan["subscriberId"], active=True)
    await make_manager(api, "reader@example.com", isContentAdmin=True)
    await console.sign_in("reader@example.com")
    card = await console.get(card_path(ivan))
    assert card.texts("#open-sessions tbody code") == ["sport1"]
    assert card.css("#open-sessions a.danger") == []
    page = await console.post(f"/play-sessions/{session}/terminate", {})
    assert page.status == 403 and "isSubscriberAdmin" in page.text
    assert tuple(await row(pool, session)) == (True, None)


async def test_another_portals_session_is_not_found(
    console: Console, portal: portals.CreatedPortal, make_portal: Any, pool: asyncpg.Pool
) -> None:
    other = await make_portal()
    theirs = await make_subscriber(Api(console.client, other.apiKey))
    session = await add_session(pool, other, theirs["subscriberId"], active=True)
    await signed_in_owner(console, portal)
    assert (await console.get(f"/play-sessions/{session}/terminate")).status == 404
    assert (await console.post(f"/play-sessions/{session}/terminate", {})).status == 404
    assert (await console.get("/play-sessions/nonsense/terminate")).status == 404
    assert tuple(await row(pool, session)) == (True, None)

"""Play sessions (manual §5.1): who watches what, filtered, paged, live, exported as CSV.

The list is :func:`admin_api.play_sessions.list_play_sessions` (newest first, keyset
pages) and the export :func:`~admin_api.play_sessions.export_play_sessions`, with the
filters of the form turned into the API's :class:`~admin_api.play_sessions.SessionsQuery`.
The first page refreshes itself every 10 seconds (htmx swaps its rows); later pages
stay still so the rows being read do not move.

Each open row links to "Terminate" (:mod:`.terminate`: a confirmation, then
``play_sessions.terminate_play_session``) for managers the action allows.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from catena.errors import CatenaError

from .. import csv_export, play_sessions
from ..play_sessions import SessionList, SessionsQuery
from . import filters, forms
from .pages import Page, Pages

pages = Pages(section="/play-sessions")

PAGE_SIZE = 50
FILTERS = ("subscriber", "channel", "status", "from", "to")
# The API's query fields and the filters that set them, for errors.
API_FIELDS = {
    "subscriberId": "subscriber",
    "channelId": "channel",
    "opened_at_gte": "from",
    "opened_at_lt": "to",
    "from": "from",
    "to": "to",
    "cursor": "cursor",
}
STATUS = {"open": True, "closed": False}


@pages.get("/play-sessions")
async def session_list(page: Page) -> web.StreamResponse:
    errors, status = forms.FormErrors(), 200
    result = SessionList(sessions=[])
    try:
        result = await play_sessions.list_play_sessions(
            page.services, page.principal, _query(page, paged=True)
        )
    except CatenaError as exc:
        errors, status = filters.errors(exc, API_FIELDS), exc.status
    context: dict[str, Any] = {
        "sessions": result.sessions,
        "next": result.next,
        "errors": errors,
        "live": not filters.text(page, "cursor"),
    }
    if page.htmx:
        return page.render("sessions/_rows.html", status=status, **context)
    export = filters.export_url(page, "/play-sessions/export", FILTERS)
    return page.render(
        "sessions/list.html", status=status, filters=filters.values(page, FILTERS), export=export, **context
    )


@pages.get("/play-sessions/export")
async def session_export(page: Page) -> web.StreamResponse:
    """Every session the filters match (the cursor is dropped: the whole list, not a page)."""
    query = _query(page, paged=False)
    export = await play_sessions.export_play_sessions(page.services, page.principal, query)
    return await csv_export.stream(page.request, export)


def _query(page: Page, *, paged: bool) -> SessionsQuery:
    """The filters as the API's query; a filter that is not what it should be is a 400 naming it."""
    opened_from, opened_to = filters.instant(page, "from"), filters.instant(page, "to")
    status = filters.text(page, "status")
    values: dict[str, Any] = {
        "subscriberId": filters.listed(page, "subscriber"),
        "channelId": filters.listed(page, "channel"),
        "active": STATUS.get(status),
        "opened_at_gte": None if opened_from is None else int(opened_from.timestamp()),
        "opened_at_lt": None if opened_to is None else int(opened_to.timestamp()),
        "limit": PAGE_SIZE,
        "cursor": (filters.text(page, "cursor") or None) if paged else None,
    }
    return forms.decode(SessionsQuery, values)

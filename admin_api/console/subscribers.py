"""Subscribers (manual §4.1–4.2): list and search, create, the subscriber's card.

The card shows what the Management API's actions give: the subscriber
(``subscribers.get_subscriber``), its explicit packages beside the portal's free
ones (``packages.list_packages``), its play sessions
(``play_sessions.list_play_sessions`` filtered by subscriber) and its recent
operations (``operations.list_operations`` filtered by subscriber).  Every
change goes through the same actions as the JSON endpoints, which check the
permission (``isSubscriberAdmin``) and the rules.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from aiohttp import web
from babel.numbers import format_decimal

from catena.errors import CatenaError

from .. import operations as operations_api
from .. import packages, packages_subscribers, play_sessions, subscribers
from .._content import NamedPageQuery
from ..client import forwarded
from ..client.playlists import playlist_url
from ..operations import OperationOut, OperationsQuery
from ..packages import Package
from ..packages_subscribers import SubscriptionRequest
from ..play_sessions import SessionOut, SessionsQuery
from ..subscribers import (
    DisableRequest,
    SubscriberCreate,
    SubscriberOut,
    SubscribersQuery,
    SubscriberUpdate,
)
from . import forms, i18n
from .i18n import N_
from .i18n import gettext as _
from .pages import Page, Pages

pages = Pages(section="/subscribers")

PAGE_SIZE = 50
# The card's histories: a short page each, more on request.
HISTORY_SIZE = 20
# "Recent" operations on the card: the log is read oldest first, from this far back.
RECENT_DAYS = 90
# Packages a portal has: the card reads them in one page (names, and which are free).
PACKAGE_PAGE = 1000
FIELDS = ("name", "phoneCountryCode", "phone", "maxSessions")
SEARCH_FIELDS = ("q", "disabled")

# What the log's operation types mean on a subscriber's card.
OPERATION_LABELS = {
    "createSubscriber": N_("Created"),
    "updateSubscriber": N_("Edited"),
    "deleteSubscriber": N_("Deleted"),
    "disableSubscriber": N_("Disabled"),
    "enableSubscriber": N_("Enabled"),
    "resetPlaybackToken": N_("Playback token reset"),
    "createPackageSubscriber": N_("Package added"),
    "deletePackageSubscriber": N_("Package removed"),
}


# The list.


@pages.get("/subscribers")
async def subscriber_list(page: Page) -> web.StreamResponse:
    errors = forms.FormErrors()
    found: list[SubscriberOut] = []
    following = None
    try:
        query = _list_query(page)
        result = await subscribers.list_subscribers(page.services, page.principal, query)
        found, following = result.subscribers, result.next
    except CatenaError as exc:
        if exc.field not in SEARCH_FIELDS:
            raise
        errors = forms.errors(exc, SEARCH_FIELDS)
    # htmx swaps only successful answers: its rows carry the error instead.
    status = 400 if errors and not _fragment(page) else 200
    searching = bool(page.request.query.get("q", "").strip() or page.request.query.get("disabled"))
    context = {"subscribers": found, "next": following, "searching": searching, "errors": errors}
    if _fragment(page):
        return page.render("subscribers/_rows.html", status=status, **context)
    return page.render(
        "subscribers/list.html",
        status=status,
        q=page.request.query.get("q", ""),
        disabled=page.request.query.get("disabled", ""),
        **context,
    )


@pages.get("/subscribers/new")
async def subscriber_new(page: Page) -> web.StreamResponse:
    return _form(page, None, {"phoneCountryCode": "7"}, forms.FormErrors())


@pages.post("/subscribers/new")
async def subscriber_create(page: Page) -> web.StreamResponse:
    values = _values(page)
    try:
        body = forms.decode(SubscriberCreate, values)
        made = await subscribers.create_subscriber(page.services, page.principal, body)
    except CatenaError as exc:
        return _form(page, None, values, forms.errors(exc, FIELDS), status=exc.status)
    return page.redirect(
        f"/subscribers/{made.subscriberId}", notice=_("Subscriber %(name)s created", name=made.name)
    )


# The card and what changes the subscriber.


@pages.get("/subscribers/{id}")
async def subscriber_card(page: Page) -> web.StreamResponse:
    subscriber = await _subscriber(page)
    return await _card(page, subscriber)


@pages.get("/subscribers/{id}/edit")
async def subscriber_edit(page: Page) -> web.StreamResponse:
    subscriber = await _subscriber(page)
    return _form(page, subscriber, _current(subscriber), forms.FormErrors())


@pages.post("/subscribers/{id}/edit")
async def subscriber_update(page: Page) -> web.StreamResponse:
    subscriber = await _subscriber(page)
    values = _values(page)
    try:
        body = forms.decode(SubscriberUpdate, values)
        subscriber = await subscribers.update_subscriber(page.services, page.principal, page.path_id(), body)
    except CatenaError as exc:
        return _form(page, subscriber, values, forms.errors(exc, FIELDS), status=exc.status)
    return page.redirect(_card_path(subscriber), notice=_("Subscriber %(name)s saved", name=subscriber.name))


@pages.post("/subscribers/{id}/packages")
async def subscriber_add_package(page: Page) -> web.StreamResponse:
    subscriber = await _subscriber(page)
    package_id = page.value("packageId")
    try:
        body = forms.decode(
            SubscriptionRequest, {"subscriberId": subscriber.subscriberId, "packageId": package_id}
        )
        await packages_subscribers.subscribe(page.services, page.principal, body)
    except CatenaError as exc:
        if exc.field != "packageId":
            raise  # not about the chosen package (a 403): the error page says it
        return await _card(
            page, subscriber, package_errors=forms.errors(exc, ["packageId"]), status=exc.status
        )
    name = await _package_name(page, package_id)
    return page.redirect(_card_path(subscriber), notice=_("Package %(name)s added", name=name))


@pages.post("/subscribers/{id}/packages/{packageId}/remove")
async def subscriber_remove_package(page: Page) -> web.StreamResponse:
    subscriber = await _subscriber(page)
    package_id = page.request.match_info["packageId"]
    body = SubscriptionRequest(subscriberId=subscriber.subscriberId, packageId=package_id)
    await packages_subscribers.unsubscribe(page.services, page.principal, body)
    name = await _package_name(page, package_id)
    return page.redirect(_card_path(subscriber), notice=_("Package %(name)s removed", name=name))


@pages.post("/subscribers/{id}/disable")
async def subscriber_disable(page: Page) -> web.StreamResponse:
    subscriber = await _subscriber(page)
    try:
        body = forms.decode(DisableRequest, {"reason": forms.optional(page.value("reason"))})
        subscriber = await subscribers.disable_subscriber(page.services, page.principal, page.path_id(), body)
    except CatenaError as exc:
        if exc.field != "reason":
            raise  # not about the form's field (a 403, a 409): the error page says it
        errors = forms.errors(exc, ["reason"])
        return await _card(
            page, subscriber, disable_errors=errors, reason=page.value("reason"), status=exc.status
        )
    return page.redirect(
        _card_path(subscriber), notice=_("Subscriber %(name)s disabled", name=subscriber.name)
    )


@pages.post("/subscribers/{id}/enable")
async def subscriber_enable(page: Page) -> web.StreamResponse:
    subscriber = await subscribers.enable_subscriber(page.services, page.principal, page.path_id())
    return page.redirect(
        _card_path(subscriber), notice=_("Subscriber %(name)s enabled", name=subscriber.name)
    )


@pages.get("/subscribers/{id}/reset-token")
async def subscriber_reset_confirm(page: Page) -> web.StreamResponse:
    subscriber = await _subscriber(page)
    return page.render("subscribers/reset_token.html", subscriber=subscriber)


@pages.post("/subscribers/{id}/reset-token")
async def subscriber_reset(page: Page) -> web.StreamResponse:
    subscriber = await subscribers.reset_playback_token(page.services, page.principal, page.path_id())
    return page.redirect(
        _card_path(subscriber), notice=_("A new playback token was issued to %(name)s", name=subscriber.name)
    )


@pages.get("/subscribers/{id}/delete")
async def subscriber_delete_confirm(page: Page) -> web.StreamResponse:
    subscriber = await _subscriber(page)
    names = await _package_names(page)
    explicit = [names.get(p, p) for p in subscriber.packages]
    return page.render("subscribers/delete.html", subscriber=subscriber, explicit=explicit)


@pages.post("/subscribers/{id}/delete")
async def subscriber_delete(page: Page) -> web.StreamResponse:
    subscriber = await _subscriber(page)
    await subscribers.delete_subscriber(page.services, page.principal, page.path_id())
    return page.redirect("/subscribers", notice=_("Subscriber %(name)s deleted", name=subscriber.name))


# The card's histories, a page at a time (htmx appends rows; without it, a page of its own).


@pages.get("/subscribers/{id}/sessions")
async def subscriber_sessions(page: Page) -> web.StreamResponse:
    subscriber = await _subscriber(page)
    open_ = page.request.query.get("state") == "open"
    found = await _sessions(page, subscriber, active=open_, cursor=page.request.query.get("cursor"))
    context: dict[str, Any] = {"subscriber": subscriber, "sessions": found, "open": open_}
    if _fragment(page):
        return page.render("subscribers/_session_rows.html", **context)
    return page.render("subscribers/history.html", **context)


@pages.get("/subscribers/{id}/operations")
async def subscriber_operations(page: Page) -> web.StreamResponse:
    subscriber = await _subscriber(page)
    found = await _operations(page, subscriber, page.request.query.get("cursor"))
    context: dict[str, Any] = {"subscriber": subscriber, "operations": found, "recent_days": RECENT_DAYS}
    if _fragment(page):
        return page.render("subscribers/_operation_rows.html", **context)
    return page.render("subscribers/history.html", sessions=None, **context)


# How the card is put together.


@dataclass(frozen=True)
class PackageRow:
    package_id: str
    name: str
    free: bool


@dataclass(frozen=True)
class SessionRow:
    session: SessionOut
    opened: str
    updated: str
    ended: str | None
    data: str


@dataclass(frozen=True)
class SessionPage:
    rows: list[SessionRow]
    next: str | None


@dataclass(frozen=True)
class OperationRow:
    operation: OperationOut
    created: str
    label: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class OperationPage:
    rows: list[OperationRow]
    next: str | None
    since: str


async def _card(
    page: Page,
    subscriber: SubscriberOut,
    *,
    package_errors: forms.FormErrors | None = None,
    disable_errors: forms.FormErrors | None = None,
    reason: str = "",
    status: int = 200,
) -> web.Response:
    # Independent reads, each on its own pooled connection: the card waits for the slowest only.
    portal_packages, open_sessions, past, operations = await asyncio.gather(
        _packages(page),
        _sessions(page, subscriber, active=True, cursor=None),
        _sessions(page, subscriber, active=False, cursor=None),
        _operations(page, subscriber, None),
    )
    explicit = set(subscriber.packages)
    by_id = {p.packageId: p for p in portal_packages}
    mine = [
        PackageRow(p, by_id[p].name if p in by_id else p, p in by_id and by_id[p].free)
        for p in subscriber.packages
    ]
    free = [
        PackageRow(p.packageId, p.name, True)
        for p in portal_packages
        if p.free and p.packageId not in explicit
    ]
    addable = [p for p in portal_packages if p.packageId not in explicit]
    return page.render(
        "subscribers/card.html",
        status=status,
        subscriber=subscriber,
        mine=mine,
        free=free,
        addable=addable,
        open_sessions=open_sessions,
        past=past,
        operations=operations,
        recent_days=RECENT_DAYS,
        playlist=playlist_url(forwarded.origin(page.request), subscriber.playback_token),
        package_errors=package_errors or forms.FormErrors(),
        disable_errors=disable_errors or forms.FormErrors(),
        reason=reason,
        operations_screen="operations" in {key for _, _, key in page.console.navigation},
    )


async def _subscriber(page: Page) -> SubscriberOut:
    return await subscribers.get_subscriber(page.services, page.principal, page.path_id())


async def _packages(page: Page) -> list[Package]:
    query = NamedPageQuery(limit=PACKAGE_PAGE)
    return (await packages.list_packages(page.services, page.principal, query)).packages


async def _package_names(page: Page) -> dict[str, str]:
    return {p.packageId: p.name for p in await _packages(page)}


async def _package_name(page: Page, package_id: str) -> str:
    return (await _package_names(page)).get(package_id, package_id)


async def _sessions(
    page: Page, subscriber: SubscriberOut, *, active: bool, cursor: str | None
) -> SessionPage:
    query = SessionsQuery(
        subscriberId=[subscriber.subscriberId], active=active, cursor=cursor, limit=HISTORY_SIZE
    )
    found = await play_sessions.list_play_sessions(page.services, page.principal, query)
    rows = [
        SessionRow(
            s, _iso(s.openedAt), _iso(s.updatedAt), _iso(s.closedAt) if s.closedAt else None, _size(s.bytes)
        )
        for s in found.sessions
    ]
    return SessionPage(rows, found.next)


async def _operations(page: Page, subscriber: SubscriberOut, cursor: str | None) -> OperationPage:
    since = (datetime.now(UTC) - timedelta(days=RECENT_DAYS)).strftime("%Y-%m-%d")
    query = OperationsQuery(
        subscriberId=[subscriber.subscriberId], created_at_gte=since, cursor=cursor, limit=HISTORY_SIZE
    )
    found = await operations_api.list_operations(page.services, page.principal, query)
    rows = [
        OperationRow(
            o,
            o.createdAt.strftime("%Y-%m-%dT%H:%M:%SZ"),
            _(OPERATION_LABELS[o.type]) if o.type in OPERATION_LABELS else o.type,
            _payload(o),
        )
        for o in found.operations
    ]
    return OperationPage(rows, found.next, since + "T00:00:00Z")


def _payload(operation: OperationOut) -> dict[str, Any]:
    decoded = msgspec.json.decode(operation.payload)
    return decoded if isinstance(decoded, dict) else {}


def _size(count: int) -> str:
    """Bytes as MiB with one decimal, written the language's way."""
    language = i18n.current()
    megabytes = format_decimal(
        round(count / 1048576, 1), format="#,##0.0", locale=language.locale if language else "en"
    )
    return _("%(size)s MiB", size=megabytes)


def _iso(unix_seconds: int) -> str:
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _card_path(subscriber: SubscriberOut) -> str:
    return f"/subscribers/{subscriber.subscriberId}"


def _list_query(page: Page) -> SubscribersQuery:
    """The list's query string as the API's query; a filter left empty (status "All") is no filter."""
    sent = {key: value for key, value in page.request.query.items() if value.strip()}
    sent.setdefault("limit", str(PAGE_SIZE))
    try:
        return msgspec.convert(sent, SubscribersQuery, strict=False)
    except msgspec.ValidationError as exc:
        raise forms.invalid(exc, SubscribersQuery) from None


def _fragment(page: Page) -> bool:
    """htmx wants rows, except when it restores a page from history (then it wants the page)."""
    return page.htmx and page.request.headers.get("HX-History-Restore-Request") != "true"


def _values(page: Page) -> dict[str, Any]:
    """The form as the API's body: an empty limit means the portal's; digits are a number."""
    limit: Any = page.value("maxSessions").strip()
    if not limit:
        limit = None
    elif limit.isascii() and limit.isdigit():
        limit = int(limit)
    return {
        "name": page.value("name").strip(),
        "phoneCountryCode": page.value("phoneCountryCode").strip(),
        "phone": page.value("phone").strip(),
        "maxSessions": limit,
    }


def _current(subscriber: SubscriberOut) -> dict[str, Any]:
    return {
        "name": subscriber.name,
        "phoneCountryCode": subscriber.phoneCountryCode,
        "phone": subscriber.phone,
        "maxSessions": subscriber.maxSessions,
    }


def _form(
    page: Page,
    subscriber: SubscriberOut | None,
    values: dict[str, Any],
    errors: forms.FormErrors,
    status: int = 200,
) -> web.Response:
    return page.render(
        "subscribers/form.html", status=status, subscriber=subscriber, values=values, errors=errors
    )

"""Managers (manual §2.2): the list with rights and last sign-in, create, edit, delete.

The manual's rules (nobody changes the owner or their own rights, the last isAdmin
manager stays) live in :mod:`admin_api.managers`: the actions refuse a change that
breaks one, and ``rules_for`` answers them ahead of time so that a page shows only
the controls the action will accept.  A refusal is shown beside the field it
concerns: the rights for ``own_flags``, the isAdmin box for ``last_admin``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from catena.errors import CatenaError

from .. import managers
from .. import portal as portal_actions
from ..managers import ManagerCreate, ManagerOut, ManagerRules, ManagerUpdate
from ..schema import PageQuery
from . import forms
from .i18n import N_
from .i18n import gettext as _
from .pages import Page, Pages

pages = Pages(section="/managers")

PAGE_SIZE = 50
FLAGS = ("isAdmin", "isContentAdmin", "isSubscriberAdmin")
FIELDS = ("email", "name", "password", "flags", *FLAGS)
# The rules' refusals name no field in the API; the page puts them beside the
# control they concern.
_RULE_FIELDS = {"own_flags": "flags", "last_admin": "isAdmin"}
# The API's words for the manual's rules, so that the catalogue translates them.
API_WORDS = (
    N_("a manager cannot change their own permissions"),
    N_("the portal's last isAdmin manager cannot be removed"),
    N_("the portal owner is managed by the system operator, not through this API"),
    N_("this change needs the isAdmin permission"),
    N_("a manager with this email already exists in this portal"),
)


def said(message: str | None) -> str:
    """The API's ``message`` in the page's language, part by part ("a; b")."""
    if not message:
        return ""
    return "; ".join(_(part) for part in message.split("; "))


@pages.get("/managers")
async def manager_list(page: Page) -> web.StreamResponse:
    query = page.query(PageQuery)
    if "limit" not in page.request.query:
        query = msgspec.structs.replace(query, limit=PAGE_SIZE)
    result = await managers.list_managers(page.services, page.principal, query)
    rules = await managers.rules_for(page.services, page.principal, result.managers)
    owner_id = (await portal_actions.get_portal(page.services, page.principal)).ownerId
    template = "managers/_rows.html" if page.htmx else "managers/list.html"
    return page.render(template, managers=result.managers, rules=rules, owner_id=owner_id, next=result.next)


@pages.get("/managers/new")
async def manager_new(page: Page) -> web.StreamResponse:
    return _form(page, None, None, {}, forms.FormErrors())


@pages.post("/managers/new")
async def manager_create(page: Page) -> web.StreamResponse:
    values = _values(page, flags=True)
    try:
        body = forms.decode(ManagerCreate, {k: v for k, v in values.items() if v is not None})
        manager = await managers.create_manager(page.services, page.principal, body)
    except CatenaError as exc:
        return _form(page, None, None, values, _errors(exc), status=exc.status)
    return page.redirect("/managers", notice=_("Manager %(email)s created", email=manager.email))


@pages.get("/managers/{id}")
async def manager_edit(page: Page) -> web.StreamResponse:
    manager, rules = await _manager(page)
    return _form(page, manager, rules, _current(manager), forms.FormErrors())


@pages.post("/managers/{id}")
async def manager_update(page: Page) -> web.StreamResponse:
    manager, rules = await _manager(page)
    # Rights are sent only when the page offered them (disabled boxes send nothing).
    values = _values(page, flags=bool(page.value("flags")))
    try:
        body = forms.decode(ManagerUpdate, {k: v for k, v in values.items() if v is not None})
        manager = await managers.update_manager(page.services, page.principal, page.path_id(), body)
    except CatenaError as exc:
        shown = {**_current(manager), **{k: v for k, v in values.items() if v is not None}}
        return _form(page, manager, rules, shown, _errors(exc), status=exc.status)
    return page.redirect("/managers", notice=_("Manager %(email)s saved", email=manager.email))


@pages.get("/managers/{id}/delete")
async def manager_delete_confirm(page: Page) -> web.StreamResponse:
    manager, rules = await _manager(page)
    return page.render(
        "managers/delete.html", manager=manager, rules=rules, errors=forms.FormErrors(), said=said
    )


@pages.post("/managers/{id}/delete")
async def manager_delete(page: Page) -> web.StreamResponse:
    manager, rules = await _manager(page)
    try:
        await managers.delete_manager(page.services, page.principal, page.path_id())
    except CatenaError as exc:
        errors = forms.FormErrors(form=said(forms.message_of(exc)))
        return page.render(
            "managers/delete.html", status=exc.status, manager=manager, rules=rules, errors=errors, said=said
        )
    return page.redirect("/managers", notice=_("Manager %(email)s deleted", email=manager.email))


async def _manager(page: Page) -> tuple[ManagerOut, ManagerRules]:
    manager = await managers.get_manager(page.services, page.principal, page.path_id())
    rules = await managers.rules_for(page.services, page.principal, [manager])
    return manager, rules[manager.managerId]


def _values(page: Page, *, flags: bool) -> dict[str, Any]:
    """The form's fields as the API's; an empty password means 'keep it' (``None``)."""
    values: dict[str, Any] = {
        "email": page.value("email").strip(),
        "name": page.value("name").strip(),
        "password": page.value("password") or None,
    }
    if flags:
        values.update({flag: bool(page.value(flag)) for flag in FLAGS})
    return values


def _current(manager: ManagerOut) -> dict[str, Any]:
    return {"email": manager.email, "name": manager.name, **{flag: getattr(manager, flag) for flag in FLAGS}}


def _errors(exc: CatenaError) -> forms.FormErrors:
    if exc.field is None and exc.code in _RULE_FIELDS:
        exc.field = _RULE_FIELDS[exc.code]
    errors = forms.errors(exc, FIELDS)
    errors.fields = {name: said(message) for name, message in errors.fields.items()}
    errors.form = said(errors.form)
    return errors


def _form(
    page: Page,
    manager: ManagerOut | None,
    rules: ManagerRules | None,
    values: dict[str, Any],
    errors: forms.FormErrors,
    status: int = 200,
) -> web.Response:
    return page.render(
        "managers/form.html",
        status=status,
        manager=manager,
        rules=rules,
        values=values,
        errors=errors,
        flags=_flag_labels(),
        said=said,
    )


def _flag_labels() -> list[tuple[str, str, str]]:
    """(field, label, what it allows) of each right, in the manual's words."""
    return [
        (
            "isAdmin",
            _("Administrator (isAdmin)"),
            _("Portal settings, the API key, webhooks; creates and deletes managers."),
        ),
        (
            "isContentAdmin",
            _("Content administrator (isContentAdmin)"),
            _("Channels, packages, EPG sources, free packages."),
        ),
        (
            "isSubscriberAdmin",
            _("Subscriber administrator (isSubscriberAdmin)"),
            _("Subscribers, subscriptions, disabling and enabling, playback tokens."),
        ),
    ]

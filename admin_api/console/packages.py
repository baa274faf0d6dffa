"""Packages (manual §3.2): list with counts and search, create, edit, composition, delete."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from catena.errors import CatenaError, Conflict

from .. import channels, packages
from .._content import NamedPageQuery
from ..packages import ChannelPackageLink, DeleteQuery, Package, PackageCreate, PackageUpdate
from . import forms
from .i18n import gettext as _
from .pages import Page, Pages

pages = Pages(section="/packages")

PAGE_SIZE = 50
# How many channels "Add channel" offers at once (a search narrows them): each
# costs the channel list its package names, thousands for a channel in many packages.
CHOICES = 20
FIELDS = ("name", "description")


@pages.get("/packages")
async def package_list(page: Page) -> web.StreamResponse:
    query = page.query(NamedPageQuery)
    if "limit" not in page.request.query:
        query = msgspec.structs.replace(query, limit=PAGE_SIZE)
    result = await packages.list_packages(page.services, page.principal, query)
    template = "packages/_rows.html" if page.htmx else "packages/list.html"
    return page.render(template, packages=result.packages, next=result.next, q=query.q or "")


@pages.get("/packages/new")
async def package_new(page: Page) -> web.StreamResponse:
    return _form(page, None, {}, forms.FormErrors())


@pages.post("/packages/new")
async def package_create(page: Page) -> web.StreamResponse:
    values = _values(page)
    try:
        package = await packages.create_package(
            page.services, page.principal, forms.decode(PackageCreate, values)
        )
    except CatenaError as exc:
        return _form(page, None, values, forms.errors(exc, FIELDS), status=exc.status)
    return page.redirect(
        f"/packages/{package.packageId}", notice=_("Package %(name)s created", name=package.name)
    )


@pages.get("/packages/{id}")
async def package_view(page: Page) -> web.StreamResponse:
    package = await packages.get_package(page.services, page.principal, page.path_id())
    return await _composition(page, package)


@pages.get("/packages/{id}/choices")
async def channel_choices(page: Page) -> web.StreamResponse:
    """The "Channel" select of "Add channel", narrowed by the search beside it (htmx)."""
    package = await packages.get_package(page.services, page.principal, page.path_id())
    choices = await _choices(page, package, page.request.query.get("q", ""))
    return page.render("packages/_choices.html", choices=choices, errors=forms.FormErrors())


@pages.get("/packages/{id}/edit")
async def package_edit(page: Page) -> web.StreamResponse:
    package = await packages.get_package(page.services, page.principal, page.path_id())
    return _form(
        page, package, {"name": package.name, "description": package.description}, forms.FormErrors()
    )


@pages.post("/packages/{id}/edit")
async def package_update(page: Page) -> web.StreamResponse:
    package = await packages.get_package(page.services, page.principal, page.path_id())
    values = _values(page)
    try:
        body = forms.decode(PackageUpdate, values)
        package = await packages.update_package(page.services, page.principal, page.path_id(), body)
    except CatenaError as exc:
        return _form(page, package, values, forms.errors(exc, FIELDS), status=exc.status)
    return page.redirect(
        f"/packages/{package.packageId}", notice=_("Package %(name)s saved", name=package.name)
    )


@pages.post("/packages/{id}/channels")
async def channel_add(page: Page) -> web.StreamResponse:
    package = await packages.get_package(page.services, page.principal, page.path_id())
    link = ChannelPackageLink(channelId=page.value("channelId"), packageId=package.packageId)
    try:
        await packages.link_channel(page.services, page.principal, link)
    except CatenaError as exc:
        errors = forms.errors(exc, ("channelId",))
        return await _composition(page, package, errors, status=exc.status)
    return page.redirect(f"/packages/{package.packageId}", notice=_("Channel added to the package"))


@pages.post("/packages/{id}/channels/{channel}/remove")
async def channel_remove(page: Page) -> web.StreamResponse:
    package = await packages.get_package(page.services, page.principal, page.path_id())
    link = ChannelPackageLink(channelId=page.request.match_info["channel"], packageId=package.packageId)
    await packages.unlink_channel(page.services, page.principal, link)
    return page.redirect(f"/packages/{package.packageId}", notice=_("Channel removed from the package"))


@pages.get("/packages/{id}/delete")
async def package_delete_confirm(page: Page) -> web.StreamResponse:
    package = await packages.get_package(page.services, page.principal, page.path_id())
    return page.render("packages/delete.html", package=package, refused="")


@pages.post("/packages/{id}/delete")
async def package_delete(page: Page) -> web.StreamResponse:
    package = await packages.get_package(page.services, page.principal, page.path_id())
    force = page.value("force") == "true"
    try:
        await packages.delete_package(page.services, page.principal, page.path_id(), DeleteQuery(force=force))
    except Conflict as exc:
        # What blocks it, in the API's words, and the forced delete on the same page.
        return page.render("packages/delete.html", status=exc.status, package=package, refused=exc.message)
    return page.redirect("/packages", notice=_("Package %(name)s deleted", name=package.name))


def _values(page: Page) -> dict[str, Any]:
    return {"name": page.value("name").strip(), "description": page.value("description").strip()}


def _form(
    page: Page, package: Package | None, values: dict[str, Any], errors: forms.FormErrors, status: int = 200
) -> web.Response:
    return page.render("packages/form.html", status=status, package=package, values=values, errors=errors)


async def _composition(
    page: Page, package: Package, errors: forms.FormErrors | None = None, status: int = 200
) -> web.Response:
    members = await _members(page, package)
    if page.htmx and "cursor" in page.request.query:
        return page.render(
            "packages/_members.html", package=package, members=members.channels, next=members.next
        )
    choices = await _choices(page, package, "") if page.can("content") else []
    return page.render(
        "packages/view.html",
        status=status,
        package=package,
        members=members.channels,
        next=members.next,
        choices=choices,
        errors=errors or forms.FormErrors(),
    )


async def _members(page: Page, package: Package) -> channels.ChannelPage:
    """One page of the package's channels, in the channel list's order."""
    if not package.channels:
        return channels.ChannelPage(channels=[])
    cursor = page.request.query.get("cursor") or None
    query = NamedPageQuery(limit=PAGE_SIZE, name=package.channels, cursor=cursor)
    return await channels.list_channels(page.services, page.principal, query)


async def _choices(page: Page, package: Package, q: str) -> list[channels.Channel]:
    """Channels "Add channel" offers: one page of the search, less those already in."""
    query = forms.decode(NamedPageQuery, {"limit": CHOICES, "q": q.strip() or None})
    found = await channels.list_channels(page.services, page.principal, query)
    inside = set(package.channels)
    return [channel for channel in found.channels if channel.name not in inside]

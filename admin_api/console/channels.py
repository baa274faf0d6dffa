"""Channels (manual §3.1): list with search, create, edit with a logo and an EPG link, delete."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from catena import ids
from catena.errors import CatenaError

from .. import _logos, channels, epg_sources
from .._content import NamedPageQuery
from ..channels import Channel, ChannelCreate, ChannelUpdate
from ..epg_sources import EpgGuideChannel, EpgSource
from ..schema import PageQuery
from . import forms
from .i18n import gettext as _
from .pages import Page, Pages

pages = Pages(section="/channels")

PAGE_SIZE = 50
# The EPG source select offers one page of the portal's sources; the EPG channel
# field one page of the guide's channels (each costs the action a few index probes):
# a select when that is the whole guide, else a text field suggesting them.
SOURCES = 500
GUIDE = 100
FIELDS = ("name", "title", "number", "logo", "epgSourceName", "epgChannelName")


@pages.get("/channels")
async def channel_list(page: Page) -> web.StreamResponse:
    query = page.query(NamedPageQuery)
    if "limit" not in page.request.query:
        query = msgspec.structs.replace(query, limit=PAGE_SIZE)
    result = await channels.list_channels(page.services, page.principal, query)
    template = "channels/_rows.html" if page.htmx else "channels/list.html"
    return page.render(template, channels=result.channels, next=result.next, q=query.q or "")


@pages.get("/channels/new")
async def channel_new(page: Page) -> web.StreamResponse:
    return await _form(page, None, {}, forms.FormErrors())


@pages.post("/channels/new", max_body=_logos.MAX_REQUEST_BYTES)
async def channel_create(page: Page) -> web.StreamResponse:
    values = _values(page)
    try:
        body = forms.decode(ChannelCreate, {**values, "logo": forms.image_data_uri(page.form.get("logo"))})
        channel = await channels.create_channel(page.services, page.principal, body)
    except CatenaError as exc:
        return await _form(page, None, values, forms.errors(exc, FIELDS), status=exc.status)
    return page.redirect("/channels", notice=_("Channel %(name)s created", name=channel.name))


@pages.get("/channels/epg-channel-field")
async def epg_channel_field(page: Page) -> web.StreamResponse:
    """The "EPG channel" field for the source chosen in the form (htmx swaps it in)."""
    source = page.request.query.get("epgSourceName", "")
    current = page.request.query.get("epgChannelName") or None
    guide = await _guide(page, await _sources(page), source)
    return page.render(
        "channels/_epg_channel.html", guide=guide, source=source, value=current, errors=forms.FormErrors()
    )


@pages.get("/channels/{id}")
async def channel_edit(page: Page) -> web.StreamResponse:
    channel = await channels.get_channel(page.services, page.principal, page.path_id())
    return await _form(page, channel, _current(channel), forms.FormErrors())


@pages.post("/channels/{id}", max_body=_logos.MAX_REQUEST_BYTES)
async def channel_update(page: Page) -> web.StreamResponse:
    channel = await channels.get_channel(page.services, page.principal, page.path_id())
    values = _values(page)
    try:
        body = forms.decode(ChannelUpdate, _changes(page, values))
        channel = await channels.update_channel(page.services, page.principal, page.path_id(), body)
    except CatenaError as exc:
        return await _form(page, channel, values, forms.errors(exc, FIELDS), status=exc.status)
    return page.redirect("/channels", notice=_("Channel %(name)s saved", name=channel.name))


@pages.get("/channels/{id}/delete")
async def channel_delete_confirm(page: Page) -> web.StreamResponse:
    channel = await channels.get_channel(page.services, page.principal, page.path_id())
    return page.render("channels/delete.html", channel=channel)


@pages.post("/channels/{id}/delete")
async def channel_delete(page: Page) -> web.StreamResponse:
    channel = await channels.get_channel(page.services, page.principal, page.path_id())
    await channels.delete_channel(page.services, page.principal, page.path_id())
    return page.redirect("/channels", notice=_("Channel %(name)s deleted", name=channel.name))


@pages.get("/channels/{id}/logo")
async def channel_logo(page: Page) -> web.StreamResponse:
    logo = await channels.get_logo(page.services, page.principal, page.path_id())
    return _logos.serve(page.request, logo.content_type, logo.data, logo.etag)


def _values(page: Page) -> dict[str, Any]:
    """The form's text fields; empty optional ones mean 'none'."""
    return {
        "name": page.value("name").strip(),
        "title": page.value("title").strip(),
        "number": forms.optional_int(page.value("number")),
        "epgSourceName": forms.optional(page.value("epgSourceName")),
        "epgChannelName": forms.optional(page.value("epgChannelName")),
    }


def _changes(page: Page, values: dict[str, Any]) -> dict[str, Any]:
    """What an edit sends: every field but the name; the logo only when replaced or removed."""
    changes = {k: v for k, v in values.items() if k != "name"}
    upload = forms.image_data_uri(page.form.get("logo"))
    if upload is not None:
        changes["logo"] = upload
    elif page.value("removeLogo"):
        changes["logo"] = None
    return changes


def _current(channel: Channel) -> dict[str, Any]:
    return {
        "name": channel.name,
        "title": channel.title,
        "number": channel.number,
        "epgSourceName": channel.epgSourceName,
        "epgChannelName": channel.epgChannelName,
    }


async def _sources(page: Page) -> list[EpgSource]:
    found = await epg_sources.list_sources(page.services, page.principal, PageQuery(limit=SOURCES))
    return found.epgSources


async def _guide(page: Page, sources: list[EpgSource], name: str | None) -> Guide | None:
    """The chosen source's guide channels; ``None`` when no source of that name exists."""
    source = next((s for s in sources if s.name == name), None)
    if source is None:
        return None
    source_id = ids.decode(source.epgSourceId) or 0
    found = await epg_sources.list_guide_channels(
        page.services, page.principal, source_id, PageQuery(limit=GUIDE)
    )
    return Guide(found.channels, complete=found.next is None)


@dataclass(frozen=True, slots=True)
class Guide:
    """The first page of a source's guide channels, and whether it is all of them."""

    channels: list[EpgGuideChannel]
    complete: bool

    def __bool__(self) -> bool:
        return bool(self.channels)


async def _form(
    page: Page, channel: Channel | None, values: dict[str, Any], errors: forms.FormErrors, status: int = 200
) -> web.Response:
    sources = await _sources(page) if page.can("content") else []
    guide = await _guide(page, sources, values.get("epgSourceName"))
    return page.render(
        "channels/form.html",
        status=status,
        channel=channel,
        values=values,
        errors=errors,
        sources=sources,
        guide=guide,
    )

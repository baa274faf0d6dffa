"""EPG sources (manual §3.3): list, create, edit, "Update now" with live progress,
fetch history, a programme browser by date and channel, delete."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from catena.errors import CatenaError, InvalidInput, from_validation

from .. import epg_sources
from ..epg_sources import (
    EpgFetch,
    EpgFetchQuery,
    EpgProgramQuery,
    EpgSource,
    EpgSourceCreate,
    EpgSourceUpdate,
)
from ..schema import PageQuery
from . import forms
from .i18n import gettext as _
from .pages import Page, Pages

pages = Pages(section="/epg-sources")

PAGE_SIZE = 50
HISTORY = 20
PROGRAMS = 100
# The programme browser's channel filter: one page of the guide's channels (a
# select when that is the whole guide, else a text field suggesting them).
GUIDE = 100
FIELDS = ("name", "url", "period")
HOURS_PER_DAY = 24


@pages.get("/epg-sources")
async def source_list(page: Page) -> web.StreamResponse:
    query = page.query(PageQuery)
    if "limit" not in page.request.query:
        query = msgspec.structs.replace(query, limit=PAGE_SIZE)
    result = await epg_sources.list_sources(page.services, page.principal, query)
    template = "epg/_rows.html" if page.htmx else "epg/list.html"
    return page.render(template, sources=result.epgSources, next=result.next)


@pages.get("/epg-sources/new")
async def source_new(page: Page) -> web.StreamResponse:
    return _form(page, None, {"period": HOURS_PER_DAY}, forms.FormErrors())


@pages.post("/epg-sources/new")
async def source_create(page: Page) -> web.StreamResponse:
    values = _values(page)
    try:
        body = forms.decode(EpgSourceCreate, _in_days(values))
        source = await epg_sources.create_source(page.services, page.principal, body)
    except CatenaError as exc:
        return _form(page, None, values, forms.errors(exc, FIELDS), status=exc.status)
    return page.redirect(
        f"/epg-sources/{source.epgSourceId}", notice=_("EPG source %(name)s created", name=source.name)
    )


@pages.get("/epg-sources/{id}")
async def source_view(page: Page) -> web.StreamResponse:
    source = await epg_sources.get_source(page.services, page.principal, page.path_id())
    query = page.query(PageQuery)
    history = await epg_sources.list_fetches(
        page.services,
        page.principal,
        EpgFetchQuery(epgSourceId=[source.epgSourceId], cursor=query.cursor, limit=HISTORY),
    )
    if page.htmx:
        return page.render("epg/_history.html", source=source, fetches=history.epgFetches, next=history.next)
    job = page.request.query.get("job")
    progress = await _progress(page, source, job) if job else None
    return page.render(
        "epg/view.html",
        source=source,
        fetches=history.epgFetches,
        next=history.next,
        job=job,
        progress=progress,
    )


@pages.post("/epg-sources/{id}/update")
async def source_update_now(page: Page) -> web.StreamResponse:
    source = await epg_sources.get_source(page.services, page.principal, page.path_id())
    job = await epg_sources.update_now(page.services, page.principal, page.path_id())
    return page.redirect(f"/epg-sources/{source.epgSourceId}?job={job.jobId}")


@pages.get("/epg-sources/{id}/progress")
async def source_progress(page: Page) -> web.StreamResponse:
    """Where the update of ``?job=`` stands; htmx asks every second until it ends."""
    source = await epg_sources.get_source(page.services, page.principal, page.path_id())
    job = page.request.query.get("job", "")
    progress = await _progress(page, source, job)
    response = page.render("epg/_progress.html", source=source, job=job, progress=progress)
    if page.htmx and progress.finished:
        # The page reloads once to show the new status and history beside the result.
        response.headers["HX-Refresh"] = "true"
    return response


@pages.get("/epg-sources/{id}/edit")
async def source_edit(page: Page) -> web.StreamResponse:
    source = await epg_sources.get_source(page.services, page.principal, page.path_id())
    values = {"name": source.name, "url": source.url, "period": source.period * HOURS_PER_DAY}
    return _form(page, source, values, forms.FormErrors())


@pages.post("/epg-sources/{id}/edit")
async def source_save(page: Page) -> web.StreamResponse:
    source = await epg_sources.get_source(page.services, page.principal, page.path_id())
    values = _values(page)
    try:
        body = forms.decode(EpgSourceUpdate, _in_days(values))
        source = await epg_sources.update_source(page.services, page.principal, page.path_id(), body)
    except CatenaError as exc:
        return _form(page, source, values, forms.errors(exc, FIELDS), status=exc.status)
    return page.redirect(
        f"/epg-sources/{source.epgSourceId}", notice=_("EPG source %(name)s saved", name=source.name)
    )


@pages.get("/epg-sources/{id}/programs")
async def source_programs(page: Page) -> web.StreamResponse:
    source = await epg_sources.get_source(page.services, page.principal, page.path_id())
    query = _program_query(page)
    found = await epg_sources.list_programs(page.services, page.principal, page.path_id(), query)
    if page.htmx and "cursor" in page.request.query:
        return page.render("epg/_programs.html", programs=found.programs, next=found.next)
    guide = await epg_sources.list_guide_channels(
        page.services, page.principal, page.path_id(), PageQuery(limit=GUIDE)
    )
    return page.render(
        "epg/programs.html",
        source=source,
        programs=found.programs,
        next=found.next,
        guide=guide.channels,
        complete=guide.next is None,
        date=query.date or "",
        channel=query.epgChannelName or "",
    )


@pages.get("/epg-sources/{id}/delete")
async def source_delete_confirm(page: Page) -> web.StreamResponse:
    source = await epg_sources.get_source(page.services, page.principal, page.path_id())
    return page.render("epg/delete.html", source=source)


@pages.post("/epg-sources/{id}/delete")
async def source_delete(page: Page) -> web.StreamResponse:
    source = await epg_sources.get_source(page.services, page.principal, page.path_id())
    await epg_sources.delete_source(page.services, page.principal, page.path_id())
    return page.redirect("/epg-sources", notice=_("EPG source %(name)s deleted", name=source.name))


class Progress(msgspec.Struct):
    """The update a page waits for: its fetch once the worker has started it."""

    fetch: EpgFetch | None

    @property
    def finished(self) -> bool:
        return self.fetch is not None and self.fetch.status != "pending"


async def _progress(page: Page, source: EpgSource, job: str) -> Progress:
    """The newest fetch of the source when it is the one ``job`` started (else: still queued)."""
    query = EpgFetchQuery(epgSourceId=[source.epgSourceId], limit=1)
    newest = await epg_sources.list_fetches(page.services, page.principal, query)
    fetch = newest.epgFetches[0] if newest.epgFetches else None
    return Progress(fetch if fetch is not None and fetch.job_id == job else None)


def _program_query(page: Page) -> EpgProgramQuery:
    """The browser's filters as the API's query; a field left empty means 'any'."""
    sent = {k: v for k, v in page.request.query.items() if v and k in EpgProgramQuery.__struct_fields__}
    try:
        return msgspec.convert({"limit": PROGRAMS, **sent}, EpgProgramQuery, strict=False)
    except msgspec.ValidationError as exc:
        raise from_validation(exc) from None


def _values(page: Page) -> dict[str, Any]:
    return {
        "name": page.value("name").strip(),
        "url": page.value("url").strip(),
        "period": forms.optional_int(page.value("period")),
    }


def _in_days(values: dict[str, Any]) -> dict[str, Any]:
    """The form asks for hours (the label operators' guides use); the API counts whole days."""
    hours = values["period"]
    if not isinstance(hours, int):
        return values
    if hours % HOURS_PER_DAY:
        raise InvalidInput(
            _("Guides are updated in whole days: give a multiple of 24 hours."), field="period"
        )
    return {**values, "period": hours // HOURS_PER_DAY}


def _form(
    page: Page, source: EpgSource | None, values: dict[str, Any], errors: forms.FormErrors, status: int = 200
) -> web.Response:
    return page.render("epg/form.html", status=status, source=source, values=values, errors=errors)

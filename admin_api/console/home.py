"""``/``: where the console starts."""

from __future__ import annotations

from aiohttp import web

from .pages import Page, Pages

pages = Pages()


@pages.get("/")
async def start(page: Page) -> web.StreamResponse:
    """The first section built so far; the dashboard takes this place once it exists."""
    return page.redirect("/channels")

"""The staff web console: server-rendered pages at ``/`` of the admin port.

Each page handler calls the same typed action its JSON endpoint calls and renders a
Jinja template; htmx (vendored under ``admin_api/static/vendor``) swaps fragments
for search, paging and live refresh.  See ``docs/console.md``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from . import (
    channels,
    epg,
    home,
    i18n,
    managers,
    operations,
    packages,
    pages,
    play_sessions,
    portal,
    session,
    signin,
    subscribers,
    templating,
    terminate,
)

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
STATIC = Path(__file__).resolve().parent.parent / "static"

# The sections in the navigation, in the manual's order; only mounted ones are shown.
MODULES = [
    home,
    signin,
    channels,
    packages,
    subscribers,
    epg,
    play_sessions,
    operations,
    managers,
    portal,
    terminate,
]

middleware = pages.middleware


def setup(app: web.Application, token_secrets: str) -> None:
    """Mount the console's pages and static files on the admin application."""
    console = pages.Console(i18n.load(), session.Csrf(token_secrets), _static_urls())
    app[pages.CONSOLE] = console
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(TEMPLATES),
        extensions=["jinja2.ext.i18n"],
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    templating.configure(env, console)
    app.router.add_static("/static/", STATIC, name="static")
    for module in MODULES:
        module.pages.add_to(app)
    sections = {module.pages.section for module in MODULES}
    console.navigation = [entry for entry in templating.NAVIGATION if entry[0] in sections]


def _static_urls() -> dict[str, str]:
    """``name → /static/name?v=<content hash>``: a changed file gets a new URL, so URLs cache for good."""
    urls = {}
    for path in sorted(STATIC.rglob("*")):
        if path.is_file():
            name = path.relative_to(STATIC).as_posix()
            version = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
            urls[name] = f"/static/{name}?v={version}"
    return urls

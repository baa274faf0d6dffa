"""Sign in, pick a portal, switch portals, sign out, choose the language.

Signing in runs the Management API's ``POST /login`` code itself (same email
normalisation, bcrypt check and failed-login throttling per email and per client
address), then keeps the sessions it opened in the console's cookie.  Signing out
ends each of those sessions through ``login.logout``, as ``POST /logout`` does, so
a copy of the cookie is worth nothing afterwards.
"""

from __future__ import annotations

import urllib.parse

from aiohttp import web

from catena.errors import CatenaError, InvalidInput

from .. import auth, login
from ..client.forwarded import client_ip
from ..login import LoginRequest
from . import forms, i18n, session
from .i18n import gettext as _
from .pages import Page, Pages, local_path

pages = Pages()

_SIGN_IN_FIELDS = ("email", "password")


@pages.get("/sign-in", public=True)
async def sign_in_form(page: Page) -> web.StreamResponse:
    if page.principal_or_none is not None:
        return page.redirect(local_path(page.request.query.get("next")))
    return _sign_in_page(page, "", forms.FormErrors())


@pages.post("/sign-in", public=True)
async def sign_in(page: Page) -> web.StreamResponse:
    email = page.value("email")
    try:
        body = forms.decode(LoginRequest, {"email": email, "password": page.value("password")})
        opened = await login.login(page.services, body.email, body.password, client_ip(page.request))
    except CatenaError as exc:
        return _sign_in_page(page, email, forms.errors(exc, _SIGN_IN_FIELDS), status=exc.status)
    entries = [session.PortalSession(p.portalId, p.portalName, p.sessionId) for p in opened]
    state = session.SignedIn(entries[: session.MAX_PORTALS])
    following = local_path(page.value("next"))
    if len(state.portals) > 1:
        following = "/portals" + (
            "" if following == "/" else "?next=" + urllib.parse.quote(following, safe="")
        )
    response = page.redirect(following)
    page.set_cookie(response, session.COOKIE, session.encode(state))
    return response


def _sign_in_page(page: Page, email: str, errors: forms.FormErrors, status: int = 200) -> web.Response:
    following = local_path(page.value("next") or page.request.query.get("next"))
    return page.render("sign_in.html", status=status, email=email, errors=errors, next=following)


@pages.get("/portals")
async def portal_picker(page: Page) -> web.StreamResponse:
    """The portals this sign-in opened a session on; the manager picks one."""
    return page.render("portals.html", next=local_path(page.request.query.get("next")))


@pages.post("/portals")
async def switch_portal(page: Page) -> web.StreamResponse:
    assert page.signed_in is not None
    switched = page.signed_in.switched(page.value("portal"))
    if switched is None:
        raise InvalidInput(_("You have no session on that portal; sign in again."), field="portal")
    entry = switched.active
    response = page.redirect(local_path(page.value("next")), notice=_("Portal %(name)s", name=entry.name))
    page.set_cookie(response, session.COOKIE, session.encode(switched))
    return response


@pages.post("/sign-out")
async def sign_out(page: Page) -> web.StreamResponse:
    """End every manager session this browser holds, as ``POST /logout`` ends one."""
    assert page.signed_in is not None
    for entry in page.signed_in.portals:
        actor = (
            page.principal
            if entry == page.signed_in.active
            else await auth.principal_for(page.services, entry.token)
        )
        if actor is not None:
            await login.logout(page.services, actor, entry.token)
    response = page.redirect("/sign-in", notice=_("You have signed out."))
    response.del_cookie(session.COOKIE, path="/")
    return response


@pages.post("/language", public=True)
async def choose_language(page: Page) -> web.StreamResponse:
    code = page.value("lang")
    if code not in i18n.LANGUAGES:
        raise InvalidInput(_("Unknown language."), field="lang")
    response = page.redirect(local_path(page.value("next")))
    page.set_cookie(response, i18n.COOKIE, code, max_age=365 * 24 * 3600)
    return response

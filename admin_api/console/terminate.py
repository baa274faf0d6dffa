"""Terminating a play session from the console (manual §5.1): a confirmation, then the action.

Reached from the subscriber's card and the play-sessions list; both link here with
``next``, the page to return to.  The rule, the 404/409 and the signal to the
gateways are :func:`admin_api.play_sessions.terminate_play_session`'s.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from catena.errors import CatenaError

from .. import play_sessions
from ..play_sessions import SessionOut, TerminateRequest
from . import forms
from .i18n import gettext as _
from .pages import Page, Pages, local_path

pages = Pages()


@pages.get("/play-sessions/{id}/terminate")
async def terminate_confirm(page: Page) -> web.StreamResponse:
    session = await play_sessions.get_play_session(page.services, page.principal, page.path_id())
    return _confirm(page, session, "", forms.FormErrors())


@pages.post("/play-sessions/{id}/terminate")
async def terminate(page: Page) -> web.StreamResponse:
    session = await play_sessions.get_play_session(page.services, page.principal, page.path_id())
    reason = page.value("reason").strip()
    try:
        body = forms.decode(TerminateRequest, {"reason": reason or None})
        await play_sessions.terminate_play_session(page.services, page.principal, page.path_id(), body)
    except CatenaError as exc:
        return _confirm(page, session, reason, forms.errors(exc, ("reason",)), status=exc.status)
    notice = _("Session on %(channel)s terminated", channel=session.channelName)
    return page.redirect(_back(page, session), notice=notice)


def _back(page: Page, session: SessionOut) -> str:
    """Where the operator came from; else the subscriber's card, else the sessions list."""
    default = f"/subscribers/{session.subscriberId}" if session.subscriberId else "/play-sessions"
    return local_path(page.request.query.get("next") or page.value("next"), default)


def _confirm(
    page: Page, session: SessionOut, reason: str, errors: forms.FormErrors, status: int = 200
) -> web.Response:
    return page.render(
        "sessions/terminate.html",
        status=status,
        session=session,
        reason=reason,
        errors=errors,
        back=_back(page, session),
        opened=datetime.fromtimestamp(session.openedAt, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )

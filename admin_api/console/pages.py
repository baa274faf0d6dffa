"""How a console page runs: sign-in, CSRF and Origin checks, language, rendering.

A page handler takes a :class:`Page` and returns a response; it calls the module's
typed action (``channels.create_channel(page.services, page.principal, body)``)
and renders a template.  It never checks a permission or a rule itself: the action
raises, and the error lands next to the field it names (:mod:`.forms`) or on the
error page.

Every ``POST`` must come from this console: its ``Origin`` must be the console's
own origin, and once signed in it must carry the session's CSRF token (the form
field ``csrf`` or the ``X-CSRF-Token`` header htmx sends).  Every console response
carries a Content-Security-Policy of ``'self'``: no inline script or style.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp_jinja2
import asyncpg
import msgspec
from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from catena import ids
from catena.errors import CatenaError, Forbidden, InvalidInput, NotFound

from .. import auth, keys
from ..client import forwarded
from ..principal import Permission, Principal
from ..routing import _list_fields, decode_query
from ..services import Services
from . import forms, i18n, session
from .i18n import gettext as _

log = logging.getLogger("admin_api.console")

Handler = Callable[["Page"], Awaitable[web.StreamResponse]]

NOTICE_COOKIE = "catena_notice"
SIGN_IN = "/sign-in"
# The paths of the JSON APIs and the probes: the console leaves their answers alone.
NOT_CONSOLE = ("/tv-management/", "/client/", "/health", "/metrics")
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


@dataclass
class Console:
    """What every page shares: catalogues, the CSRF key, static URLs."""

    languages: dict[str, i18n.Language]
    csrf: session.Csrf
    static_urls: dict[str, str] = field(default_factory=dict)
    # (path, label, key) of the sections built so far, in the navigation's order.
    navigation: list[tuple[str, str, str]] = field(default_factory=list)

    def static(self, name: str) -> str:
        return self.static_urls[name]


CONSOLE = web.AppKey("console", Console)


class Page:
    """One console request: who is signed in, in which language, and how to answer."""

    def __init__(self, request: web.Request, console: Console) -> None:
        self.request = request
        self.console = console
        code = i18n.negotiate(request.cookies.get(i18n.COOKIE), request.headers.get("Accept-Language"))
        self.language = console.languages[code]
        i18n.activate(self.language)
        self.signed_in = session.decode(request.cookies.get(session.COOKIE))
        self.principal_or_none: Principal | None = None
        self.form: MultiDictProxy[Any] = MultiDictProxy(MultiDict())
        self.notice = urllib.parse.unquote(request.cookies.get(NOTICE_COOKIE, ""))[:500]

    @property
    def services(self) -> Services:
        return self.request.app[keys.SERVICES]

    @property
    def principal(self) -> Principal:
        """The signed-in manager (pages that need no sign-in do not use it)."""
        assert self.principal_or_none is not None
        return self.principal_or_none

    @property
    def csrf(self) -> str:
        return self.console.csrf.token(self.signed_in.active.token) if self.signed_in else ""

    @property
    def htmx(self) -> bool:
        """Whether htmx asked for this (it then wants a fragment, not the whole page)."""
        return self.request.headers.get("HX-Request") == "true"

    def can(self, permission: Permission) -> bool:
        """Whether to show the controls of a change that needs ``permission``."""
        return self.principal_or_none is not None and self.principal_or_none.can(permission)

    def path_id(self, name: str = "id") -> int:
        value = ids.decode(self.request.match_info[name])
        if value is None:
            raise NotFound(f"no such {name}", field=name)
        return value

    def query(self, query_type: type) -> Any:
        """The query string as the JSON API's query Struct (the same 400s)."""
        try:
            return decode_query(self.request, query_type, _list_fields(query_type))
        except msgspec.ValidationError as exc:
            raise forms.invalid(exc, query_type) from None

    def with_query(self, **changes: str | None) -> str:
        """This page's path and query with ``changes`` applied (``None`` removes a parameter)."""
        query = {k: v for k, v in self.request.query.items() if k not in changes}
        query.update({k: v for k, v in changes.items() if v is not None})
        encoded = urllib.parse.urlencode(query)
        return self.request.path + ("?" + encoded if encoded else "")

    def value(self, name: str) -> str:
        """A text field of the submitted form, '' when absent."""
        sent = self.form.get(name, "")
        return sent if isinstance(sent, str) else ""

    def render(self, template: str, *, status: int = 200, **context: Any) -> web.Response:
        context.update(page=self, principal=self.principal_or_none, lang=self.language.code)
        response = aiohttp_jinja2.render_template(template, self.request, context, status=status)
        if self.notice:
            response.del_cookie(NOTICE_COOKIE, path="/")
        return response

    def redirect(self, location: str, *, notice: str = "") -> web.Response:
        """A 303 to ``location``; ``notice`` is shown once on the next page."""
        response = web.Response(status=303, headers={"Location": location})
        if notice:
            self.set_cookie(response, NOTICE_COOKIE, urllib.parse.quote(notice), max_age=60)
        return response

    def set_cookie(self, response: web.StreamResponse, name: str, value: str, **options: Any) -> None:
        secure = forwarded.origin(self.request).startswith("https:")
        response.set_cookie(name, value, path="/", httponly=True, samesite="Strict", secure=secure, **options)

    def error(self, error: CatenaError) -> web.Response:
        return self.render("error.html", status=error.status, error=error, message=forms.message_of(error))


class ServerError(CatenaError):
    status = 500
    code = "internal_error"


class Pages:
    """The console's routes, declared like the API's: ``@pages.get("/channels")``.

    ``section`` is the path of the navigation entry these pages make (if any).
    """

    def __init__(self, section: str | None = None) -> None:
        self.section = section
        self.routes: list[tuple[str, str, Handler, dict[str, Any]]] = []

    def get(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self._route("GET", path, options)

    def post(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self._route("POST", path, options)

    def _route(self, method: str, path: str, options: dict[str, Any]) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes.append((method, path, handler, options))
            return handler

        return register

    def add_to(self, app: web.Application) -> None:
        for method, path, handler, options in self.routes:
            app.router.add_route(method, path, _wrap(handler, **options), name=handler.__name__)


def _wrap(
    handler: Handler, *, public: bool = False, max_body: int | None = None
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def run(request: web.Request) -> web.StreamResponse:
        page = Page(request, request.app[CONSOLE])
        try:
            refused = await _admit(page, public=public, max_body=max_body)
            return refused or await handler(page)
        except CatenaError as exc:
            return page.error(exc)
        except asyncpg.DataError as exc:
            # A value PostgreSQL cannot store that no declared type screened.
            log.warning("value refused by PostgreSQL: %s", exc, extra={"path": request.path})
            return page.error(
                InvalidInput(_("A value in the form cannot be stored: %(error)s", error=str(exc)))
            )
        except Exception:
            log.exception("unhandled console error", extra={"path": request.path})
            return page.error(ServerError(_("Something went wrong on the server; see its log.")))
        finally:
            _close_uploads(page.form)

    run.__name__ = handler.__name__
    return run


async def _admit(page: Page, *, public: bool, max_body: int | None) -> web.StreamResponse | None:
    """Check where a request comes from and who sends it; a response when it may not go on."""
    posting = page.request.method == "POST"
    if posting:
        _check_origin(page.request)
        page.form = await _read_form(page.request, max_body)
    if page.signed_in is not None:
        page.principal_or_none = await auth.principal_for(page.services, page.signed_in.active.token)
    if public:
        # Signing in and choosing a language bind to no session yet: the Origin check guards them.
        return None
    if page.principal_or_none is None or page.signed_in is None:
        return _to_sign_in(page, expired=page.signed_in is not None)
    if posting and not page.console.csrf.valid(page.signed_in.active.token, _sent_csrf(page)):
        raise Forbidden(
            _("This form is out of date or did not come from this console; reload the page and try again."),
            code="csrf_failed",
        )
    return None


def _check_origin(request: web.Request) -> None:
    """A state-changing request must say it comes from this console's own pages."""
    sent = request.headers.get("Origin")
    if sent is None or sent != forwarded.origin(request):
        log.info("cross-origin console request refused", extra={"origin": sent, "path": request.path})
        raise Forbidden(
            _("This request did not come from this console's pages and was refused."), code="origin_refused"
        )


async def _read_form(request: web.Request, max_body: int | None) -> MultiDictProxy[Any]:
    if max_body is not None and max_body > request.client_max_size:
        request = request.clone(client_max_size=max_body)
    too_large = InvalidInput(_("The form is too large."), code="payload_too_large")
    # Refused before reading: aiohttp, stopping mid-form, leaves the files it spooled so far unclosed.
    if (request.content_length or 0) > request.client_max_size:
        raise too_large
    if request.content_type == "multipart/form-data" and request.content_length is None:
        # Chunked, its size is known only once read: browsers always send a form's length.
        raise InvalidInput(_("The form was sent without its length."), code="length_required")
    try:
        form = await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
    except ValueError:
        # Bytes that are not UTF-8, a multipart part without a name, too many fields:
        # aiohttp says so with a ValueError (UnicodeDecodeError is one).
        raise InvalidInput(
            _("The form could not be read; send it again from the page."), code="malformed_form"
        ) from None
    _refuse_nul(form)
    return form


def _refuse_nul(form: MultiDictProxy[Any]) -> None:
    """No form field may hold NUL: PostgreSQL stores no such text, and no page puts one there."""
    for name, value in form.items():
        if isinstance(value, str) and "\x00" in value:
            _close_uploads(form)  # the page never holds this form, so its files are closed here
            raise InvalidInput(
                _("%(field)s must not contain the NUL character", field=name[:100]),
                field=name,
                code="invalid_value",
            )


def _close_uploads(form: MultiDictProxy[Any]) -> None:
    """aiohttp spools uploaded files to temporary files; they are ours to close."""
    for value in form.values():
        if isinstance(value, web.FileField):
            value.file.close()


def _sent_csrf(page: Page) -> str | None:
    sent = page.form.get("csrf") or page.request.headers.get("X-CSRF-Token")
    return sent if isinstance(sent, str) else None


def _to_sign_in(page: Page, *, expired: bool) -> web.Response:
    here = page.request.path_qs if page.request.method == "GET" else "/"
    location = SIGN_IN if here == "/" else f"{SIGN_IN}?next={urllib.parse.quote(here, safe='')}"
    notice = _("Your session has ended; sign in again.") if expired else ""
    response = page.redirect(location, notice=notice)
    if expired:
        response.del_cookie(session.COOKIE, path="/")
    if page.htmx:
        # htmx would swap the sign-in page into a fragment; make it load the whole page.
        response.headers["HX-Redirect"] = location
    return response


def local_path(value: str | None, default: str = "/") -> str:
    """``value`` when it is a path on this site (never another host), else ``default``."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    return value


def is_console(path: str) -> bool:
    return not path.startswith(NOT_CONSOLE)


@web.middleware
async def middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Security headers on every console answer; an HTML page for a console path that does not exist."""
    if not is_console(request.path):
        return await handler(request)
    try:
        response = await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
        page = Page(request, request.app[CONSOLE])
        if page.signed_in is not None:
            page.principal_or_none = await auth.principal_for(page.services, page.signed_in.active.token)
        error = NotFound(_("There is no such page."), code="not_found")
        error.status = exc.status
        response = page.error(error)
    response.headers.update(SECURITY_HEADERS)
    if request.path.startswith("/static/"):
        response.headers["Cache-Control"] = (
            "public, max-age=31536000, immutable" if "v" in request.query else "no-cache"
        )
    else:
        response.headers.setdefault("Cache-Control", "no-store")
    return response

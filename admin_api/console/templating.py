"""What templates can call besides their context: translations, formatting, URLs."""

from __future__ import annotations

from datetime import UTC, datetime

import jinja2
from babel.numbers import format_decimal
from markupsafe import Markup

from . import i18n
from .i18n import NP_
from .pages import Console

# (path, label, section key) of the navigation, in the order the issue lists them.
NAVIGATION = [
    ("/", NP_("navigation", "Dashboard"), "dashboard"),
    ("/channels", NP_("navigation", "Channels"), "channels"),
    ("/packages", NP_("navigation", "Packages"), "packages"),
    ("/subscribers", NP_("navigation", "Subscribers"), "subscribers"),
    ("/epg-sources", NP_("navigation", "EPG sources"), "epg"),
    ("/play-sessions", NP_("navigation", "Play sessions"), "sessions"),
    ("/operations", NP_("navigation", "Operations"), "operations"),
    ("/managers", NP_("navigation", "Managers"), "managers"),
    ("/portal", NP_("navigation", "Portal"), "portal"),
]


def configure(env: jinja2.Environment, console: Console) -> None:
    env.install_gettext_callables(  # type: ignore[attr-defined]
        _gettext, _ngettext, newstyle=True, pgettext=_pgettext
    )
    env.globals["static"] = console.static
    env.filters["when"] = when
    env.filters["number"] = number


def _gettext(message: str) -> str:
    language = i18n.current()
    return language.translations.gettext(message) if language else message


def _ngettext(singular: str, plural: str, n: int) -> str:
    language = i18n.current()
    if language:
        return language.translations.ngettext(singular, plural, n)
    return singular if n == 1 else plural


def _pgettext(context: str, message: str) -> str:
    language = i18n.current()
    return str(language.translations.pgettext(context, message)) if language else message


def when(value: str | datetime | int | None) -> Markup:
    """A timestamp as ``<time>``: UTC as text, the browser's zone once console.js runs.

    ``value`` is an API timestamp: ISO 8601 text, an aware datetime or Unix seconds.
    """
    if value is None or value == "":
        return Markup("—")
    if isinstance(value, int):
        moment = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, datetime):
        moment = value.astimezone(UTC)
    else:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return Markup('<time datetime="{}">{} UTC</time>').format(stamp, moment.strftime("%Y-%m-%d %H:%M"))


def number(value: int) -> str:
    language = i18n.current()
    return format_decimal(value, locale=language.locale if language else "en")

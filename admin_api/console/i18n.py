"""The console's languages: Babel catalogues read from their ``.po`` files at start.

The catalogues live as ``admin_api/locale/<lang>/LC_MESSAGES/messages.po`` and are
compiled in memory when the application is built (a few milliseconds), so a clean
clone, an editable install and a wheel all run exactly the text that is in the
repository: there is no ``.mo`` file to forget to rebuild or to commit.  Fuzzy
entries are not used (Babel's compiler leaves them out).

The language of a request follows the ``catena_lang`` cookie (the switcher in the
header), else the browser's ``Accept-Language``, else English.  The chosen
catalogue is held in a context variable for the request's task, so templates
(``{{ _("Channels") }}``) and Python code (``gettext("Channel %(name)s created")``)
translate the same way.
"""

from __future__ import annotations

import contextvars
import io
from dataclasses import dataclass
from pathlib import Path

from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
LANGUAGES = ("en", "ru")
DEFAULT = "en"
COOKIE = "catena_lang"


@dataclass(frozen=True, slots=True)
class Language:
    code: str
    locale: Locale
    translations: Translations


def load(directory: Path = LOCALE_DIR) -> dict[str, Language]:
    """Every language's catalogue, compiled from its ``.po`` file."""
    return {code: Language(code, Locale.parse(code), _compile(directory, code)) for code in LANGUAGES}


def _compile(directory: Path, code: str) -> Translations:
    with (directory / code / "LC_MESSAGES" / "messages.po").open("rb") as po:
        catalog = read_po(po, locale=code)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled)


_current: contextvars.ContextVar[Language] = contextvars.ContextVar("console_language")


def activate(language: Language) -> None:
    """Translate this request's text (its task's context) into ``language``."""
    _current.set(language)


def current() -> Language | None:
    return _current.get(None)


def gettext(message: str, **variables: object) -> str:
    """``message`` in the request's language, ``%(name)s`` filled from ``variables``."""
    language = current()
    text = language.translations.gettext(message) if language else message
    return text % variables if variables else text


def ngettext(singular: str, plural: str, n: int, **variables: object) -> str:
    language = current()
    if language:
        text = language.translations.ngettext(singular, plural, n)
    else:
        text = singular if n == 1 else plural
    return text % {"num": n, **variables}


def N_(message: str) -> str:
    """Marks ``message`` for the catalogue where it is defined; it is translated where shown."""
    return message


def NP_(context: str, message: str) -> str:
    """:func:`N_` for a message translated in ``context`` (``pgettext``)."""
    return message


def negotiate(cookie: str | None, accept_language: str | None) -> str:
    """The switcher's choice, else the browser's best supported language, else English."""
    if cookie in LANGUAGES:
        return cookie
    for tag in _preferred(accept_language or ""):
        primary = tag.split("-", 1)[0]
        if primary in LANGUAGES:
            return primary
    return DEFAULT


def _preferred(header: str) -> list[str]:
    """Language tags of an ``Accept-Language`` header, best first (q=0 dropped)."""
    weighted = []
    for position, item in enumerate(header.split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag and quality > 0:
            weighted.append((-quality, position, tag.strip().lower()))
    return [tag for _, _, tag in sorted(weighted)]

"""Every message has its Russian translation; the catalogues hold exactly what the code uses."""

from __future__ import annotations

import re

from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from admin_api.console import i18n
from tests.conftest import ROOT

LOCALE = ROOT / "admin_api" / "locale"
KEYWORDS = {
    "_": None,
    "gettext": None,
    "ngettext": (1, 2),
    "pgettext": ((1, "c"), 2),
    "N_": None,
    "NP_": ((1, "c"), 2),
}


def _extracted() -> set[tuple[str | None, str]]:
    with (LOCALE / "babel.cfg").open() as config:
        method_map, options_map = parse_mapping_cfg(config)
    found = set()
    for _filename, _lineno, message, _comments, _context in extract_from_dir(
        ROOT, method_map, options_map, keywords=KEYWORDS
    ):
        found.add((_context, message if isinstance(message, str) else message[0]))
    return found


def _catalogue(code: str):  # type: ignore[no-untyped-def]
    with (LOCALE / code / "LC_MESSAGES" / "messages.po").open("rb") as po:
        return read_po(po, locale=code)


def test_every_message_has_its_russian_translation() -> None:
    catalogue = _catalogue("ru")
    missing = []
    for message in catalogue:
        if not message.id:
            continue
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        if message.fuzzy or not all(s.strip() for s in strings):
            missing.append(message.id)
    assert missing == []


def test_the_catalogues_hold_exactly_the_messages_in_use() -> None:
    used = _extracted()
    assert len(used) > 50
    for code in i18n.LANGUAGES:
        ids = {(m.context, m.id if isinstance(m.id, str) else m.id[0]) for m in _catalogue(code) if m.id}
        assert used - ids == set(), f"{code}: run `make messages` and translate the new entries"
        assert ids - used == set(), f"{code}: entries no code uses (run `make messages`)"


def test_placeholders_survive_translation() -> None:
    for message in _catalogue("ru"):
        if message.id and isinstance(message.id, str):
            assert set(re.findall(r"%\((\w+)\)s", message.id)) == set(
                re.findall(r"%\((\w+)\)s", message.string)
            ), message.id


def test_the_manuals_terms() -> None:
    russian = i18n.load()["ru"].translations
    terms = {
        "Subscribers": "Абоненты",
        "Channels": "Каналы",
        "Packages": "Пакеты",
        "EPG sources": "Источники EPG",
        "Play sessions": "Сеансы воспроизведения",
        "Operations": "Журнал операций",
        "Managers": "Менеджеры",
        "Portal": "Настройки портала",
    }
    assert {english: russian.pgettext("navigation", english) for english in terms} == terms
    assert russian.gettext("Sign in") == "Войти"


def test_accept_language_is_weighed() -> None:
    assert i18n.negotiate(None, "fr-CH, fr;q=0.9, ru;q=0.8, en;q=0.7") == "ru"
    assert i18n.negotiate(None, "en;q=0.3, ru-RU;q=0.9") == "ru"
    assert i18n.negotiate(None, "ru;q=0, de") == "en"
    assert i18n.negotiate(None, "garbage;;q=x,,") == "en"
    assert i18n.negotiate("ru", "en") == "ru"
    assert i18n.negotiate("xx", None) == "en"

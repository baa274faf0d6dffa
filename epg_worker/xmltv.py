"""Reading XMLTV: programmes out of a guide of any size, in constant memory.

:func:`iter_programmes` walks the document with lxml's ``iterparse`` and clears each
``<programme>`` (and everything before it) as soon as its fields are taken, so memory
does not grow with the file.  It yields the raw strings; :class:`TimeParser` turns
XMLTV times (``20241016120000 +0300``, offset optional = UTC) into Unix seconds.
Nothing here touches the network or the database.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from typing import IO, NamedTuple

from lxml import etree

# Longest value kept per field; longer ones are cut.  Providers occasionally ship a
# whole article as a description; a guide has no use for more than this.
MAX_TITLE = 500
MAX_DESCRIPTION = 8000
MAX_SHORT = 200
# Display names kept per <channel>, and their length.
MAX_DISPLAY_NAMES = 3
MAX_DISPLAY_NAME = 100

_HTML_RE = re.compile(rb"^\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*)*<(!doctype\s+html|html[\s>])", re.I | re.S)
_TIME_RE = re.compile(
    r"^(\d{4})(\d{2})(\d{2})(?:(\d{2})(?:(\d{2})(\d{2})?)?)?"
    r"\s*(?:([+-])(\d{2}):?(\d{2})|Z|UTC|GMT)?$"
)
_BOM = b"\xef\xbb\xbf"
# "Not yet in TimeParser.known": an int no XMLTV time can produce (they stay
# within years 1..9999), so hot loops can use dict.get without a second lookup.
UNKNOWN = -(1 << 62)


class XmltvError(Exception):
    """The document cannot be read as XMLTV; the message says where and why."""


class RawProgramme(NamedTuple):
    """The fields of one ``<programme>`` exactly as written (stripped), or ``None``."""

    channel: str | None
    start: str | None
    stop: str | None
    title: str | None
    language: str | None
    description: str | None
    genre: str | None
    rating: str | None
    line: int


def sniff(head: bytes) -> str | None:
    """Why the first bytes of a file cannot be XMLTV, or ``None`` when they might be."""
    body = head.removeprefix(_BOM).lstrip()
    if not body:
        return "the file is empty"
    if _HTML_RE.match(body):
        return "the server sent an HTML page, not an XMLTV file"
    if not body.startswith(b"<"):
        sample = body[:40].decode("utf-8", "replace")
        return f"the file does not start with XML markup (it starts with {sample!r})"
    return None


ChannelSink = Callable[[str, list[str]], None]


def iter_programmes(source: IO[bytes], channels: ChannelSink | None = None) -> Iterator[RawProgramme]:
    """Every ``<programme>`` of an XMLTV document, in document order.

    With ``channels``, each ``<channel>`` is handed to it as (id, display names)
    as it is read.  Raises :class:`XmltvError` for a document that is not
    well-formed XML (with the line and column of the problem) or whose root
    element is not ``<tv>``.
    """
    tags = "programme" if channels is None else ("channel", "programme")
    events = etree.iterparse(source, events=("end",), tag=tags, resolve_entities=False, no_network=True)
    checked = False
    try:
        for _, element in events:
            if not checked:
                _check_root(element.getroottree().getroot())
                checked = True
            if channels is None or element.tag == "programme":
                yield _programme(element)
            else:
                _channel(element, channels)
            _forget(element)
        if not checked:
            _check_root(events.root)
    except etree.XMLSyntaxError as exc:
        raise XmltvError(f"the XML is not well-formed: {exc.msg}") from None


def _check_root(root: etree._Element | None) -> None:
    if root is None or root.tag != "tv":
        tag = "none" if root is None else f"<{root.tag}>"
        raise XmltvError(f"not an XMLTV document: the root element is {tag}, expected <tv>")


def _programme(element: etree._Element) -> RawProgramme:
    # The hottest function of an import: one call per programme, so plain locals,
    # no helpers, and the tuple made directly (NamedTuple's __new__ is slow).
    title = language = description = genre = rating = None
    for child in element:
        tag = child.tag
        if tag == "title":
            if title is None:
                text = child.text
                title = text.strip()[:MAX_TITLE] or None if text else None
                language = child.get("lang")
        elif tag == "desc":
            if description is None:
                text = child.text
                description = text.strip()[:MAX_DESCRIPTION] or None if text else None
        elif tag == "category":
            if genre is None:
                text = child.text
                genre = text.strip()[:MAX_SHORT] or None if text else None
        elif tag == "rating" and rating is None:
            for value in child:
                if value.tag == "value":
                    text = value.text
                    rating = text.strip()[:MAX_SHORT] or None if text else None
                    break
    channel = element.get("channel")
    if channel is not None:
        channel = channel.strip()[:MAX_SHORT] or None
    if language is not None:
        language = language.strip()[:MAX_SHORT] or None
    return _new_programme(
        RawProgramme,
        (
            channel,
            element.get("start"),
            element.get("stop"),
            title,
            language,
            description,
            genre,
            rating,
            element.sourceline or 0,
        ),
    )


_new_programme = tuple.__new__


def _channel(element: etree._Element, sink: ChannelSink) -> None:
    channel_id = (element.get("id") or "").strip()[:MAX_SHORT]
    if not channel_id:
        return
    names: list[str] = []
    for child in element:
        if child.tag == "display-name" and child.text and len(names) < MAX_DISPLAY_NAMES:
            name = " ".join(child.text.split())[:MAX_DISPLAY_NAME]
            if name:
                names.append(name)
    sink(channel_id, names)


def _forget(element: etree._Element) -> None:
    # Clear the programme and drop the finished siblings before it, so the tree
    # never holds more than the element being read.
    element.clear(keep_tail=False)
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]


class TimeParser:
    """XMLTV times → Unix seconds (UTC), shifted by a source's correction.

    ``YYYYMMDDhhmmss`` with an optional ``±hhmm`` (or ``±hh:mm``, ``Z``, ``UTC``,
    ``GMT``) offset; minutes and seconds may be left out.  Values repeat a lot (one
    programme's stop is the next one's start, channels share slots), so results are
    cached; the cache is emptied when it gets big, which keeps memory bounded.
    """

    CACHE_LIMIT = 50_000

    def __init__(self, shift_minutes: int = 0) -> None:
        self._shift = shift_minutes * 60
        self.known: dict[str, int | None] = {}

    def __call__(self, text: str) -> int | None:
        """The instant ``text`` names, or ``None`` when it is not a valid XMLTV time."""
        value = self.known.get(text, UNKNOWN)
        if value == UNKNOWN:
            value = self.learn(text)
        return value

    def learn(self, text: str) -> int | None:
        """Parse ``text`` and remember the result (hot loops read :attr:`known` first)."""
        if len(self.known) >= self.CACHE_LIMIT:
            self.known.clear()
        value = self.known[text] = self._parse(text)
        return value

    def _parse(self, text: str) -> int | None:
        match = _TIME_RE.match(text.strip())
        if match is None:
            return None
        year, month, day, hour, minute, second, sign, off_h, off_m = match.groups()
        try:
            local = dt.datetime(
                int(year),
                int(month),
                int(day),
                int(hour or 0),
                int(minute or 0),
                int(second or 0),
                tzinfo=dt.UTC,
            )
        except ValueError:
            return None
        offset = int(off_h or 0) * 3600 + int(off_m or 0) * 60
        if offset > 14 * 3600 or int(off_m or 0) > 59:
            return None
        if sign == "-":
            offset = -offset
        return int(local.timestamp()) - offset + self._shift

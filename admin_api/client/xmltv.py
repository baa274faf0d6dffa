"""Writing XMLTV (the guide format players read) piece by piece, for streaming."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from xml.sax.saxutils import escape, quoteattr

from .catalog import Program

# Characters XML 1.0 does not allow, whatever the guide provider sent.
_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(value: str) -> str:
    return escape(_INVALID.sub("", value))


def _attr(value: str) -> str:
    return quoteattr(_INVALID.sub("", value))


def _time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y%m%d%H%M%S +0000")


def head(source: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE tv SYSTEM "xmltv.dtd">\n'
        f'<tv generator-info-name="Catena" source-info-name={_attr(source)}>\n'
    ).encode()


def tail() -> bytes:
    return b"</tv>\n"


def channel(name: str, title: str, logo: str | None) -> str:
    icon = f"<icon src={_attr(logo)}/>" if logo else ""
    return f"<channel id={_attr(name)}><display-name>{_text(title)}</display-name>{icon}</channel>\n"


def programme(channel_name: str, program: Program) -> str:
    stop = f" stop={_attr(_time(program.end))}" if program.end is not None else ""
    lang = f" lang={_attr(program.language)}" if program.language else ""
    parts = [
        f"<programme start={_attr(_time(program.start))}{stop} channel={_attr(channel_name)}>",
        f"<title{lang}>{_text(program.title)}</title>",
    ]
    if program.description:
        parts.append(f"<desc{lang}>{_text(program.description)}</desc>")
    if program.genre:
        parts.append(f"<category{lang}>{_text(program.genre)}</category>")
    if program.rating:
        parts.append(f"<rating><value>{_text(program.rating)}</value></rating>")
    parts.append("</programme>\n")
    return "".join(parts)

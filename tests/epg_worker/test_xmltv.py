"""The XMLTV reader on its own: times, field mapping, malformed documents."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pytest

from epg_worker import xmltv


def _unix(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC).timestamp())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20241016120000 +0300", _unix(2024, 10, 16, 9)),
        ("20241016120000 -0130", _unix(2024, 10, 16, 13, 30)),
        ("20241016120000+0300", _unix(2024, 10, 16, 9)),
        ("20241016120000 +03:00", _unix(2024, 10, 16, 9)),
        ("20241016120000", _unix(2024, 10, 16, 12)),
        ("20241016120000 Z", _unix(2024, 10, 16, 12)),
        ("20241016120000 GMT", _unix(2024, 10, 16, 12)),
        ("202410161230", _unix(2024, 10, 16, 12, 30)),
        ("20241016", _unix(2024, 10, 16)),
        ("20241231230000 -0100", _unix(2025, 1, 1)),
        ("20240229000000", _unix(2024, 2, 29)),
    ],
)
def test_valid_times(text: str, expected: int) -> None:
    assert xmltv.TimeParser()(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "20241345000000 +0000",
        "2024-13-45",
        "20230229000000",
        "20241016250000",
        "20241016126000",
        "20241016120000 +2500",
        "20241016120000 +0375",
        "20241016120000 EST",
        "",
        "tomorrow",
        "20241016120000 +0300 extra",
        "00000101000000",
    ],
)
def test_invalid_times(text: str) -> None:
    assert xmltv.TimeParser()(text) is None


def test_time_shift_moves_every_time() -> None:
    assert xmltv.TimeParser(shift_minutes=-90)("20241016120000 +0000") == _unix(2024, 10, 16, 10, 30)


def test_time_cache_stays_bounded() -> None:
    parser = xmltv.TimeParser()
    for minute in range(xmltv.TimeParser.CACHE_LIMIT + 10):
        day = dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=minute)
        assert parser(day.strftime("%Y%m%d%H%M%S")) == int(day.timestamp())
    assert len(parser.known) <= xmltv.TimeParser.CACHE_LIMIT


DOC = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE tv SYSTEM "xmltv.dtd">
<tv generator-info-name="test">
  <channel id="one"><display-name>One</display-name></channel>
  <programme start="20241016120000 +0300" stop="20241016130000 +0300" channel=" one ">
    <title lang="ru">  \xd0\x9d\xd0\xbe\xd0\xb2\xd0\xbe\xd1\x81\xd1\x82\xd0\xb8  </title>
    <title lang="en">News</title>
    <sub-title>ignored</sub-title>
    <desc lang="ru">First</desc>
    <desc lang="en">Second</desc>
    <category>News</category>
    <category>Politics</category>
    <rating system="RU"><value>16+</value><icon src="x"/></rating>
    <rating system="MPAA"><value>PG</value></rating>
  </programme>
  <!-- a comment between programmes -->
  <programme start="20241016130000 +0300" channel="one"><title/></programme>
</tv>
"""


def test_fields_are_mapped_as_api_md_says() -> None:
    first, second = list(xmltv.iter_programmes(io.BytesIO(DOC)))
    assert first == xmltv.RawProgramme(
        channel="one",
        start="20241016120000 +0300",
        stop="20241016130000 +0300",
        title="Новости",
        language="ru",
        description="First",
        genre="News",
        rating="16+",
        line=5,
    )
    assert (second.title, second.stop, second.genre, second.line) == (None, None, None, 17)


def test_windows_1251_documents_are_decoded() -> None:
    doc = (
        '<?xml version="1.0" encoding="windows-1251"?><tv><programme start="1" channel="c">'
        "<title>Время</title></programme></tv>"
    )
    (only,) = xmltv.iter_programmes(io.BytesIO(doc.encode("cp1251")))
    assert only.title == "Время"


def test_overlong_values_are_cut() -> None:
    doc = (
        f'<tv><programme start="1" channel="c"><title>{"я" * 2000}</title><desc>{"d" * 20000}</desc>'
        "</programme></tv>"
    )
    (only,) = xmltv.iter_programmes(io.BytesIO(doc.encode()))
    assert len(only.title or "") == xmltv.MAX_TITLE
    assert len(only.description or "") == xmltv.MAX_DESCRIPTION


def test_cut_document_names_the_line() -> None:
    cut = DOC[: DOC.index(b"<category>Politics")]
    reader = xmltv.iter_programmes(io.BytesIO(cut))
    with pytest.raises(xmltv.XmltvError, match=r"^the XML is not well-formed: .*line 12, column \d+"):
        list(reader)


def test_a_document_without_programmes_must_still_be_xmltv() -> None:
    assert list(xmltv.iter_programmes(io.BytesIO(b"<tv/>"))) == []
    with pytest.raises(xmltv.XmltvError, match="root element is <html>"):
        list(xmltv.iter_programmes(io.BytesIO(b"<html><body/></html>")))


def test_elements_are_released_while_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    # However long the document, <tv> holds only what the parser read ahead in its
    # current chunk (a few hundred of these tiny programmes), never the whole file.
    programme = b'<programme start="1" channel="c"><title>t</title></programme>'
    doc = b"<tv>" + b'<channel id="c"/>' * 50 + programme * 20_000
    sizes: list[int] = []
    original = xmltv._programme

    def spy(element: Any) -> xmltv.RawProgramme:
        sizes.append(len(element.getparent()))
        return original(element)

    monkeypatch.setattr(xmltv, "_programme", spy)
    assert len(list(xmltv.iter_programmes(io.BytesIO(doc + b"</tv>")))) == 20_000
    assert max(sizes) < 1500


@pytest.mark.parametrize(
    ("head", "problem"),
    [
        (b"", "the file is empty"),
        (b"   \n", "the file is empty"),
        (b"<!DOCTYPE html><html>", "the server sent an HTML page, not an XMLTV file"),
        (
            b"\xef\xbb\xbf<?xml version='1.0'?>\n<!-- x -->\n<HTML lang=en>",
            "the server sent an HTML page, not an XMLTV file",
        ),
        (b"PK\x03\x04zip", "the file does not start with XML markup (it starts with 'PK\\x03\\x04zip')"),
        (b"<?xml version='1.0'?><tv>", None),
    ],
)
def test_sniff(head: bytes, problem: str | None) -> None:
    assert xmltv.sniff(head) == problem

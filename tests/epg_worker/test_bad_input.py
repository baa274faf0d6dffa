"""Whatever a provider sends, the update ends with the right status and a useful
message, and a failed update leaves the previous guide exactly as it was."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from epg_worker.scheduler import Worker
from tests.epg_worker.conftest import (
    NOW,
    GuideServer,
    Prog,
    Sources,
    document,
    gzipped,
    schedule,
    stamp,
)

CHANNELS = ["one", "two"]
GOOD = document(schedule(CHANNELS, 10, tag="good"))


async def _with_guide(guides: GuideServer, sources: Sources, worker: Worker) -> tuple[int, set[int]]:
    """A source whose first update imported GOOD; returns it and its programme ids."""
    source = await sources.create(guides.put("/guide.xml", GOOD))
    fetch = await sources.update(worker, source)
    assert fetch["status"] == "success", fetch["message"]
    return source, {r["id"] for r in await sources.programmes(source)}


async def _point(sources: Sources, source: int, url: str) -> None:
    await sources.pool.execute("UPDATE epg_sources SET url = $2 WHERE id = $1", source, url)


async def _fails(
    guides: GuideServer, sources: Sources, worker: Worker, url: str, status: str = "error"
) -> str:
    """Update a source with a good guide from ``url``; check the guide survived."""
    source, before = await _with_guide(guides, sources, worker)
    await _point(sources, source, url)
    fetch = await sources.update(worker, source)
    assert fetch["status"] == status, fetch["message"]
    assert fetch["imported_programs"] == 0 and fetch["deleted_programs"] == 0
    assert {r["id"] for r in await sources.programmes(source)} == before
    job = await sources.pool.fetchrow("SELECT state, error FROM jobs WHERE id = $1", fetch["job_id"])
    assert job["state"] == "failed" and job["error"] == fetch["message"]
    message: str = fetch["message"]
    return message


async def test_not_found(guides: GuideServer, sources: Sources, worker: Worker) -> None:
    message = await _fails(guides, sources, worker, guides.url("/missing.xml"))
    assert message.startswith("HTTP 404 Not Found from http://127.0.0.1:")


async def test_server_error(guides: GuideServer, sources: Sources, worker: Worker) -> None:
    message = await _fails(guides, sources, worker, guides.url("/status/500"))
    assert "HTTP 500 Internal Server Error" in message


async def test_html_instead_of_xml(guides: GuideServer, sources: Sources, worker: Worker) -> None:
    page = b"<!DOCTYPE html>\n<html><head><title>Login</title></head><body>Sign in<br></body></html>"
    url = guides.put("/portal", page, content_type="text/html")
    message = await _fails(guides, sources, worker, url)
    assert message == "the server sent an HTML page, not an XMLTV file"


async def test_redirect_loop(guides: GuideServer, sources: Sources, worker: Worker) -> None:
    message = await _fails(guides, sources, worker, guides.url("/loop"))
    assert message.startswith("more than 3 redirects (a redirect loop?)")
    assert "/loop" in message


async def test_redirects_within_the_limit_are_followed(
    guides: GuideServer, sources: Sources, worker: Worker
) -> None:
    guides.put("/guide.xml", GOOD)
    source = await sources.create(guides.url("/hop/3"))
    fetch = await sources.update(worker, source)
    assert fetch["status"] == "success", fetch["message"]
    assert fetch["imported_programs"] == 20


async def test_stalled_download_ends_as_timeout(
    guides: GuideServer, sources: Sources, worker: Worker
) -> None:
    message = await _fails(guides, sources, worker, guides.url("/stall"), status="timeout")
    assert message.startswith("the download stalled: nothing received for 1 s after")


async def test_connection_closed_mid_file(guides: GuideServer, sources: Sources, worker: Worker) -> None:
    message = await _fails(guides, sources, worker, guides.url("/short"))
    assert "after" in message and ("broke" in message or "closed" in message)


async def test_unreachable_server(guides: GuideServer, sources: Sources, worker: Worker) -> None:
    # A port nobody listens on: the connection is refused.
    message = await _fails(guides, sources, worker, "http://127.0.0.1:9/guide.xml")
    assert message.startswith("cannot connect to 127.0.0.1:9")


async def test_not_an_http_url(guides: GuideServer, sources: Sources, worker: Worker) -> None:
    message = await _fails(guides, sources, worker, "ftp://example.com/guide.xml")
    assert message == "the URL 'ftp://example.com/guide.xml' is not an http:// or https:// URL"


async def test_truncated_gzip(guides: GuideServer, sources: Sources, worker: Worker) -> None:
    packed = gzipped(document(schedule(CHANNELS, 200)))
    url = guides.put("/cut.xml.gz", packed[: len(packed) // 2])
    message = await _fails(guides, sources, worker, url)
    assert message.startswith("the gzip data is truncated or corrupt after")


async def test_xml_cut_in_the_middle(guides: GuideServer, sources: Sources, worker: Worker) -> None:
    data = document(schedule(CHANNELS, 50))
    url = guides.put("/cut.xml", data[: len(data) // 2])
    message = await _fails(guides, sources, worker, url)
    assert message.startswith("the XML is not well-formed:")
    assert ", line " in message


async def test_invalid_utf8(guides: GuideServer, sources: Sources, worker: Worker) -> None:
    data = document(schedule(CHANNELS, 5)).replace("Передача 3".encode(), b"\xff\xfe\xfd 3", 1)
    url = guides.put("/bad.xml", data)
    message = await _fails(guides, sources, worker, url)
    line = data[: data.index(b"\xff")].count(b"\n") + 1
    assert message.startswith("the XML is not well-formed: ")
    assert f"line {line}," in message


async def test_root_is_not_tv(guides: GuideServer, sources: Sources, worker: Worker) -> None:
    url = guides.put("/feed.xml", b"<?xml version='1.0'?><rss><channel><title>x</title></channel></rss>")
    message = await _fails(guides, sources, worker, url)
    assert message == "not an XMLTV document: the root element is <rss>, expected <tv>"


async def test_empty_file(guides: GuideServer, sources: Sources, worker: Worker) -> None:
    message = await _fails(guides, sources, worker, guides.put("/empty.xml", b""))
    assert message == "the file is empty"


async def test_guide_without_valid_programmes_keeps_the_old_one(
    guides: GuideServer, sources: Sources, worker: Worker
) -> None:
    bad = [Prog("one", "2024-13-45", None, "x"), Prog("one", stamp(NOW), None, None)]
    message = await _fails(guides, sources, worker, guides.put("/bad.xml", document(bad)))
    assert message.startswith("no programme could be imported: 2 found; skipped 1 with an invalid start")
    assert message.endswith("the previous guide was kept")


async def test_file_over_the_size_limit(
    guides: GuideServer, sources: Sources, make_worker: Callable[..., Any]
) -> None:
    small = await make_worker(epg_max_bytes=len(GOOD) + 100)
    source, before = await _with_guide(guides, sources, small)
    await _point(sources, source, guides.put("/big.xml", document(schedule(CHANNELS, 100))))
    fetch = await sources.update(small, source)
    assert fetch["status"] == "error"
    assert "more than the limit of" in fetch["message"] and "CATENA_EPG_MAX_BYTES" in fetch["message"]
    assert {r["id"] for r in await sources.programmes(source)} == before


async def test_bad_programmes_are_skipped_and_counted(
    guides: GuideServer, sources: Sources, worker: Worker
) -> None:
    start = NOW + dt.timedelta(hours=1)
    good = schedule(["one"], 3, first=start)
    bad = [
        Prog("one", "20241345000000 +0000", None, "Bad date"),  # month 13, day 45
        Prog("one", "yesterday", None, "Not a time"),
        Prog("one", None, None, "No start"),
        Prog(None, stamp(start), None, "No channel"),
        Prog("one", stamp(start), None, None),
        Prog("one", stamp(start), None, "   "),
    ]
    source = await sources.create(guides.put("/guide.xml", document(good + bad)))
    fetch = await sources.update(worker, source)
    assert fetch["status"] == "success", fetch["message"]
    assert fetch["found_programs"] == 9
    assert fetch["imported_programs"] == 3
    message = fetch["message"]
    assert "; skipped 2 with an invalid start time (first at line" in message
    assert "'20241345000000 +0000'" in message
    assert "; skipped 1 without a start time (first at line" in message
    assert "; skipped 1 without a channel (first at line" in message
    assert "; skipped 2 without a title (first at line" in message
    titles = [r["title"] for r in await sources.programmes(source)]
    assert titles == ["Передача 0", "Передача 1", "Передача 2"]


async def test_stop_before_start_keeps_the_programme_without_an_end(
    guides: GuideServer, sources: Sources, worker: Worker
) -> None:
    start = NOW + dt.timedelta(hours=1)
    programmes = [
        Prog("one", stamp(start), stamp(start - dt.timedelta(minutes=5)), "Backwards"),
        Prog("one", stamp(start + dt.timedelta(hours=1)), "20241301000000", "Bad stop"),
    ]
    source = await sources.create(guides.put("/guide.xml", document(programmes)))
    fetch = await sources.update(worker, source)
    assert fetch["status"] == "success", fetch["message"]
    assert fetch["imported_programs"] == 2
    message = fetch["message"]
    assert "; ignored 2 stop times that were invalid or not after the start (first at line" in message
    rows = await sources.programmes(source)
    assert [(r["title"], r["start_at"], r["end_at"]) for r in rows] == [
        ("Backwards", start, None),
        ("Bad stop", start + dt.timedelta(hours=1), None),
    ]


async def test_programmes_of_channels_nobody_maps_are_imported(
    guides: GuideServer, sources: Sources, worker: Worker
) -> None:
    # The operator links channels after the first import, so the guide keeps every
    # channel of the file; the programmes API filters by epgChannelName.
    url = guides.put("/guide.xml", document(schedule(["nobody-maps-this"], 4)))
    source = await sources.create(url)
    fetch = await sources.update(worker, source)
    assert fetch["status"] == "success", fetch["message"]
    assert {r["epg_channel_name"] for r in await sources.programmes(source)} == {"nobody-maps-this"}


@pytest.mark.parametrize("entity", ['SYSTEM "file:///etc/passwd"', 'SYSTEM "http://127.0.0.1:9/x"'])
async def test_external_entities_are_not_resolved(
    guides: GuideServer, sources: Sources, worker: Worker, entity: str
) -> None:
    data = (
        f'<?xml version="1.0"?>\n<!DOCTYPE tv [<!ENTITY x {entity}>]>\n<tv>'
        f'<programme start="{stamp(NOW)}" channel="one"><title>T&x;</title></programme></tv>'
    ).encode()
    source = await sources.create(guides.put("/guide.xml", data))
    fetch = await sources.update(worker, source)
    assert fetch["status"] == "success", fetch["message"]
    assert [r["title"] for r in await sources.programmes(source)] == ["T"]


async def test_one_channel_with_a_very_long_schedule(
    guides: GuideServer, sources: Sources, worker: Worker
) -> None:
    # A scaled-down "10 million programmes of one channel": nothing is kept per
    # programme or per channel run, so only the row count grows.
    minute = dt.timedelta(minutes=1)
    body = "".join(
        f'<programme start="{stamp(NOW + n * minute)}" stop="{stamp(NOW + (n + 1) * minute)}" '
        f'channel="marathon"><title>Minute {n}</title></programme>\n'
        for n in range(30_000)
    )
    url = guides.put("/guide.xml", f"<tv>\n{body}</tv>\n".encode())
    source = await sources.create(url)
    fetch = await sources.update(worker, source)
    assert fetch["status"] == "success", fetch["message"]
    assert (fetch["found_programs"], fetch["imported_programs"], fetch["channels"]) == (30_000, 30_000, 1)
    last = await sources.pool.fetchrow(
        "SELECT title, end_at FROM epg_programs WHERE epg_source_id = $1 ORDER BY start_at DESC LIMIT 1",
        source,
    )
    assert (last["title"], last["end_at"]) == ("Minute 29999", NOW + 30_000 * minute)

"""Updates end to end: a real HTTP server, a real worker, real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import asyncpg

from catena import ids
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

CHANNELS = ["first.ru", "second.ru", "россия-1"]


def _rows(records: list[asyncpg.Record]) -> list[tuple[Any, ...]]:
    return [
        (
            r["epg_channel_name"],
            r["start_at"],
            r["end_at"],
            r["title"],
            r["description"],
            r["genre"],
            r["rating"],
            r["language"],
        )
        for r in records
    ]


async def test_plain_and_gzipped_files_import_the_same_programmes(
    guides: GuideServer, sources: Sources, worker: Worker
) -> None:
    data = document(schedule(CHANNELS, 24))
    plain = await sources.create(guides.put("/guide.xml", data))
    packed = await sources.create(guides.put("/guide.xml.gz", gzipped(data)))
    # A gzip file behind a name without .gz is recognised by its magic bytes.
    disguised = await sources.create(guides.put("/guide-latest", gzipped(data)))

    for source in (plain, packed, disguised):
        fetch = await sources.update(worker, source)
        assert fetch["status"] == "success", fetch["message"]
        assert fetch["found_programs"] == 72
        assert fetch["imported_programs"] == 72
        assert fetch["channels"] == 3

    expected = _rows(await sources.programmes(plain))
    assert len(expected) == 72
    assert _rows(await sources.programmes(packed)) == expected
    assert _rows(await sources.programmes(disguised)) == expected


async def test_xmltv_fields_are_mapped_and_times_converted_to_utc(
    guides: GuideServer, sources: Sources, worker: Worker
) -> None:
    start = NOW + dt.timedelta(hours=2)
    programmes = [
        Prog(
            "first.ru",
            stamp(start, "+0300"),
            stamp(start + dt.timedelta(minutes=45), "+0300"),
            "Новости 🙂",
            desc="Главные новости дня",
            categories=("News", "Новости"),
            rating="0+",
            lang="ru",
        ),
        # No offset means UTC; no stop is allowed.
        Prog("second.ru", start.strftime("%Y%m%d%H%M%S"), None, "Утро", lang=None),
        Prog("second.ru", stamp(start, "-0130"), None, "West"),
    ]
    source = await sources.create(guides.put("/guide.xml", document(programmes)))
    fetch = await sources.update(worker, source)
    assert fetch["status"] == "success", fetch["message"]

    rows = await sources.programmes(source)
    news = next(r for r in rows if r["epg_channel_name"] == "first.ru")
    assert news["start_at"] == start
    assert news["end_at"] == start + dt.timedelta(minutes=45)
    assert (news["title"], news["description"], news["genre"], news["rating"], news["language"]) == (
        "Новости 🙂",
        "Главные новости дня",
        "News",
        "0+",
        "ru",
    )
    by_title = {r["title"]: r for r in rows}
    assert by_title["Утро"]["start_at"] == start and by_title["Утро"]["end_at"] is None
    assert by_title["Утро"]["language"] is None
    assert by_title["West"]["start_at"] == start


async def test_second_import_of_a_changed_file_replaces_the_guide(
    guides: GuideServer, sources: Sources, worker: Worker
) -> None:
    url = guides.put("/guide.xml", document(schedule(CHANNELS, 24, tag="old")))
    source = await sources.create(url)
    first = await sources.update(worker, source)
    assert first["status"] == "success" and first["deleted_programs"] == 0

    guides.put("/guide.xml", document(schedule(CHANNELS[:2], 30, tag="new")))
    second = await sources.update(worker, source)

    assert second["status"] == "success", second["message"]
    assert second["imported_programs"] == 60
    assert second["deleted_programs"] == 72
    assert second["channels"] == 2
    rows = await sources.programmes(source)
    assert len(rows) == 60
    assert all(r["title"].endswith("new") for r in rows)
    assert {r["fetch_id"] for r in rows} == {second["id"]}
    assert re.match(
        r"imported 60 of 60 programmes for 2 channels \(\d+ kB\), "
        r"replacing 72 programmes of the previous guide",
        second["message"],
    )


async def test_fetch_record_has_durations_times_and_job(
    guides: GuideServer, sources: Sources, worker: Worker
) -> None:
    source = await sources.create(guides.put("/guide.xml", document(schedule(CHANNELS, 2))))
    job_id = await sources.request_update(source)
    from tests.epg_worker.conftest import run_queued

    await run_queued(worker)
    fetch = await sources.last_fetch(source)
    assert fetch["job_id"] == job_id
    assert fetch["fetched_at"] is not None and fetch["fetched_at"] >= fetch["created_at"]
    assert fetch["fetch_duration"] >= 0 and fetch["import_duration"] >= 0
    job = await sources.pool.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    assert job["state"] == "done"
    source_row = await sources.pool.fetchrow("SELECT * FROM epg_sources WHERE id = $1", source)
    assert source_row["last_attempt_at"] is not None


async def test_unchanged_file_is_skipped_by_etag(
    guides: GuideServer, sources: Sources, worker: Worker
) -> None:
    url = guides.put("/guide.xml", document(schedule(CHANNELS, 4)), etag='"v1"')
    source = await sources.create(url)
    first = await sources.update(worker, source)
    assert first["status"] == "success"
    ids_before = {r["id"] for r in await sources.programmes(source)}

    second = await sources.update(worker, source)

    assert guides.headers_of("/guide.xml")[-1]["If-None-Match"] == '"v1"'
    assert second["status"] == "success"
    assert second["message"].startswith("not modified since the last import (HTTP 304")
    assert (second["imported_programs"], second["deleted_programs"]) == (0, 0)
    assert {r["id"] for r in await sources.programmes(source)} == ids_before

    # A new version gets a new ETag and is imported.
    guides.put("/guide.xml", document(schedule(CHANNELS, 5)), etag='"v2"')
    third = await sources.update(worker, source)
    assert third["imported_programs"] == 15 and third["deleted_programs"] == 12


async def test_last_modified_is_sent_back(guides: GuideServer, sources: Sources, worker: Worker) -> None:
    stamp_ = "Wed, 21 Oct 2015 07:28:00 GMT"
    url = guides.put("/guide.xml", document(schedule(CHANNELS, 2)), last_modified=stamp_)
    source = await sources.create(url)
    await sources.update(worker, source)
    await sources.update(worker, source)
    assert "If-Modified-Since" not in guides.headers_of("/guide.xml")[0]
    assert guides.headers_of("/guide.xml")[1]["If-Modified-Since"] == stamp_


async def test_same_content_without_validators_is_not_imported_again(
    guides: GuideServer, sources: Sources, worker: Worker
) -> None:
    source = await sources.create(guides.put("/guide.xml", document(schedule(CHANNELS, 3))))
    await sources.update(worker, source)
    again = await sources.update(worker, source)
    assert again["status"] == "success"
    assert again["message"].startswith("the file is the same as the one last imported")
    assert again["imported_programs"] == 0


async def test_changing_url_or_time_shift_imports_again(
    guides: GuideServer, sources: Sources, worker: Worker
) -> None:
    data = document(schedule(CHANNELS, 3))
    source = await sources.create(guides.put("/guide.xml", data, etag='"same"'))
    await sources.update(worker, source)
    before = {r["title"]: r["start_at"] for r in await sources.programmes(source)}

    await sources.pool.execute("UPDATE epg_sources SET time_shift = -90 WHERE id = $1", source)
    shifted = await sources.update(worker, source)
    assert shifted["imported_programs"] == 9, shifted["message"]
    assert "If-None-Match" not in guides.headers_of("/guide.xml")[-1]
    after = {r["title"]: r["start_at"] for r in await sources.programmes(source)}
    assert all(after[title] == start - dt.timedelta(minutes=90) for title, start in before.items())

    await sources.pool.execute(
        "UPDATE epg_sources SET url = $2 WHERE id = $1", source, guides.put("/other.xml", data, etag='"same"')
    )
    moved = await sources.update(worker, source)
    assert moved["imported_programs"] == 9, moved["message"]


async def test_programmes_past_the_archive_depth_are_not_kept(
    guides: GuideServer, sources: Sources, worker: Worker
) -> None:
    await sources.pool.execute(
        "UPDATE portals SET settings = settings || '{\"archiveDays\": 2}' WHERE id = $1", sources.portal_id
    )
    old = schedule(["one"], 2, first=NOW - dt.timedelta(days=3), tag="old")
    recent = schedule(["one"], 2, first=NOW - dt.timedelta(days=1), tag="recent")
    # Started before the cut-off but still running after it: kept.  NOW is the
    # hour the module was imported in, so the margins allow a run across the hour.
    straddling = [
        Prog(
            "one",
            stamp(NOW - dt.timedelta(days=2, hours=1)),
            stamp(NOW - dt.timedelta(days=1, hours=22)),
            "straddling",
        )
    ]
    source = await sources.create(guides.put("/guide.xml", document(old + recent + straddling)))

    fetch = await sources.update(worker, source)

    assert fetch["found_programs"] == 5 and fetch["imported_programs"] == 3
    assert "; 2 ended before the archive depth (archiveDays) and were not kept" in fetch["message"]
    titles = {r["title"] for r in await sources.programmes(source)}
    assert titles == {"Передача 0 recent", "Передача 1 recent", "straddling"}


async def test_prune_deletes_programmes_that_aged_past_the_archive(
    guides: GuideServer, sources: Sources, worker: Worker
) -> None:
    data = document(schedule(["one"], 48, first=NOW - dt.timedelta(hours=24)))
    source = await sources.create(guides.put("/guide.xml", data))
    await sources.update(worker, source)
    await sources.pool.execute(
        "UPDATE portals SET settings = settings || '{\"archiveDays\": 0}' WHERE id = $1", sources.portal_id
    )
    pruned_at = dt.datetime.now(dt.UTC)
    deleted = await worker.prune()
    rows = await sources.programmes(source)
    # 24 had ended at NOW; one more when the run crossed into the next hour.
    assert deleted in (24, 25) and deleted + len(rows) == 48
    assert all(r["end_at"] > pruned_at for r in rows)


async def test_deleting_a_source_deletes_its_programmes(
    guides: GuideServer, sources: Sources, worker: Worker
) -> None:
    source = await sources.create(guides.put("/guide.xml", document(schedule(CHANNELS, 2))))
    other = await sources.create(guides.put("/other.xml", document(schedule(CHANNELS, 3))))
    await sources.update(worker, source)
    await sources.update(worker, other)
    await sources.pool.execute("DELETE FROM epg_sources WHERE id = $1", source)
    assert await sources.programmes(source) == []
    assert len(await sources.programmes(other)) == 9


async def test_job_for_a_deleted_source_fails_cleanly(sources: Sources, worker: Worker) -> None:
    source = await sources.create("http://127.0.0.1:9/never.xml")
    job_id = await sources.request_update(source)
    await sources.pool.execute("DELETE FROM epg_sources WHERE id = $1", source)
    from tests.epg_worker.conftest import run_queued

    await run_queued(worker)
    job = await sources.pool.fetchrow("SELECT state, error FROM jobs WHERE id = $1", job_id)
    assert (job["state"], job["error"]) == ("failed", "the EPG source no longer exists")


async def test_message_points_out_channel_links_that_do_not_match(
    guides: GuideServer, sources: Sources, worker: Worker
) -> None:
    source = await sources.create(guides.put("/guide.xml", document(schedule(CHANNELS, 2))), name="main-epg")
    for name, xmltv_id in (("first", "first.ru"), ("sport1", "sport-channel-1")):
        await sources.pool.execute(
            "INSERT INTO channels (id, portal_id, name, title, epg_source_name, epg_channel_name)"
            " VALUES ($1, $2, $3, $3, 'main-epg', $4)",
            ids.new_id(),
            sources.portal_id,
            name,
            xmltv_id,
        )
    fetch = await sources.update(worker, source)
    assert fetch["status"] == "success"
    assert fetch["message"].endswith(
        "; 1 linked channels have no programmes in the file: sport1 ('sport-channel-1')"
        "; 2 channels of the file are not linked to a Catena channel"
    )

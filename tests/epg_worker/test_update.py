"""Updates end to end: a real HTTP server, a real worker, real PostgreSQL."""

from __future__ import annotations

import datetime as dt

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

from epg_worker.scheduler import Worker

CHANNELS = ["first.ru", "second.ru", "россия-1"]


def _rows(records: list) -> list[tuple]:
    return [
        (r["epg_channel_name"], r["start_at"], r["end_at"], r["title"], r["description"], r["genre"],
         r["rating"], r["language"])
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
        Prog("first.ru", stamp(start, "+0300"), stamp(start + dt.timedelta(minutes=45), "+0300"),
             "Новости 🙂", desc="Главные новости дня", categories=("News", "Новости"), rating="0+",
             lang="ru"),
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
        "Новости 🙂", "Главные новости дня", "News", "0+", "ru"
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
    assert "72 programmes of the previous guide replaced" in second["message"]


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

"""The walkthrough of the issue's "done when", through the Management API: create a
source, request an update, see the result, the programmes and the history."""

from __future__ import annotations

import datetime as dt
from typing import Any

from epg_worker.scheduler import Worker
from tests.conftest import Api
from tests.epg_worker.conftest import (
    NOW,
    GuideServer,
    Sources,
    document,
    gzipped,
    run_queued,
    schedule,
)


async def test_update_requested_through_the_api(
    api: Api, guides: GuideServer, sources: Sources, worker: Worker
) -> None:
    url = guides.put("/guide.xml.gz", gzipped(document(schedule(["one", "two"], 30))))
    status, source = await api.post("/epg-sources", {"name": "main-epg", "url": url, "period": 1})
    assert status == 200 and source["last_fetch_result"] is None
    source_id = source["epgSourceId"]

    status, job = await api.post(f"/epg-sources/{source_id}/update")
    assert status == 200
    await run_queued(worker)

    status, source = await api.get(f"/epg-sources/{source_id}")
    result = source["last_fetch_result"]
    assert (result["status"], result["job_id"], result["epgSourceId"]) == ("success", job["jobId"], source_id)
    assert (result["channels"], result["foundPrograms"], result["importedPrograms"]) == (2, 60, 60)
    assert result["deletedPrograms"] == 0 and result["message"].startswith("imported 60 of 60 programmes")
    assert result["fetchDuration"] >= 0 and result["importDuration"] >= 0 and result["fetched_at"]

    today = NOW.date().isoformat()
    status, body = await api.get(f"/epg-sources/{source_id}/programs?date={today}&epgChannelName=two")
    assert status == 200
    programs: list[dict[str, Any]] = body["programs"]
    first = programs[0]
    assert first["epgChannelName"] == "two" and first["date"] == today
    assert first["start"] == NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert first["end"] == (NOW + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (first["title"], first["genre"], first["rating"], first["language"]) == (
        "Передача 0",
        "Новости",
        "16+",
        "ru",
    )
    assert [p["start"] for p in programs] == sorted(p["start"] for p in programs)

    status, history = await api.get(f"/epg-fetches?epgSourceId={source_id}")
    assert status == 200
    assert [f["epgFetchId"] for f in history["epgFetches"]] == [result["epgFetchId"]]

    status, _ = await api.delete(f"/epg-sources/{source_id}")
    assert status == 201
    assert await sources.pool.fetchval("SELECT count(*) FROM epg_programs") == 0

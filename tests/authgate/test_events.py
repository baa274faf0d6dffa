"""``POST /events`` (docs/authgate.md): formats, counts, and what it refuses."""

from __future__ import annotations

import asyncpg
import msgspec
import pytest

from .conftest import Gateway, Portal, Sub, World, eventually

pytestmark = pytest.mark.slow


@pytest.fixture
async def scene(world: World) -> tuple[Portal, Sub]:
    portal = await world.portal()
    await world.package(portal, "basic")
    await world.channel(portal, "sport", ["basic"])
    sub = await world.subscriber(portal, ["basic"])
    return portal, sub


async def test_a_single_object_is_a_batch_of_one(gateways: list[Gateway], scene: tuple[Portal, Sub]) -> None:
    _, sub = scene
    assert (await gateways[1].auth(sub, "sport", session="ev-1")).status == 200
    event = {"event": "play_opened", "id": "ev-1", "media": "sport", "token": sub.token}
    answer = await gateways[0].events(event)
    assert answer.status == 200 and answer.json["accepted"] == 1


async def test_bad_events_are_counted_not_fatal(
    gateways: list[Gateway], scene: tuple[Portal, Sub], pool: asyncpg.Pool
) -> None:
    portal, sub = scene
    batch = [
        {"event": "play_opened", "media": "sport", "token": sub.token},  # no id
        {"id": "ev-2", "media": "sport", "token": sub.token},  # no event
        {"event": "play_updated", "id": "ev-2", "bytes": "lots", "token": sub.token},  # bytes not a number
        {"event": "play_updated", "id": "ev-x", "media": "sport"},  # cannot be attributed
        {"event": "play_opened", "id": "\u0000bad", "token": sub.token},  # unusable id
        "not an object",
        {"event": "stream_started", "media": "sport"},  # not a play event
        {"event": "play_opened", "id": "ev-2", "media": "sport", "token": "garbage", "user_id": sub.text_id},
        {"event": "play_opened", "id": "ev-9", "media": "sport", "user_id": sub.text_id},  # never admitted
        {
            "event": "play_opened",
            "id": "ev-2",
            "media": "sport",
            "user_id": sub.text_id,
            "brand_new_field": [1, 2],
        },  # admitted for this subscriber: attributed by user_id
    ]
    # The session was admitted (the gateway counts it for the subscriber).
    assert (await gateways[0].auth(sub, "sport", session="ev-2")).status == 200
    answer = await gateways[1].events(batch)
    assert answer.status == 200
    body = answer.json
    assert (body["accepted"], body["rejected"], body["ignored"]) == (1, 8, 1)
    assert [e["index"] for e in body["errors"]] == [0, 1, 2, 3, 4, 5, 7, 8]
    assert all(e["message"] for e in body["errors"])

    async def row() -> asyncpg.Record | None:
        return await pool.fetchrow("SELECT * FROM play_sessions WHERE flussonic_id = 'ev-2'")

    by_user = await eventually(row)
    assert by_user["subscriber_id"] == sub.id and by_user["channel_id"] == portal.channels["sport"]


@pytest.mark.parametrize("body", [b"not json", b'{"event": ', b"42", b'"text"', b"", b"\xff\xfe"])
async def test_a_body_that_is_not_events_is_400(gateways: list[Gateway], body: bytes) -> None:
    status, _, raw = await gateways[0].request("POST", "/events", data=body)
    assert status == 400
    assert msgspec.json.decode(raw)["error"] == "bad_request"


async def test_another_portals_session_id_is_not_taken_over(
    world: World, gateways: list[Gateway], scene: tuple[Portal, Sub], pool: asyncpg.Pool
) -> None:
    portal, sub = scene
    intruder_portal = await world.portal()
    await world.package(intruder_portal, "basic")
    await world.channel(intruder_portal, "sport", ["basic"])
    intruder = await world.subscriber(intruder_portal, ["basic"])
    assert (await gateways[0].auth(sub, "sport", session="shared-id")).status == 200
    # Wait for this session's own row: the module's gateways may still be writing
    # rows of earlier tests' sessions.
    await eventually(
        lambda: pool.fetchval("SELECT count(*) FROM play_sessions WHERE flussonic_id = 'shared-id'")
    )
    await gateways[1].events({"event": "play_closed", "id": "shared-id", "token": intruder.token, "bytes": 5})
    # A session of the intruder's own, through the same gateway: once its row is
    # written, so would be anything the event above had made.
    await gateways[1].auth(intruder, "sport", session="other")
    await eventually(lambda: pool.fetchval("SELECT count(*) FROM play_sessions WHERE flussonic_id = 'other'"))
    owned = await pool.fetchrow("SELECT * FROM play_sessions WHERE flussonic_id = 'shared-id'")
    assert owned["portal_id"] == portal.id and owned["active"] and owned["bytes"] == 0


DEEP = [b"[" * 50_000, b'{"a":' * 50_000, b"[" * 50_000 + b"]" * 50_000]


@pytest.mark.parametrize("body", DEEP, ids=["arrays", "objects", "closed-arrays"])
async def test_deeply_nested_json_is_400_not_503(gateways: list[Gateway], body: bytes) -> None:
    # The decoder's RecursionError used to escape as 503 "unavailable" (issue 15, item 9).
    status, _, raw = await gateways[0].request("POST", "/events", data=body)
    assert status == 400
    assert msgspec.json.decode(raw)["error"] == "bad_request"

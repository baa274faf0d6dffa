"""``/auth`` answers exactly as docs/authgate.md lays them out, from real gateway processes."""

from __future__ import annotations

import time

import jwt
import msgspec
import pytest

from catena import ids
from catena.tokens import TokenCodec

from .conftest import CODEC, MODES, Gateway, Launcher, Portal, Sub, World

pytestmark = pytest.mark.slow
# The gateways of this module run against a single Redis, a cluster and a sentinel group.
REDIS_MODES = MODES


@pytest.fixture
async def scene(world: World) -> tuple[Portal, Sub]:
    portal = await world.portal(authDuration=120, maxSessions=3, archiveDays=2)
    await world.package(portal, "basic")
    await world.channel(portal, "sport", ["basic"])
    await world.channel(portal, "news")
    sub = await world.subscriber(portal, ["basic"])
    return portal, sub


async def test_allow_carries_duration_user_and_limit(
    gateways: list[Gateway],
    scene: tuple[Portal, Sub],
) -> None:
    _, sub = scene
    for gateway in gateways:
        answer = await gateway.auth(sub, "sport")
        assert answer.status == 200, answer
        assert answer.headers["X-AuthDuration"] == "120"
        assert answer.headers["X-UserId"] == sub.text_id
        assert answer.headers["X-Max-Sessions"] == "3"
        assert answer.body == b""


async def test_update_of_an_allowed_session_is_allowed(
    gateways: list[Gateway],
    scene: tuple[Portal, Sub],
) -> None:
    _, sub = scene
    first = await gateways[0].auth(sub, "sport", session="s-1")
    assert first.status == 200
    for gateway in gateways:
        again = await gateway.auth(sub, "sport", session="s-1", request_type="update_session", bytes=1000)
        assert again.status == 200, again


async def test_subscriber_limit_overrides_portal_default(
    world: World, gateways: list[Gateway], scene: tuple[Portal, Sub]
) -> None:
    portal, _ = scene
    sub = await world.subscriber(portal, ["basic"], max_sessions=5)
    answer = await gateways[1].auth(sub, "sport")
    assert answer.headers["X-Max-Sessions"] == "5"


async def test_denials_name_their_reason(
    world: World,
    gateways: list[Gateway],
    scene: tuple[Portal, Sub],
) -> None:
    portal, sub = scene
    disabled = await world.subscriber(portal, ["basic"], disabled=True)
    gone = await world.subscriber(portal, ["basic"])
    await world.change(portal, "subscriber", [gone.id], "DELETE FROM subscribers WHERE id = $1", gone.id)
    other_portal = await world.portal()
    cases = [
        (None, "sport", "no_token"),
        (Sub(sub.id, sub.portal_id, "not-a-jwt", sub.text_id), "sport", "bad_token"),
        (disabled, "sport", "subscriber_disabled"),
        (gone, "sport", "unknown_subscriber"),
        (sub, "news", "channel_not_in_packages"),
        (sub, "nosuch", "unknown_channel"),
        (
            Sub(sub.id, other_portal.id, CODEC.sign(sub.id, other_portal.id, 1), ""),
            "sport",
            "portal_mismatch",
        ),
    ]
    for gateway in gateways:
        for who, channel, reason in cases:
            answer = await gateway.auth(who, channel)
            assert answer.status == 403, (reason, answer)
            assert answer.reason == reason
            assert int(answer.headers["X-AuthDuration"]) == 10
            assert answer.json["message"]


async def test_denial_duration_never_exceeds_the_portal_allow_duration(
    world: World, launcher: Launcher, scene: tuple[Portal, Sub]
) -> None:
    _, sub = scene
    gateway = await launcher.start(auth_deny_duration=600)
    answer = await gateway.auth(sub, "news")
    assert answer.reason == "channel_not_in_packages"
    assert answer.headers["X-AuthDuration"] == "120"
    await gateway.stop()


async def test_token_signed_with_another_key_or_expired(
    gateways: list[Gateway],
    scene: tuple[Portal, Sub],
) -> None:
    _, sub = scene
    foreign = TokenCodec("t1:another-secret-entirely-0123456789").sign(sub.id, sub.portal_id, 1)
    claims = {
        "sub": ids.encode(sub.id),
        "prt": ids.encode(sub.portal_id),
        "ver": 1,
        "exp": int(time.time()) - 5,
    }
    expired = jwt.encode(
        claims, "test-secret-for-the-gateway-0123456789", algorithm="HS256", headers={"kid": "t1"}
    )
    for token, reason in ((foreign, "bad_token"), (expired, "bad_token")):
        answer = await gateways[0].auth(Sub(sub.id, sub.portal_id, token, ""), "sport")
        assert answer.status == 403 and answer.reason == reason


async def test_missing_fields_are_bad_request(gateways: list[Gateway], scene: tuple[Portal, Sub]) -> None:
    _, sub = scene
    complete = {"name": "sport", "session_id": "x", "token": sub.token}
    for missing in ("name", "session_id"):
        params = {k: v for k, v in complete.items() if k != missing}
        status, _, body = await gateways[0].request("GET", "/auth", params=params)
        assert status == 403
        decoded = msgspec.json.decode(body)
        assert decoded["error"] == "bad_request" and decoded["field"] == missing


async def test_unknown_parameters_are_ignored(gateways: list[Gateway], scene: tuple[Portal, Sub]) -> None:
    _, sub = scene
    answer = await gateways[0].auth(sub, "sport", brand_new_flussonic_field="x", another="1")
    assert answer.status == 200


async def test_post_auth_with_json(gateways: list[Gateway], scene: tuple[Portal, Sub]) -> None:
    _, sub = scene
    body = {
        "name": "sport",
        "session_id": "json-1",
        "token": sub.token,
        "request_type": "new_session",
        "request_number": 1,
        "ip": "10.0.0.2",
        "dvr": False,
        "new_field": {"nested": True},
    }
    status, headers, _ = await gateways[0].request("POST", "/auth", data=msgspec.json.encode(body))
    assert status == 200 and headers["X-UserId"] == sub.text_id
    status, _, raw = await gateways[0].request("POST", "/auth", data=b"{not json")
    assert status == 403 and msgspec.json.decode(raw)["error"] == "bad_request"
    body["name"] = "news"
    status, _, raw = await gateways[1].request("POST", "/auth", data=msgspec.json.encode(body))
    assert status == 403 and msgspec.json.decode(raw)["error"] == "channel_not_in_packages"


@pytest.mark.parametrize("body", [b"[" * 50_000, b'{"a":' * 50_000], ids=["arrays", "objects"])
async def test_post_auth_with_deeply_nested_json_is_a_bad_request(
    gateways: list[Gateway], body: bytes
) -> None:
    # The decoder's RecursionError used to escape as 503 "unavailable" (issue 15, item 9);
    # it is the documented answer to a body that is not a JSON object.
    status, _, raw = await gateways[0].request("POST", "/auth", data=body)
    decoded = msgspec.json.decode(raw)
    assert status == 403 and decoded["error"] == "bad_request" and decoded["field"] == "body"


async def test_archive_requests_get_ranges_within_the_archive_depth(
    gateways: list[Gateway], scene: tuple[Portal, Sub]
) -> None:
    _, sub = scene
    before = int(time.time())
    live = await gateways[0].auth(sub, "sport", session="dvr-1")
    assert live.body == b""
    for params in ({"dvr": "true"}, {"media_request": "dvr_session-hls_mbr_playlist-1362504585-3600"}):
        answer = await gateways[0].auth(
            sub, "sport", session="dvr-1", request_type="update_session", **params
        )
        assert answer.status == 200
        (window,) = answer.json["allowed_dvr_ranges"]
        assert before <= window["closed_at"] <= int(time.time())
        assert window["closed_at"] - window["opened_at"] == 2 * 86400


async def test_portal_parameter_must_match_the_token(
    gateways: list[Gateway],
    scene: tuple[Portal, Sub],
) -> None:
    portal, sub = scene
    assert (await gateways[0].auth(sub, "sport", portal=portal.text_id)).status == 200
    other = ids.encode(ids.new_id())
    answer = await gateways[0].auth(sub, "sport", portal=other)
    assert answer.reason == "portal_mismatch"

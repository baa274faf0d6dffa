"""The load test sends what Flussonic sends; run.py gives locust playable profiles."""

from __future__ import annotations

from pathlib import Path

import msgspec

from benchmarks.auth_harness import dataset
from catena import ids
from catena.tokens import TokenCodec
from loadtests import run, viewing

PROFILE = viewing.Profile("AAAAAAAAAAE.", "tok.en.x", 2, ["ch0001", "ch0002"])


def test_auth_query_has_flussonics_fields() -> None:
    session = viewing.Session("3f0c1d1e-0000-4000-8000-000000000001", "ch0002", "http://gw", 0)
    new = viewing.auth_query(PROFILE, session, "new_session")
    for field in (
        "name",
        "proto",
        "ip",
        "request_type",
        "request_number",
        "session_id",
        "stream_clients",
        "total_clients",
        "token",
    ):
        assert new[field]
    assert (new["name"], new["request_type"], new["token"]) == ("ch0002", "new_session", "tok.en.x")
    session.number, session.bytes = 3, 500
    update = viewing.auth_query(PROFILE, session, "update_session")
    assert update["request_number"] == "3" and update["bytes"] == "500"
    assert int(update["duration"]) > 0  # opened at the epoch


def test_play_events_carry_the_session_and_close_time() -> None:
    session = viewing.Session("sid", "ch0001", "http://gw", 1_000)
    opened = viewing.play_event("play_opened", PROFILE, session)
    closed = viewing.play_event("play_closed", PROFILE, session)
    assert opened["id"] == closed["id"] == "sid" and opened["media"] == "ch0001"
    assert "closed_at" not in opened and closed["closed_at"] >= opened["opened_at"]
    assert opened["event_id"] != closed["event_id"]  # deduplication must not merge them


def test_profiles_are_token_holders_single_screens_first() -> None:
    codec = TokenCodec(run.TOKEN_SECRETS)
    data = dataset.generate(run.SPEC, 99, codec)
    profiles = run.profiles(data, 150)
    decoded = msgspec.json.decode(msgspec.json.encode(profiles), type=list[viewing.Profile])
    assert decoded == profiles and len(profiles) == 150
    singles = sum(p.limit == 1 for p in profiles)
    assert singles == run.SPEC.tokens // dataset.SINGLE_SCREEN_EVERY
    assert all(p.limit == 1 for p in profiles[:singles])
    for profile in profiles:
        claims = codec.verify(profile.token)
        assert ids.encode(claims.subscriber_id) == profile.subscriber
        assert profile.channels and len(set(profile.channels)) == len(profile.channels)


def test_tally_round_trips_and_sums_up(tmp_path: Path) -> None:
    admitted = [viewing.Admitted(f"s{i}", "AAAAAAAAAAE.") for i in range(60)]
    tally = viewing.Tally(admitted, asked=100, session_limit=38)
    (tmp_path / "tally.json").write_bytes(msgspec.json.encode(tally))
    read = viewing.read_tally(tmp_path / "tally.json")
    assert read == tally and read.failed == 2
    assert run.new_session_summary(read) == (
        "loadtest: new_session asked 100: admitted 60, denied with session_limit 38, failed 2"
    )
    assert "no tally" in run.new_session_summary(None)

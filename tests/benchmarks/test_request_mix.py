from __future__ import annotations

from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httptools
import pytest

from benchmarks.auth_harness import dataset, request_mix, verify
from benchmarks.auth_harness.request_mix import Planned
from catena.tokens import TokenCodec, TokenError


@pytest.fixture(scope="module")
def plan(full_data: dataset.DataSet) -> request_mix.Plan:
    return request_mix.build(full_data, 20_000)


class _Parsed:
    def __init__(self) -> None:
        self.url = b""
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        self.complete = True


def query(planned: Planned) -> dict[str, str]:
    """The request's query, parsed the way a server parses it."""
    parsed = _Parsed()
    parser = httptools.HttpRequestParser(parsed)
    parser.feed_data(planned.raw)
    assert parsed.complete and parser.get_method() == b"GET"
    url = urlsplit(parsed.url.decode())
    assert url.path == "/auth"
    return {key: values[0] for key, values in parse_qs(url.query, strict_parsing=True).items()}


def test_the_mix_is_70_25_5() -> None:
    counts = request_mix.mix_counts(20_000)
    assert counts == {
        "update_session": 14_000,
        "new_session": 5_000,
        "bad_token": 334,
        "channel_not_in_packages": 333,
        "session_limit": 333,
    }
    assert sum(request_mix.mix_counts(1_001).values()) == 1_001
    with pytest.raises(ValueError):
        request_mix.mix_counts(5)


def test_pool_holds_the_mix_shuffled(plan: request_mix.Plan) -> None:
    assert Counter(p.kind for p in plan.pool) == request_mix.mix_counts(20_000)
    assert len(plan.setup) == 14_000 and {p.kind for p in plan.setup} == {"open"}
    # Shuffled: wrk's first second already sees every kind.
    assert len({p.kind for p in plan.pool[:200]}) == 5


def test_updates_refresh_sessions_the_setup_opened(plan: request_mix.Plan) -> None:
    opened = {p.session_id: p for p in plan.setup}
    updates = [p for p in plan.pool if p.kind == "update_session"]
    assert {p.session_id for p in updates} == set(opened)
    for update in updates[::50]:
        fields, first = query(update), query(opened[update.session_id])
        assert fields["request_type"] == "update_session"
        assert int(fields["request_number"]) >= 2 and int(fields["bytes"]) > 0
        assert first["request_type"] == "new_session"
        for same in ("name", "token", "session_id"):
            assert fields[same] == first[same]


def test_new_sessions_are_first_sessions_within_limits(
    plan: request_mix.Plan, full_data: dataset.DataSet
) -> None:
    by_id = {s.id: s for s in full_data.subscribers}
    open_subscribers = {p.subscriber_id for p in plan.setup}
    fresh = [p for p in plan.pool if p.kind == "new_session"]
    assert len({p.session_id for p in fresh}) == len(fresh)
    assert len({p.subscriber_id for p in fresh}) == len(fresh)
    for planned in fresh:
        assert planned.subscriber_id not in open_subscribers
        assert by_id[planned.subscriber_id].max_sessions != 1
        assert (planned.expect_status, planned.expect_reason) == (200, None)


def test_denials_are_what_they_claim(
    plan: request_mix.Plan, full_data: dataset.DataSet, codec: TokenCodec
) -> None:
    by_id = {s.id: s for s in full_data.subscribers}
    names = {name: i for i, (_, name) in enumerate(full_data.channels)}
    open_subscribers = {p.subscriber_id for p in plan.setup}
    for planned in plan.pool:
        if planned.kind in ("update_session", "new_session"):
            continue
        fields = query(planned)
        subscriber = by_id[planned.subscriber_id]
        assert (planned.expect_status, planned.expect_reason) == (403, planned.kind)
        assert fields["request_type"] == "new_session"
        if planned.kind == "bad_token":
            with pytest.raises(TokenError):
                codec.verify(fields["token"])
        elif planned.kind == "channel_not_in_packages":
            assert names[fields["name"]] not in full_data.entitled(subscriber)
        else:
            assert subscriber.max_sessions == 1 and subscriber.id in open_subscribers
            assert names[fields["name"]] in full_data.entitled(subscriber)


def test_allowed_requests_carry_valid_tokens_for_entitled_channels(
    plan: request_mix.Plan, full_data: dataset.DataSet, codec: TokenCodec
) -> None:
    by_id = {s.id: s for s in full_data.subscribers}
    names = {name: i for i, (_, name) in enumerate(full_data.channels)}
    allowed = [p for p in plan.setup + plan.pool if p.expect_status == 200]
    for planned in allowed[::40]:
        fields = query(planned)
        assert codec.verify(fields["token"]).subscriber_id == planned.subscriber_id
        assert names[fields["name"]] in full_data.entitled(by_id[planned.subscriber_id])
        assert fields["qs"] == "token=" + fields["token"]
        for required in ("proto", "ip", "session_id", "stream_clients", "total_clients"):
            assert fields[required]


def test_pool_file_splits_back_into_the_requests(plan: request_mix.Plan, tmp_path: Path) -> None:
    path = request_mix.write_pool(plan, tmp_path / "pool.bin")
    assert path.read_bytes().split(request_mix.SEPARATOR) == [p.raw for p in plan.pool]


def test_pool_too_large_for_the_tokens_is_refused(codec: TokenCodec) -> None:
    small = dataset.generate(dataset.Spec(subscribers=300, tokens=100), 7, codec)
    with pytest.raises(ValueError, match="token holders"):
        request_mix.build(small, 1_000)


def test_deny_reason_reads_the_json_error() -> None:
    assert verify.deny_reason('{"error": "session_limit"}') == "session_limit"
    assert verify.deny_reason(b'{"allowed_dvr_ranges": []}') is None
    assert verify.deny_reason("not json") is None
    assert verify.deny_reason("[1]") is None

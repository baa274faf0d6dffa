"""Micro-benchmarks of the gateway's in-process decision (issue 5, item 8; target ≤ 5 µs).

Run: ``make bench-decision`` or
``.venv/bin/pytest benchmarks/bench_authgate_decision.py -o python_files='bench_*.py' --benchmark-only``

The decider is warm, as it is for the 70 % of checks that are ``update_session`` of
open sessions: the token verified, the subscriber and portal entries loaded, the
session counted.  Each benchmark first asserts the answer, so that it cannot time
a wrong path.  A real check also pays for the HTTP parse and the socket calls,
which the wrk runs measure.
"""

from __future__ import annotations

import time
from pathlib import Path

import asyncpg
import pytest

from authgate.caches import Caches, PortalEntry, SubscriberEntry
from authgate.decision import Admission, Decider
from authgate.health import Health
from authgate.metrics import Metrics
from authgate.query import parse_query
from authgate.recorder import Recorder
from authgate.sessions import KnownSession, SessionTable
from authgate.spool import Spool
from catena.entitlement_map import ChannelRecord, PortalRecord, SubscriberRecord
from catena.tokens import TokenCodec

PORTAL, SUBSCRIBER, SESSION = 1 << 40, 2 << 40, b"8f1c2b7e-1f43-4c3e-9d2e-0c9f2a1b3c4d"
CODEC = TokenCodec("bench:benchmark-secret-0123456789abcdef")
TOKEN = CODEC.sign(SUBSCRIBER, PORTAL, 1)


def query(name: str, request_type: str = "update_session") -> bytes:
    """What Flussonic sends on a re-check (every field it documents)."""
    return (
        f"name={name}&proto=hls&ip=10.1.2.3&request_type={request_type}&request_number=17"
        f"&session_id={SESSION.decode()}&stream_clients=3&total_clients=120&token={TOKEN}"
        "&duration=3060&bytes=523456789&qs=token%3D...%26device_id%3Dtv-1&user_agent=VLC%2F3.0.16"
        "&referer=&host=tv.example.com"
    ).encode()


async def _no_database() -> asyncpg.Connection:
    raise OSError("the benchmark writes nothing")


def warm_decider(tmp: Path) -> Decider:
    metrics, sessions = Metrics(), SessionTable()
    recorder = Recorder(
        _no_database, Spool(tmp), Health(lambda _: None), metrics, interval=1.0, max_buffered=1000
    )
    decider = Decider(
        Caches(1000), sessions, recorder, CODEC, metrics, deny_duration=10, grace=60.0, stale_limit=300.0
    )
    channels = [ChannelRecord(100 + i, f"ch{i}", [10 + i % 50]) for i in range(500)]
    state = decider.caches.portal(PORTAL)
    state.entry = PortalEntry(1, PortalRecord(180, 7, 2, "deny_new", [10], channels), time.monotonic(), 10)
    record = SubscriberRecord(PORTAL, 1, False, None, [11, 12, 13])
    decider.caches.subscribers.put(SUBSCRIBER, SubscriberEntry(SUBSCRIBER, 1, record, time.monotonic()))
    session = sessions.add(KnownSession(SESSION, PORTAL, SUBSCRIBER, int(time.time() * 1000)))
    session.counted, session.auth_ms = True, 180_000
    session.expires_ms = int(time.time() * 1000) + 240_000
    return decider


@pytest.fixture
def decider(tmp_path: Path) -> Decider:
    return warm_decider(tmp_path)


def test_decide_update_session_allowed(benchmark: object, decider: Decider) -> None:
    fields = parse_query(query("ch1"))
    answer = decider.decide(fields, time.time())
    assert isinstance(answer, bytes) and answer.startswith(b"HTTP/1.1 200") and b"X-Max-Sessions: 2" in answer
    benchmark(decider.decide, fields, time.time())  # type: ignore[operator]


def test_parse_and_decide_update_session_allowed(benchmark: object, decider: Decider) -> None:
    raw, now = query("ch1"), time.time()

    def check() -> bytes | Admission | None:
        return decider.decide(parse_query(raw), now)

    answer = check()
    assert isinstance(answer, bytes) and answer.startswith(b"HTTP/1.1 200")
    benchmark(check)  # type: ignore[operator]


def test_decide_denied_channel_not_in_packages(benchmark: object, decider: Decider) -> None:
    fields = parse_query(query("ch30", "new_session"))
    answer = decider.decide(fields, time.time())
    assert isinstance(answer, bytes) and b'"error":"channel_not_in_packages"' in answer
    benchmark(decider.decide, fields, time.time())  # type: ignore[operator]


def test_decide_new_session_up_to_admission(benchmark: object, decider: Decider) -> None:
    fields = parse_query(query("ch1", "new_session").replace(SESSION, b"another-session-id"))
    assert isinstance(decider.decide(fields, time.time()), Admission)  # the rest: one batched Redis call
    benchmark(decider.decide, fields, time.time())  # type: ignore[operator]


def test_parse_query_alone(benchmark: object) -> None:
    raw = query("ch1")
    assert parse_query(raw)[b"session_id"] == SESSION
    benchmark(parse_query, raw)  # type: ignore[operator]

"""What a viewer's player and Flussonic send, without locust (which patches the process).

The locustfile plays these; ``run.py`` writes the profiles; tests check the shapes.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

VIEWER_IP = "203.0.113.7"  # TEST-NET-3: a documentation address, never routed


class Profile(msgspec.Struct, frozen=True):
    """A subscriber as the load test plays it."""

    subscriber: str
    token: str
    limit: int
    channels: list[str]


class Admitted(msgspec.Struct, frozen=True):
    """A session a gateway admitted (200 to its new_session)."""

    session_id: str
    subscriber: str


class Tally(msgspec.Struct):
    """How the run's new_session requests were answered; locust's test_stop writes it."""

    admitted: list[Admitted] = msgspec.field(default_factory=list)
    asked: int = 0
    session_limit: int = 0

    @property
    def failed(self) -> int:
        return self.asked - len(self.admitted) - self.session_limit


def read_tally(path: Path) -> Tally:
    return msgspec.json.decode(path.read_bytes(), type=Tally)


class Session(msgspec.Struct):
    """One viewing: Flussonic's session id, the channel, where it is checked."""

    session_id: str
    channel: str
    gateway: str
    opened_ms: int
    number: int = 1
    bytes: int = 0


def now_ms() -> int:
    return int(time.time() * 1000)


def auth_query(profile: Profile, session: Session, request_type: str) -> dict[str, str]:
    """The query string Flussonic sends to its auth backend for ``session``."""
    query = {
        "name": session.channel,
        "proto": "hls",
        "ip": VIEWER_IP,
        "request_type": request_type,
        "request_number": str(session.number),
        "session_id": session.session_id,
        "stream_clients": "3",
        "total_clients": "120",
        "token": profile.token,
        "user_agent": "locust-viewer",
        "qs": "token=" + profile.token,
    }
    if request_type == "update_session":
        query["duration"] = str(max(0, (now_ms() - session.opened_ms) // 1000))
        query["bytes"] = str(session.bytes)
    return query


def play_event(kind: str, profile: Profile, session: Session) -> dict[str, Any]:
    """One event of Flussonic's event sink (``play_opened``, ``play_closed``) about ``session``."""
    now = now_ms()
    event: dict[str, Any] = {
        "event": kind,
        "id": session.session_id,
        "media": session.channel,
        "ip": VIEWER_IP,
        "proto": "hls",
        "token": profile.token,
        "user_id": profile.subscriber,
        "opened_at": session.opened_ms,
        "bytes": session.bytes,
        "event_id": str(uuid.uuid4()),
        "utc_ms": now,
        "server": "edge-load",
    }
    if kind == "play_closed":
        event["closed_at"] = now
    return event

"""Viewers zapping channels through several gateway processes, as Flussonic reports them.

Each locust user is one device of a subscriber (several devices share a subscriber,
so session limits bite).  A device opens a session on a channel (``new_session``
at a random gateway, then a ``play_opened`` event), refreshes it
(``update_session``, like Flussonic's re-check), and now and then zaps: it closes
the session (``play_closed``) — or, one time in seven, just abandons it, as a
player that crashes does — and opens another on a different channel.

A ``403 session_limit`` on ``new_session`` is an expected answer; any other denial,
a 5xx or a refused refresh of an admitted session is a failure.  ``test_stop``
writes every admitted session and the count of denials to ``--tally`` for
``check_sessions``.

    locust -f loadtests/locustfile.py --headless -u 300 -r 50 -t 60s \\
        --host http://127.0.0.1:8140 --gateways http://127.0.0.1:8140,http://127.0.0.1:8141 \\
        --viewers var/loadtest/viewers.json --tally var/loadtest/tally.json

``python -m loadtests.run`` (``make loadtest``) prepares all of that and checks afterwards.
"""

from __future__ import annotations

import itertools
import random
import threading
import uuid
from pathlib import Path
from typing import Any

import msgspec
from locust import FastHttpUser, between, events, task
from locust.env import Environment

from benchmarks.auth_harness.verify import deny_reason
from loadtests.viewing import Admitted, Profile, Session, Tally, auth_query, now_ms, play_event

ZAP_CHANCE = 0.15
ABANDON_CHANCE = 1 / 7
REFRESH_BYTES = 1_250_000  # about 10 Mbit/s of video between two checks


class _Shared:
    """What all users of this locust process share: profiles, gateways, admitted sessions."""

    def __init__(self) -> None:
        self.profiles: list[Profile] = []
        self.gateways: list[str] = []
        self.tally = Tally()
        self.lock = threading.Lock()
        self.devices = itertools.count()

    def load(self, viewers: Path, gateways: str) -> None:
        self.profiles = msgspec.json.decode(viewers.read_bytes(), type=list[Profile])
        self.gateways = [g.strip().rstrip("/") for g in gateways.split(",") if g.strip()]

    def count(self, session_id: str, subscriber: str, admitted: bool, limited: bool) -> None:
        """Tally one answer to a new_session."""
        with self.lock:
            self.tally.asked += 1
            if admitted:
                self.tally.admitted.append(Admitted(session_id, subscriber))
            self.tally.session_limit += limited


SHARED = _Shared()


def _options(parser: Any) -> None:
    parser.add_argument("--viewers", default="", help="JSON list of subscriber profiles")
    parser.add_argument("--gateways", default="", help="comma-separated gateway base URLs")
    parser.add_argument("--tally", default="", help="where test_stop writes how new sessions fared")


def _start(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    assert options is not None
    gateways = options.gateways or (environment.host or "")
    SHARED.load(Path(options.viewers), gateways)


def _stop(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is not None and options.tally:
        with SHARED.lock:
            Path(options.tally).write_bytes(msgspec.json.encode(SHARED.tally))


# Registered by call rather than as decorators: locust's add_listener has no type
# hints, and an untyped decorator would leave the listeners unchecked.
events.init_command_line_parser.add_listener(_options)
events.test_start.add_listener(_start)
events.test_stop.add_listener(_stop)


class Viewer(FastHttpUser):
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        self.profile = SHARED.profiles[next(SHARED.devices) % len(SHARED.profiles)]
        self.session: Session | None = None

    def on_stop(self) -> None:
        if self.session is not None:
            self._close()

    @task
    def watch(self) -> None:
        if self.session is None:
            self._open()
        elif random.random() < ZAP_CHANCE:
            if random.random() < ABANDON_CHANCE:
                self.session = None
            else:
                self._close()
            self._open()
        else:
            self._refresh()

    def _open(self) -> None:
        choices = [c for c in self.profile.channels if not self.session or c != self.session.channel]
        session = Session(
            str(uuid.uuid4()),
            random.choice(choices or self.profile.channels),
            random.choice(SHARED.gateways),
            now_ms(),
        )
        answer = self._auth(session, "new_session")
        SHARED.count(session.session_id, self.profile.subscriber, answer == 200, answer == "session_limit")
        if answer == 200:
            self.session = session
            self._event("play_opened", session)

    def _refresh(self) -> None:
        assert self.session is not None
        self.session.number += 1
        self.session.bytes += REFRESH_BYTES
        # Flussonic re-checks through whichever gateway its balancer picks.
        self.session.gateway = random.choice(SHARED.gateways)
        if self._auth(self.session, "update_session") != 200:
            self.session = None

    def _close(self) -> None:
        assert self.session is not None
        self._event("play_closed", self.session)
        self.session = None

    def _auth(self, session: Session, request_type: str) -> int | str | None:
        """Ask a gateway: 200, "session_limit" (expected for a new session), or else a failure."""
        url = session.gateway + "/auth"
        query = auth_query(self.profile, session, request_type)
        with self.client.get(url, params=query, name=request_type, catch_response=True) as resp:
            if resp.status_code == 200:
                return 200
            reason = deny_reason(resp.text or "")
            if resp.status_code == 403 and reason == "session_limit" and request_type == "new_session":
                resp.success()
                return reason
            resp.failure(f"{resp.status_code} {reason}")
            return None

    def _event(self, kind: str, session: Session) -> None:
        body = msgspec.json.encode([play_event(kind, self.profile, session)])
        url = random.choice(SHARED.gateways) + "/events"
        headers = {"Content-Type": "application/json"}
        with self.client.post(
            url, data=body.decode(), headers=headers, name=kind, catch_response=True
        ) as resp:
            if not 200 <= resp.status_code < 300:
                resp.failure(f"{resp.status_code} {resp.text[:80] if resp.text else ''}")

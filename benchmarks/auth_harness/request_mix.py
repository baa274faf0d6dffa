"""The request mix: raw Flussonic ``GET /auth`` requests, built once, before the run.

A :class:`Plan` has two parts.  ``setup`` opens (``new_session``) every session that
the pool refreshes, and is sent once before measuring.  ``pool`` is what wrk
cycles through: 70 % ``update_session`` of those open sessions, 25 % ``new_session``
of subscribers that hold no session yet, and 5 % denials split evenly between a
token signed with a foreign key, a channel outside the subscriber's packages, and a
second session of a single-screen subscriber whose one session is open.

Each request carries the answer a correct gateway gives, so the harness can check
answers before it measures speed.  Once wrk has gone round the pool, its
``new_session`` requests repeat sessions the gateway already counts; a gateway
treats those like refreshes (an opened session never counts twice).
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from dataclasses import dataclass
from pathlib import Path

from yarl import URL

from catena.tokens import TokenCodec

from .dataset import DataSet, Subscriber

UPDATE_SHARE = 0.70
NEW_SHARE = 0.25
DENIALS = ("bad_token", "channel_not_in_packages", "session_limit")
# The separator between requests in the pool file that wrk's Lua script splits.
SEPARATOR = b"\0"
# A key no deployment signs with, for "a JWT signed with another key".
FOREIGN_SECRETS = "foreign:this-key-is-not-configured-anywhere-0123456789"
_USER_AGENTS = (
    "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) TV Safari",
    "ExoPlayerLib/2.18.1 (Linux; Android 11) Catena/1.4",
    "AppleCoreMedia/1.0.0.20G75 (iPhone; U; CPU OS 16_6 like Mac OS X; en_us)",
    "VLC/3.0.18 LibVLC/3.0.18",
)


@dataclass(frozen=True, slots=True)
class Planned:
    """One request and the answer a correct gateway gives it."""

    kind: str  # "open", "update_session", "new_session" or a reason in DENIALS
    raw: bytes
    session_id: str
    subscriber_id: int
    channel: str
    expect_status: int
    expect_reason: str | None


@dataclass(frozen=True, slots=True)
class Plan:
    setup: list[Planned]
    pool: list[Planned]


def build(data: DataSet, pool_size: int = 20_000, seed: int = 7) -> Plan:
    """The setup requests and the shuffled pool of ``pool_size`` requests."""
    rng = random.Random(seed)
    counts = mix_counts(pool_size)
    opened, fresh = _split_holders(data, rng, counts["update_session"], counts["new_session"])
    maker = _Maker(data, rng)
    setup = [maker.session(s, "open") for s in opened]
    pool = [maker.refresh(p, s) for p, s in zip(setup, opened, strict=True)]
    pool += [maker.session(s, "new_session") for s in fresh]
    pool += _denials(maker, data, opened, counts)
    rng.shuffle(pool)
    return Plan(setup, pool)


def mix_counts(pool_size: int) -> dict[str, int]:
    """How many requests of each kind a pool of ``pool_size`` holds."""
    if pool_size < 20:
        raise ValueError(f"a pool needs at least 20 requests, got {pool_size}")
    counts = {"update_session": round(pool_size * UPDATE_SHARE)}
    counts["new_session"] = round(pool_size * NEW_SHARE)
    denials = pool_size - counts["update_session"] - counts["new_session"]
    for i, reason in enumerate(DENIALS):
        counts[reason] = denials // len(DENIALS) + (1 if i < denials % len(DENIALS) else 0)
    return counts


def uncounted(planned: Planned) -> Planned:
    """What a server that counts no sessions answers: it admits a second session of anybody."""
    if planned.kind != "session_limit":
        return planned
    return dataclasses.replace(planned, expect_status=200, expect_reason=None)


def write_pool(plan: Plan, path: Path) -> Path:
    """Write the pool for wrk's Lua script: raw requests separated by NUL bytes."""
    path.write_bytes(SEPARATOR.join(p.raw for p in plan.pool))
    return path


def _split_holders(
    data: DataSet, rng: random.Random, n_open: int, n_fresh: int
) -> tuple[list[Subscriber], list[Subscriber]]:
    """Token holders with a session to refresh, and others that open their first one.

    Every single-screen holder gets an open session, so that the pool can ask for
    a second one and expect ``session_limit``.
    """
    holders = data.holders()
    single = [s for s in holders if s.max_sessions == 1]
    others = [s for s in holders if s.max_sessions != 1]
    rng.shuffle(others)
    take = n_open - len(single)
    if take < 0 or take + n_fresh > len(others):
        raise ValueError(
            f"{len(holders)} token holders cannot give {n_open} open and {n_fresh} new "
            "sessions; use a smaller pool or more tokens"
        )
    return single + others[:take], others[take : take + n_fresh]


def _denials(maker: _Maker, data: DataSet, opened: list[Subscriber], counts: dict[str, int]) -> list[Planned]:
    single = [s for s in opened if s.max_sessions == 1]
    if not single and counts["session_limit"]:
        raise ValueError("the data set has no single-screen token holder to exceed a limit")
    out = [maker.session(maker.rng.choice(opened), "bad_token") for _ in range(counts["bad_token"])]
    out += [
        maker.session(maker.rng.choice(opened), "channel_not_in_packages")
        for _ in range(counts["channel_not_in_packages"])
    ]
    out += [maker.session(single[i % len(single)], "session_limit") for i in range(counts["session_limit"])]
    return out


class _Maker:
    """Builds Flussonic's query strings for sessions of the data set's subscribers."""

    def __init__(self, data: DataSet, rng: random.Random) -> None:
        self.data = data
        self.rng = rng
        self.foreign = TokenCodec(FOREIGN_SECRETS)
        self.names = [name for _, name in data.channels]

    def session(self, subscriber: Subscriber, kind: str) -> Planned:
        """A ``new_session`` of a new session id; ``kind`` says what answer it gets."""
        assert subscriber.token is not None
        token = subscriber.token
        entitled = sorted(self.data.entitled(subscriber))
        channel = self.names[self.rng.choice(entitled)]
        if kind == "bad_token":
            token = self.foreign.sign(subscriber.id, self.data.portal_id, 1)
        elif kind == "channel_not_in_packages":
            channel = self.names[self._outside(set(entitled))]
        session_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        params = self._common(channel, session_id, token, "new_session", 1)
        ok = kind in ("open", "new_session")
        return Planned(
            kind,
            _request(params),
            session_id,
            subscriber.id,
            channel,
            200 if ok else 403,
            None if ok else kind,
        )

    def refresh(self, opened: Planned, subscriber: Subscriber) -> Planned:
        """The ``update_session`` of the session that ``opened`` started."""
        assert subscriber.token is not None
        number = self.rng.randint(2, 40)
        params = self._common(opened.channel, opened.session_id, subscriber.token, "update_session", number)
        duration = (number - 1) * 180
        params += [("duration", str(duration)), ("bytes", str(duration * 625_000))]
        return Planned(
            "update_session",
            _request(params),
            opened.session_id,
            opened.subscriber_id,
            opened.channel,
            200,
            None,
        )

    def _outside(self, entitled: set[int]) -> int:
        while True:
            candidate = self.rng.randrange(len(self.names))
            if candidate not in entitled:
                return candidate

    def _common(
        self, channel: str, session_id: str, token: str, request_type: str, number: int
    ) -> list[tuple[str, str]]:
        rng = self.rng
        return [
            ("name", channel),
            ("proto", rng.choice(("hls", "hls", "dash", "tshttp"))),
            ("ip", f"203.0.113.{rng.randint(1, 254)}"),
            ("request_type", request_type),
            ("request_number", str(number)),
            ("session_id", session_id),
            ("stream_clients", str(rng.randint(1, 400))),
            ("total_clients", str(rng.randint(400, 9000))),
            ("token", token),
            ("user_agent", rng.choice(_USER_AGENTS)),
            ("qs", "token=" + token),
        ]


def _request(params: list[tuple[str, str]]) -> bytes:
    # yarl quotes in C: urllib's urlencode would take most of the plan's build time.
    target = URL.build(path="/auth", query=params).raw_path_qs
    return (f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Flussonic/23.10\r\n\r\n").encode(
        "ascii"
    )

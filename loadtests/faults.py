"""Viewers zapping through gateways while something breaks, and what they saw.

Used by the fault tests (``tests/authgate/test_failover.py``, which
``make bench-redis-faults`` runs to print their figures) and by ``make chaos``
(:mod:`loadtests.chaos`).

Each device of a subscriber opens a session (``new_session`` at a random gateway),
re-checks it a few times (``update_session``, each at a random gateway), closes it
(``play_closed``) and opens another.  Every answer is judged as it arrives:

* an admission (``200`` to ``new_session``) while the subscriber's other devices
  already hold its limit is **over the limit** — a device holds a session from its
  ``200`` until it sends the close (before the close reaches any gateway), so the
  count is never more than what Redis counts;
* a ``200`` for a subscriber revoked more than a second ago is **allowed revoked**;
* a refusal of a held session's re-check, or a denial other than ``session_limit``
  of an entitled subscriber, is **refused wrongly**;
* a ``5xx`` is recorded with its time (a ``503`` is "cannot decide", not wrong);
* a ``play_closed`` the gateway acknowledged (``200``, accepted) is kept: its row
  must be closed in PostgreSQL afterwards, or the event was lost; a close answered
  ``503`` is sent again, as Flussonic does.

Latencies of every answer (checks and event deliveries) are kept for percentiles.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

REVOKE_GRACE = 1.0
# How often, and how far apart, a close answered 503 is sent again (as Flussonic does).
EVENT_RESENDS = 20
EVENT_RESEND_DELAY = 0.25


@dataclass(frozen=True)
class Viewer:
    """A subscriber as the viewers need it: id (for the tally), token, session limit."""

    id: int
    text_id: str
    token: str
    limit: int


@dataclass
class Tally:
    statuses: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    unavailable: list[float] = field(default_factory=list)  # monotonic times of 5xx answers
    other_5xx: list[tuple[float, int]] = field(default_factory=list)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (when, seconds)
    admitted: list[str] = field(default_factory=list)
    # Sessions whose play_closed a gateway acknowledged (200, accepted): their rows must close.
    closed: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    events_resent: int = 0  # closes answered 503 and sent again

    def percentile(self, share: float, since: float = 0.0, until: float = float("inf")) -> float:
        chosen = sorted(s for at, s in self.latencies if since <= at <= until)
        if not chosen:
            return 0.0
        return chosen[min(len(chosen) - 1, int(share * len(chosen)))]

    def unavailable_window(self) -> float:
        """Seconds from the first 503 to the last (0 when none)."""
        return max(self.unavailable) - min(self.unavailable) if self.unavailable else 0.0

    def summary(self) -> str:
        return (
            f"{sum(self.statuses.values())} answers {dict(self.statuses)}; wrong {len(self.wrong)}; "
            f"503 {len(self.unavailable)} over {self.unavailable_window():.2f} s; other 5xx "
            f"{len(self.other_5xx)}; closes resent {self.events_resent}; "
            f"p99 {self.percentile(0.99) * 1000:.1f} ms"
        )


class Viewers:
    """Devices of ``subscribers`` (``devices`` each) watching ``channel`` through ``gateways``."""

    def __init__(
        self,
        gateways: list[str],
        subscribers: list[Viewer],
        *,
        devices: int = 2,
        channel: str = "sport",
        refreshes: tuple[int, int] = (2, 6),
        pause: tuple[float, float] = (0.05, 0.25),
    ) -> None:
        self.gateways = gateways
        self.subscribers = subscribers
        self.devices = devices
        self.channel = channel
        self.refreshes = refreshes
        self.pause = pause
        self.tally = Tally()
        self.held: dict[int, set[str]] = {sub.id: set() for sub in subscribers}
        self.revoked: dict[int, float] = {}
        self.revoking_ids: set[int] = set()
        self._stop = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------ running

    async def run(self, seconds: float) -> Tally:
        """Watch for ``seconds`` (start it as a task to break things meanwhile)."""
        timeout = aiohttp.ClientTimeout(total=10)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            self._session = session
            loops = [
                asyncio.create_task(self._device(sub, sub.limit))
                for sub in self.subscribers
                for _ in range(self.devices)
            ]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), seconds)
            self._stop.set()
            await asyncio.gather(*loops)
        return self.tally

    def stop(self) -> None:
        """End :meth:`run` before its time (each device closes the session it holds)."""
        self._stop.set()

    def revoking(self, sub: Viewer) -> None:
        """Note that ``sub`` is losing the channel: denials are right from now on."""
        self.revoking_ids.add(sub.id)

    def revoke(self, sub: Viewer) -> None:
        """Note that ``sub`` has lost the channel (the change committed): allows are wrong a second later."""
        self.revoked[sub.id] = time.monotonic()

    async def _device(self, sub: Viewer, limit: int) -> None:
        while not self._stop.is_set():
            try:
                await self._watch_once(sub, limit)
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.tally.failures.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.1)

    async def _watch_once(self, sub: Viewer, limit: int) -> None:
        session = secrets.token_hex(8)
        status, reason = await self._auth(sub, session, "new_session")
        if status != 200:
            self._judge_refusal(sub, status, reason, held=False)
            await asyncio.sleep(random.uniform(*self.pause))
            return
        if len(self.held[sub.id]) >= limit:
            self.tally.wrong.append(
                f"over the limit: {sub.text_id} holds {sorted(self.held[sub.id])} + {session}"
            )
        self.held[sub.id].add(session)
        self.tally.admitted.append(session)
        try:
            for _ in range(random.randint(*self.refreshes)):
                await asyncio.sleep(random.uniform(*self.pause))
                status, reason = await self._auth(sub, session, "update_session")
                if status != 200:
                    self._judge_refusal(sub, status, reason, held=True)
                    if status < 500:
                        return
                if self._stop.is_set():
                    break
        finally:
            self.held[sub.id].discard(session)
        await self._close(sub, session)

    def _judge_refusal(self, sub: Viewer, status: int, reason: str | None, held: bool) -> None:
        if status >= 500:
            return
        revoked = sub.id in self.revoking_ids
        if reason == "session_limit" and not held:
            return
        if not revoked:
            kind = "a held session refused" if held else "refused wrongly"
            self.tally.wrong.append(f"{kind}: {sub.text_id} {status} {reason}")

    # ------------------------------------------------------------ requests

    async def _auth(self, sub: Viewer, session: str, request_type: str) -> tuple[int, str | None]:
        gateway = random.choice(self.gateways)
        params = {
            "name": self.channel,
            "proto": "hls",
            "ip": "10.0.0.9",
            "request_type": request_type,
            "request_number": "1",
            "session_id": session,
            "stream_clients": "1",
            "total_clients": "1",
            "token": sub.token,
        }
        assert self._session is not None
        started = time.monotonic()
        async with self._session.get(gateway + "/auth", params=params) as response:
            body = await response.read()
            status = response.status
        now = time.monotonic()
        self.tally.latencies.append((now, now - started))
        self.tally.statuses[f"{request_type} {status}"] += 1
        reason = _reason(body) if status != 200 else None
        if status == 200 and sub.id in self.revoked and now - self.revoked[sub.id] > REVOKE_GRACE:
            self.tally.wrong.append(
                f"allowed revoked: {sub.text_id} {now - self.revoked[sub.id]:.2f} s after"
            )
        if status == 503:
            self.tally.unavailable.append(now)
        elif status >= 500:
            self.tally.other_5xx.append((now, status))
        return status, reason

    async def _close(self, sub: Viewer, session: str) -> None:
        event = [{"event": "play_closed", "id": session, "media": self.channel, "token": sub.token}]
        assert self._session is not None
        status = 0
        for _ in range(EVENT_RESENDS):
            gateway = random.choice(self.gateways)
            started = time.monotonic()
            async with self._session.post(gateway + "/events", json=event) as response:
                body = await response.read()
                status = response.status
            now = time.monotonic()
            self.tally.latencies.append((now, now - started))
            self.tally.statuses[f"play_closed {status}"] += 1
            if status != 503:
                break
            # Flussonic sends a batch again until it is answered 2xx: a 503 says the
            # gateway could not find the session now (Redis away, its row not yet written).
            self.tally.events_resent += 1
            await asyncio.sleep(EVENT_RESEND_DELAY)
        if status >= 500:
            self.tally.other_5xx.append((time.monotonic(), status))
        elif status == 200 and _accepted(body):
            self.tally.closed.append(session)


def _accepted(body: bytes) -> bool:
    try:
        decoded: Any = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return False
    return isinstance(decoded, dict) and decoded.get("accepted") == 1


def _reason(body: bytes) -> str | None:
    try:
        decoded: Any = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    return decoded.get("error") if isinstance(decoded, dict) else None


async def revoke_now_and_then(
    revoke: Callable[[Viewer], Awaitable[None]], viewers: Viewers, victims: list[Viewer], every: float
) -> None:
    """Take the channel away from one victim every ``every`` seconds (``revoke`` commits it)."""
    for sub in victims:
        await asyncio.sleep(every)
        viewers.revoking(sub)
        await revoke(sub)
        viewers.revoke(sub)

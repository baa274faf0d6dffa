"""Send planned requests once and compare each answer with the one expected.

A small HTTP/1.1 client on raw sockets (httptools parses the answers), several
keep-alive connections in parallel, so that a pool of 20,000 requests is checked
in seconds.  The check runs before wrk measures, which also warms the server's
caches exactly as a long-running server's would be.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import httptools
import msgspec

from .request_mix import Planned

# (status, reason) of an answer; status 0 = no answer (connection closed or broken).
Answer = tuple[int, str | None]


class _Reader:
    """Collects one response's status and body from httptools callbacks."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.body = bytearray()
        self.done = False

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


async def send_all(
    host: str, port: int, requests: Sequence[bytes], connections: int = 32, wait: float = 10.0
) -> list[Answer]:
    """Answers to ``requests`` in their order, sent over ``connections`` in parallel.

    A request unanswered within ``wait`` seconds counts as status 0.
    """
    answers: list[Answer] = [(0, None)] * len(requests)
    queue = list(enumerate(requests))
    queue.reverse()
    workers = [_worker(host, port, queue, answers, wait) for _ in range(connections)]
    await asyncio.gather(*workers)
    return answers


async def _worker(
    host: str, port: int, queue: list[tuple[int, bytes]], answers: list[Answer], wait: float
) -> None:
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while queue:
        index, raw = queue.pop()
        try:
            if streams is None:
                streams = await asyncio.wait_for(asyncio.open_connection(host, port), wait)
            answers[index], keep = await asyncio.wait_for(_exchange(*streams, raw), wait)
        except (OSError, TimeoutError, httptools.HttpParserError):
            keep = False
        if not keep and streams is not None:
            streams[1].close()
            streams = None
    if streams is not None:
        streams[1].close()


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes
) -> tuple[Answer, bool]:
    writer.write(raw)
    response = _Reader()
    while not response.done:
        chunk = await reader.read(65536)
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        response.parser.feed_data(chunk)
    status = response.parser.get_status_code()
    return (status, deny_reason(bytes(response.body))), response.parser.should_keep_alive()


def deny_reason(body: str | bytes) -> str | None:
    """The ``error`` of a deny answer's JSON body, or None."""
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    return decoded.get("error") if isinstance(decoded, dict) else None


@dataclass(frozen=True, slots=True)
class Check:
    """What a server answered, by kind of request, and how many answers were wrong."""

    answers: dict[str, Counter[Answer]]
    wrong: dict[str, int]

    @property
    def total_wrong(self) -> int:
        return sum(self.wrong.values())


def compare(planned: Sequence[Planned], answers: Sequence[Answer]) -> Check:
    """Tally answers by request kind; an answer is wrong when status or reason differ."""
    tally: dict[str, Counter[Answer]] = {}
    wrong: Counter[str] = Counter()
    for plan, answer in zip(planned, answers, strict=True):
        tally.setdefault(plan.kind, Counter())[answer] += 1
        if answer != (plan.expect_status, plan.expect_reason):
            wrong[plan.kind] += 1
    return Check(tally, {kind: wrong[kind] for kind in tally})

"""A small HTTP/1.1 server on ``asyncio.Protocol`` and ``httptools``, built for ``/auth``.

aiohttp's request machinery costs more per request than the whole decision, so the
gateway parses HTTP itself with ``httptools`` (llhttp): keep-alive and pipelining
(answers leave in request order even when some wait for I/O), ``Content-Length``
and chunked bodies, ``Expect: 100-continue``, limits on header and body size (431,
413), a deadline for a request to arrive in full (408) and for an idle connection,
and ``400`` then close for anything malformed.  Answers are pre-encoded bytes.

Routes: ``GET /auth?…`` and ``POST /auth`` (JSON body, docs/authgate.md),
``POST /events`` (§2), ``GET /health``, ``GET /metrics``.  ``/auth`` and
``/events`` answer only trusted callers (:mod:`authgate.trust`): a connection is
judged by its peer address once, when it opens; one from elsewhere must carry the
deployment's secret.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable
from functools import partial
from typing import Protocol, cast
from urllib.parse import quote_from_bytes

import httptools
import msgspec

from . import responses
from .decision import Admission
from .metrics import Metrics
from .query import Fields, field, parse_query
from .trust import SECRET_HEADER, SECRET_PARAMETER, Trust

log = logging.getLogger("authgate.server")

MAX_PIPELINE = 64
LINGER = 2.0
_perf = time.perf_counter
_now = time.time


class App(Protocol):
    """What the server serves (``authgate.worker.Worker``)."""

    metrics: Metrics

    def decide(self, fields: Fields, now: float) -> bytes | Admission | None: ...
    def admit(self, admission: Admission) -> asyncio.Future[bytes]: ...
    def bad_request(self, message: str) -> bytes: ...
    def check(self, fields: Fields, now: float) -> Awaitable[bytes]: ...
    def ingest(self, body: bytes) -> Awaitable[bytes]: ...
    def health(self) -> bytes: ...
    def untrusted(self, path: bytes) -> bytes: ...
    def metrics_text(self) -> bytes: ...


class Limits:
    __slots__ = ("idle_timeout", "max_body", "max_header", "request_timeout")

    def __init__(self, max_header: int, max_body: int, idle_timeout: float, request_timeout: float) -> None:
        self.max_header = max_header
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout


class Server:
    """What the connections of one process share: the app, the limits, a coarse clock."""

    def __init__(self, app: App, limits: Limits, trust: Trust) -> None:
        self.app = app
        self.limits = limits
        self.trust = trust
        self.connections: set[HttpConnection] = set()
        # Seconds since start, advanced by `run_clock`: cheaper than a timer per request.
        self.tick = 0.0

    def protocol(self) -> HttpConnection:
        return HttpConnection(self)

    async def run_clock(self, step: float = 0.5) -> None:
        started = time.monotonic()
        while True:
            await asyncio.sleep(step)
            self.tick = time.monotonic() - started
            for connection in list(self.connections):
                connection.check_deadlines(self.tick)

    def close_idle(self) -> None:
        """On shutdown: close connections between requests; others close after their answer."""
        for connection in list(self.connections):
            connection.close_when_done()


class HttpConnection(asyncio.Protocol):
    __slots__ = (
        "app",
        "body",
        "body_size",
        "closing",
        "expect_continue",
        "failure",
        "header_size",
        "keep_alive",
        "last_active",
        "limits",
        "lingering",
        "parser",
        "paused",
        "queue",
        "request_started",
        "secret",
        "server",
        "transport",
        "trusted",
        "url",
        "writing_paused",
    )

    def __init__(self, server: Server) -> None:
        self.server = server
        self.app = server.app
        self.limits = server.limits
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: deque[bytes | asyncio.Task[bytes]] = deque()
        self.url = b""
        self.body: list[bytes] = []
        self.body_size = 0
        self.header_size = 0
        self.expect_continue = False
        self.failure: bytes | None = None
        self.request_started: float | None = None
        self.last_active = server.tick
        self.closing = False
        self.keep_alive = True
        self.lingering = False
        self.paused = False
        self.writing_paused = False
        # Whether /auth and /events may be answered without the secret: the peer is
        # in an allowed network (judged when the connection opens).
        self.trusted = False
        self.secret: bytes | None = None

    # ------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections.add(self)
        self.trusted = self.server.trust.allows_peer(transport.get_extra_info("peername"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None
        # The parser holds this connection's bound callbacks: without this the pair
        # is a reference cycle that only the garbage collector frees, and a burst of
        # short connections then costs collections of 100 ms and more.
        del self.parser

    def pause_writing(self) -> None:
        self.writing_paused = True
        self._pause()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._maybe_resume()

    def data_received(self, data: bytes) -> None:
        self.last_active = self.server.tick
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The request was answered as plain HTTP/1.1; what follows it would be
            # another protocol, which the gateway does not speak.
            self._close_after_queue()
        except httptools.HttpParserError:
            self._fail(self.failure or responses.BAD_REQUEST, _status(self.failure))

    def eof_received(self) -> bool | None:
        # A client that half-closes after its request still gets its answers.
        self.close_when_done()
        return True

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        self.url = b""
        if self.body:
            self.body = []
            self.body_size = 0
        self.header_size = 0
        self.expect_continue = False
        self.secret = None
        self.request_started = self.server.tick

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.header_size += len(url)
        if self.header_size > self.limits.max_header:
            self._refuse(responses.HEADERS_TOO_LARGE)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_size += len(name) + len(value) + 4
        if self.header_size > self.limits.max_header:
            self._refuse(responses.HEADERS_TOO_LARGE)
        # Most headers are neither: compare lengths before lower-casing anything.
        size = len(name)
        if size == 14 and name.lower() == b"content-length":
            if not value.isdigit() or int(value) > self.limits.max_body:
                self._refuse(responses.TOO_LARGE if value.isdigit() else responses.BAD_REQUEST)
        elif size == 6 and name.lower() == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True
        elif size == 15 and name.lower() == SECRET_HEADER:
            self.secret = value

    def on_headers_complete(self) -> None:
        if self.expect_continue and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > self.limits.max_body:
            self._refuse(responses.TOO_LARGE)
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.request_started = None
        parser = self.parser
        self.keep_alive = parser.should_keep_alive() and not parser.should_upgrade()
        try:
            self._route(parser.get_method(), self.url)
        except Exception:
            log.exception("request failed")
            self.app.metrics.unavailable += 1
            self._respond(responses.UNAVAILABLE)
        if not self.keep_alive:
            self._close_after_queue()
        elif len(self.queue) > MAX_PIPELINE:
            self._pause()

    # ------------------------------------------------------------ routing

    def _route(self, method: bytes, url: bytes) -> None:
        path, _, query = url.partition(b"?")
        if path == b"/auth":
            if method == b"GET":
                fields = parse_query(query)
                if self.trusted or self._vouched(fields):
                    return self._auth(fields)
                return self._untrusted(path)
            if method == b"POST":
                if self.trusted or self._vouched(parse_query(query)):
                    return self._auth(_json_fields(query, b"".join(self.body)))
                return self._untrusted(path)
        elif path == b"/events":
            if method == b"POST":
                if self.trusted or self._vouched(parse_query(query)):
                    return self._respond(asyncio.ensure_future(self.app.ingest(b"".join(self.body))))
                return self._untrusted(path)
        elif path == b"/health":
            if method == b"GET":
                return self._respond(self.app.health())
        elif path == b"/metrics":
            if method == b"GET":
                return self._respond(self.app.metrics_text())
        else:
            return self._error(responses.NOT_FOUND, 404)
        return self._error(responses.METHOD_NOT_ALLOWED, 405)

    def _vouched(self, fields: Fields) -> bool:
        """Whether this request carries the secret.

        Asked of every request, not once per connection: a proxy in front of the
        gateway may carry several clients' requests on one kept-alive connection.
        """
        offered = self.secret if self.secret is not None else field(fields, SECRET_PARAMETER)
        return self.server.trust.carries_secret(offered)

    def _untrusted(self, path: bytes) -> None:
        self._respond(self.app.untrusted(path))

    def _auth(self, fields: Fields | None) -> None:
        app = self.app
        metrics = app.metrics
        metrics.checks += 1
        started = _perf()
        if fields is None:
            self._respond(app.bad_request("the body is not a JSON object"))
            return
        now = _now()
        answer = app.decide(fields, now)
        if isinstance(answer, bytes):
            metrics.observe_latency(_perf() - started)
            self._respond(answer)
            return
        later = app.admit(answer) if answer is not None else asyncio.ensure_future(app.check(fields, now))
        later.add_done_callback(partial(_observe, started, metrics))
        self._respond(later)

    # ------------------------------------------------------------ answers, in order

    def _respond(self, answer: bytes | asyncio.Task[bytes] | asyncio.Future[bytes]) -> None:
        if not self.keep_alive:
            answer = _closing(answer)
        if type(answer) is bytes and not self.queue:
            if self.transport is not None:
                self.transport.write(answer)
            return
        self.queue.append(answer)  # type: ignore[arg-type]
        if type(answer) is not bytes:
            answer.add_done_callback(self._drain)  # type: ignore[union-attr]

    def _drain(self, _: object = None) -> None:
        queue = self.queue
        while queue:
            head = queue[0]
            if type(head) is not bytes:
                if not head.done():  # type: ignore[union-attr]
                    return
                head = _result(head, self.app.metrics)  # type: ignore[arg-type]
            queue.popleft()
            if self.transport is not None:
                self.transport.write(head)
        if self.closing:
            self._finish()
        else:
            self._maybe_resume()

    def _error(self, response: bytes, status: int) -> None:
        self.app.metrics.http_error(status)
        self._respond(response)

    def _refuse(self, response: bytes) -> None:
        """Stop parsing this request: its answer is ``response`` and the connection closes."""
        self.failure = response
        raise _Refused

    def _fail(self, response: bytes, status: int) -> None:
        self.app.metrics.http_error(status)
        self.request_started = None
        self.keep_alive = False
        self.lingering = True
        self._respond(response)
        self._close_after_queue()

    def _close_after_queue(self) -> None:
        self.closing = True
        self._pause()
        if not self.queue:
            self._finish()

    def close_when_done(self) -> None:
        if self.request_started is None:
            self._close_after_queue()
        else:
            self.closing = True

    def _finish(self) -> None:
        transport = self.transport
        if transport is None:
            return
        if self.lingering and transport.can_write_eof():
            # After refusing a request the client may still be sending it: half-close,
            # drain what arrives for a moment, then close, so that it reads the answer
            # instead of a reset.
            self.lingering = False
            transport.write_eof()
            self._resume_for_draining()
            asyncio.get_running_loop().call_later(LINGER, transport.close)
            return
        transport.close()

    def _resume_for_draining(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def _pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def _maybe_resume(self) -> None:
        if not self.paused or self.closing or self.writing_paused:
            return
        if len(self.queue) <= MAX_PIPELINE // 2:
            self.paused = False
            if self.transport is not None:
                self.transport.resume_reading()

    def check_deadlines(self, tick: float) -> None:
        if self.request_started is not None:
            if tick - self.request_started >= self.limits.request_timeout:
                self._fail(responses.TIMEOUT, 408)
        elif not self.queue and tick - self.last_active >= self.limits.idle_timeout:
            self._finish()


class _Refused(Exception):
    pass


def _closing(answer: bytes | asyncio.Future[bytes]) -> bytes | asyncio.Future[bytes]:
    """``answer`` saying ``Connection: close`` (the connection ends after it)."""
    if type(answer) is bytes:
        return responses.with_close(answer)

    async def wrapped() -> bytes:
        return responses.with_close(await answer)  # type: ignore[misc]

    return asyncio.ensure_future(wrapped())


def _status(response: bytes | None) -> int:
    return int(response[9:12]) if response else 400


def _result(task: asyncio.Future[bytes], metrics: Metrics) -> bytes:
    try:
        return task.result()
    except BaseException:
        # Nothing a client sends may produce a 500: an internal failure reads as
        # "backend unavailable", which Flussonic handles by its own policy.
        log.exception("request failed")
        metrics.unavailable += 1
        return responses.UNAVAILABLE


def _observe(started: float, metrics: Metrics, _: object) -> None:
    metrics.observe_latency(_perf() - started)


def _json_fields(query: bytes, body: bytes) -> Fields | None:
    """``POST /auth``: the JSON object's fields, as the query string would carry them."""
    fields = parse_query(query) if query else {}
    try:
        data = msgspec.json.decode(body) if body else {}
    except (msgspec.DecodeError, RecursionError):
        # RecursionError: nesting deeper than the decoder's stack (``[`` × 50,000).
        return None
    if not isinstance(data, dict):
        return None
    for key, value in data.items():
        if value is None or isinstance(value, dict | list):
            continue
        raw = str(value).lower() if isinstance(value, bool) else str(value)
        fields[key.encode()] = quote_from_bytes(raw.encode(), safe="").encode()
    return fields

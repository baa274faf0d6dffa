"""Running a service process: uvloop, signals, a clean stop.

``AppRunner`` (re-exported) comes from :mod:`catena.private_aiohttp`, the one place
that touches aiohttp's private parts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import uvloop
from aiohttp import web

from .errors import CatenaError
from .private_aiohttp import AppRunner as AppRunner

log = logging.getLogger("catena.service")


async def wait_for_stop_signal() -> None:
    """Return when SIGTERM or SIGINT arrives."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


async def serve_app(
    app: web.Application,
    host: str,
    port: int,
    handler_class: type[web.RequestHandler] = web.RequestHandler,
) -> None:
    """Serve ``app`` until SIGTERM/SIGINT, then run its cleanup (flushes, closes pools)."""
    if issubclass(handler_class, GuardedRequestHandler):
        handler_class = handler_class.for_app(app)
    runner = AppRunner(app, handler_class=handler_class, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=True).start()
        await wait_for_stop_signal()
    finally:
        await runner.cleanup()


def run_app(
    app: web.Application,
    host: str,
    port: int,
    handler_class: type[web.RequestHandler] = web.RequestHandler,
) -> None:
    """Run ``app`` on uvloop in this process until it is told to stop."""
    uvloop.run(serve_app(app, host, port, handler_class))


# ---------------------------------------------------------------- slow and idle clients


class RequestTimeout(CatenaError, TimeoutError):
    """The request's body did not arrive in time.

    A ``TimeoutError`` too: after the 408, aiohttp drains what is left of the body
    for a moment ("lingering") and treats a timeout there as the end of it.
    """

    status = 408
    code = "request_timeout"


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a request may take to arrive, and how many idle strangers an address may hold.

    ``header_timeout``: seconds from a request's first byte (from the connection's
    opening for its first request) until its headers are complete; ``body_timeout``:
    seconds from then until its body is; ``unauthenticated``: connections per client
    address that have not carried an authenticated request; ``exempt``: addresses
    without that cap (reverse proxies, whose connections carry many clients).
    """

    header_timeout: float
    body_timeout: float
    unauthenticated: int
    exempt: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


LIMITS = web.AppKey("connection_limits", ConnectionLimits)
# Idle keep-alive connections are closed after this long (aiohttp's own default is an hour).
KEEPALIVE_TIMEOUT = 75.0
_REFUSAL_LINGER = 1.0


class ConnectionGuard:
    """Counts each address's connections that have not authenticated; shared by a server's handlers."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._open: dict[str, int] = {}

    def exempt(self, address: str) -> bool:
        try:
            peer = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(peer in network for network in self.limits.exempt)

    def admit(self, address: str) -> bool:
        count = self._open.get(address, 0)
        if count >= self.limits.unauthenticated:
            return False
        self._open[address] = count + 1
        return True

    def release(self, address: str) -> None:
        count = self._open.get(address, 0) - 1
        if count > 0:
            self._open[address] = count
        else:
            self._open.pop(address, None)


def _raw_answer(status: int, reason: str, error: str, message: str, extra: str = "") -> bytes:
    """A whole HTTP response, for answering before any request was parsed."""
    body = CatenaError(message, code=error).to_json()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode() + body


class GuardedRequestHandler(web.RequestHandler):
    """aiohttp's connection handler with header and body deadlines and a per-address cap.

    The connection's requests report to it through :func:`guard_middleware` (when
    one starts and ends) and :func:`authenticated` (when one proved who sent it).
    Serve with :meth:`for_app`'s class: it carries the server's connection counts.
    """

    guard: ClassVar[ConnectionGuard | None] = None

    @classmethod
    def for_app(cls, app: web.Application) -> type[GuardedRequestHandler]:
        """This handler with ``app``'s :class:`ConnectionLimits`, counted for one server."""
        limits = app.get(LIMITS)
        if limits is None:
            return cls
        return type(cls.__name__, (cls,), {"guard": ConnectionGuard(limits)})

    def __init__(self, manager: web.Server, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", KEEPALIVE_TIMEOUT)
        super().__init__(manager, **kwargs)
        self._guard = type(self).guard
        self._address = ""
        self._counted = False
        self._refused = False
        self._awaiting_headers = True
        self._payload: Any = None
        self._more_data = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._guard is None:
            return
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if isinstance(peer, tuple) else ""
        if not self._guard.exempt(self._address):
            if not self._guard.admit(self._address):
                self._refuse(cast(asyncio.Transport, transport))
                return
            self._counted = True
        self._start_header_deadline()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_timers()
        self._uncount()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # read and dropped until the connection closes
        if self._awaiting_headers:
            if self._header_timer is None:
                self._start_header_deadline()
        elif self._payload is not None and self._payload.is_eof():
            self._more_data = True  # the next request begins while this one is answered
        super().data_received(data)

    # -- reported by the middleware

    def request_started(self, request: web.BaseRequest) -> None:
        self._awaiting_headers = False
        self._more_data = False
        self._cancel_timer("_header_timer")
        self._payload = request.content
        if self._guard is not None and not request.content.is_eof():
            timeout = self._guard.limits.body_timeout
            self._body_timer = asyncio.get_running_loop().call_later(
                timeout, self._body_late, request.content, timeout
            )

    def request_finished(self) -> None:
        self._cancel_timer("_body_timer")
        self._awaiting_headers = True
        self._payload = None
        if self._more_data:
            self._start_header_deadline()

    def authenticated(self) -> None:
        self._uncount()

    # -- deadlines

    def _start_header_deadline(self) -> None:
        if self._guard is not None and self._header_timer is None:
            timeout = self._guard.limits.header_timeout
            self._header_timer = asyncio.get_running_loop().call_later(timeout, self._headers_late, timeout)

    def _headers_late(self, timeout: float) -> None:
        self._header_timer = None
        if not self._awaiting_headers or self.transport is None:
            return
        log.debug("request headers not received in time", extra={"remote": self._address})
        message = f"the request headers did not arrive within {timeout:g} s"
        self.transport.write(_raw_answer(408, "Request Timeout", RequestTimeout.code, message))
        self.force_close()

    def _body_late(self, payload: Any, timeout: float) -> None:
        self._body_timer = None
        if not payload.is_eof():
            log.debug("request body not received in time", extra={"remote": self._address})
            payload.set_exception(RequestTimeout(f"the request body did not arrive within {timeout:g} s"))

    def _refuse(self, transport: asyncio.Transport) -> None:
        self._refused = True
        log.debug("too many unauthenticated connections", extra={"remote": self._address})
        message = "too many connections from this address; try again in a few seconds"
        transport.write(
            _raw_answer(429, "Too Many Requests", "too_many_connections", message, "Retry-After: 10\r\n")
        )
        # Closing with the client's request unread would reset the connection before
        # it reads the answer: half-close, drop what comes, close a moment later.
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(_REFUSAL_LINGER, transport.close)

    def _cancel_timer(self, name: str) -> None:
        timer = getattr(self, name)
        if timer is not None:
            timer.cancel()
            setattr(self, name, None)

    def _cancel_timers(self) -> None:
        self._cancel_timer("_header_timer")
        self._cancel_timer("_body_timer")

    def _uncount(self) -> None:
        if self._counted and self._guard is not None:
            self._counted = False
            self._guard.release(self._address)


@web.middleware
async def guard_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Tells the connection's :class:`GuardedRequestHandler` when a request starts and ends."""
    protocol = request.protocol
    if not isinstance(protocol, GuardedRequestHandler):
        return await handler(request)
    protocol.request_started(request)
    try:
        return await handler(request)
    finally:
        protocol.request_finished()


def authenticated(request: web.BaseRequest) -> None:
    """The request proved who sent it: its connection no longer counts against the address."""
    protocol = request.protocol
    if isinstance(protocol, GuardedRequestHandler):
        protocol.authenticated()

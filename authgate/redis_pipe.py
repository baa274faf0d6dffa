"""One pipelined Redis connection whose replies are handed to callbacks as they arrive.

redis-py's asyncio client spends a task and several turns of the event loop on every
call; under load each turn is a millisecond or two, so a session waiting for its
admission waited ten.  The session script is the only Redis call on the request
path, so it has a connection of its own: hiredis packs each command, which is
written at once; hiredis parses the replies in ``data_received`` and each goes, in
order, to the callback of the command that asked — in the turn it arrives.

Everything else (probes, recovery, the entitlement map) stays on redis-py.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from catena import private_redis

log = logging.getLogger("authgate.redis_pipe")

Reply = Any  # bytes, int, a list of replies, or the exception that stands for the reply
Callback = Callable[[Reply], None]


class RedisPipe(asyncio.Protocol):
    """A Redis connection for :meth:`call`; reconnects on the next call after a loss."""

    def __init__(self, url: str, *, connect_timeout: float = 0.5, reply_timeout: float = 2.0) -> None:
        self._options: dict[str, Any] = private_redis.url_options(url)
        self._connect_timeout = connect_timeout
        self._reply_timeout = reply_timeout
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader(replyError=ResponseError)
        # Callbacks of the commands sent, oldest first, with when each was sent.
        self._waiting: deque[tuple[Callback, float]] = deque()
        self._connecting: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._transport is not None

    # ------------------------------------------------------------ commands

    def call(self, args: Sequence[Any], callback: Callback) -> None:
        """Send one command; ``callback`` gets its reply, or an exception if there is none."""
        transport = self._transport
        if transport is None:
            self.ensure_connected()
            callback(RedisConnectionError("the session connection to Redis is not open"))
            return
        transport.write(hiredis.pack_command(tuple(args)))
        self._waiting.append((callback, time.monotonic()))

    def expire(self) -> None:
        """Close the connection if a reply is overdue: every waiting command then fails."""
        if self._waiting and time.monotonic() - self._waiting[0][1] > self._reply_timeout:
            log.warning("Redis did not answer the session script in time; reconnecting")
            self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.abort()  # connection_lost fails what waits

    # ------------------------------------------------------------ connection

    def ensure_connected(self) -> None:
        """Start connecting unless connected or already connecting."""
        if self._transport is None and (self._connecting is None or self._connecting.done()):
            self._connecting = asyncio.ensure_future(self._connect())

    async def wait_connected(self) -> bool:
        """Wait for a connection attempt in progress (bounded by the connect timeout)."""
        if self._connecting is not None and not self._connecting.done():
            await asyncio.shield(self._connecting)
        return self.connected

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        options = self._options
        try:
            if "path" in options:
                opening = loop.create_unix_connection(lambda: self, options["path"])
            else:
                opening = loop.create_connection(
                    lambda: self,
                    options.get("host", "localhost"),
                    options.get("port", 6379),
                    ssl=_tls(options),
                )
            await asyncio.wait_for(opening, self._connect_timeout)
        except (OSError, TimeoutError) as exc:
            log.debug("cannot connect the session connection to Redis", extra={"error": str(exc)})
            return
        self._handshake()

    def _handshake(self) -> None:
        # Sent ahead of any command: a refusal closes the connection.
        options = self._options
        if options.get("password"):
            user = options.get("username")
            auth = ("AUTH", user, options["password"]) if user else ("AUTH", options["password"])
            self.call(auth, self._expect_ok)
        if options.get("db"):
            self.call(("SELECT", options["db"]), self._expect_ok)

    def _expect_ok(self, reply: Reply) -> None:
        if isinstance(reply, Exception):
            log.error("Redis refused the session connection", extra={"error": str(reply)})
            self.close()

    # ------------------------------------------------------------ protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._reader = hiredis.Reader(replyError=ResponseError)

    def data_received(self, data: bytes) -> None:
        reader, waiting = self._reader, self._waiting
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            if not waiting:
                log.error("a Redis reply nobody asked for; reconnecting")
                self.close()
                return
            callback, _ = waiting.popleft()
            _deliver(callback, reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        lost = RedisConnectionError(f"the session connection to Redis was lost: {exc or 'closed'}")
        waiting, self._waiting = self._waiting, deque()
        for callback, _ in waiting:
            _deliver(callback, lost)


def _deliver(callback: Callback, reply: Reply) -> None:
    # One failing callback (say, a future cancelled at shutdown) must not cost the
    # replies behind it their callbacks, nor the connection its state.
    try:
        callback(reply)
    except Exception:
        log.exception("a Redis reply's callback failed")


def _tls(options: dict[str, Any]) -> ssl.SSLContext | None:
    """The TLS context of a ``rediss://`` URL (its ``ssl_cert_reqs`` / ``ssl_ca_certs`` honoured)."""
    if not options["tls"]:
        return None
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    if str(options.get("ssl_cert_reqs", "required")).lower() in ("none", str(int(ssl.CERT_NONE))):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context

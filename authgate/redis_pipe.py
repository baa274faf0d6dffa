"""The gateway's own pipelined Redis connections: replies to callbacks as they arrive.

redis-py's asyncio client spends a task and several turns of the event loop on every
call; under load each turn is a millisecond or two, so a session waiting for its
admission waited ten.  Here hiredis packs each command, which is written at once,
and parses the replies in ``data_received``; each goes, in order, to the callback of
the command that asked — in the turn it arrives.

Every command has a deadline (``CATENA_AUTH_REDIS_TIMEOUT``, tens of milliseconds):
a server that does not answer in time (hung, stopped, partitioned) has its
connection closed, and every command waiting on it fails at once, so the gateway
switches to what it does without Redis instead of freezing.

Three ways to reach Redis, one interface (:class:`Pipe`):

* :class:`RedisPipe` — one connection to one server (``single`` mode);
* :class:`SentinelPipe` — one connection to the primary the sentinels name, looked
  up again on every reconnect, dropped when the primary changes or refuses writes;
* :class:`authgate.redis_cluster.ClusterPipe` — one connection per primary of a Redis Cluster, commands
  routed by hash slot, ``MOVED``/``ASK``/``TRYAGAIN`` honoured, the slot map read
  again when a node fails or a redirection says it changed.

A command may carry :data:`catena.redis.RUN_ID`: it is replaced by the ``run_id`` of
the server the connection reached (read once per connection), which lets a script
tell whether the counts it guards were rebuilt on this very server.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from catena.redis import RUN_ID, RedisTarget, tls_context, url_options

log = logging.getLogger("authgate.redis_pipe")

Reply = Any  # bytes, int, a list of replies, or the exception that stands for the reply
Callback = Callable[[Reply], None]
Address = tuple[str, int] | str  # host and port, or a Unix socket path

DEADLINE = 0.05
CONNECT_TIMEOUT = 0.5


class RedisTimeout(RedisConnectionError):
    """The server did not answer within the deadline; its connection was closed."""


class Unavailable(RedisConnectionError):
    """No connection serves this slot now."""


class Pipe(Protocol):
    """What the gateway asks of its Redis connections, whatever the mode."""

    clustered: bool

    @property
    def commands(self) -> int: ...

    @property
    def connected(self) -> bool: ...

    def call(self, args: Sequence[Any], callback: Callback, slot: int = 0) -> None: ...

    async def run(self, calls: Sequence[tuple[int, Sequence[Any]]]) -> list[Reply]: ...

    def probe_slots(self) -> list[int]: ...

    def ensure_connected(self) -> None: ...

    async def wait_connected(self) -> bool: ...

    async def check_topology(self) -> None: ...

    def close(self) -> None: ...


async def gather(pipe: Pipe, calls: Sequence[tuple[int, Sequence[Any]]]) -> list[Reply]:
    """Send every call at once; the replies, in order, when the last has come."""
    if not calls:
        return []
    done: asyncio.Future[list[Reply]] = asyncio.get_running_loop().create_future()
    replies: list[Reply] = [None] * len(calls)
    left = [len(calls)]

    def reply_to(index: int) -> Callback:
        def got(reply: Reply) -> None:
            replies[index] = reply
            left[0] -= 1
            if not left[0] and not done.done():
                done.set_result(replies)

        return got

    for index, (slot, args) in enumerate(calls):
        pipe.call(args, reply_to(index), slot)
    return await done


# ---------------------------------------------------------------- one connection


class NodeConnection(asyncio.Protocol):
    """One pipelined connection to one server; it reconnects when asked after a loss."""

    def __init__(
        self,
        address: Address,
        options: dict[str, Any],
        *,
        deadline: float = DEADLINE,
        connect_timeout: float = CONNECT_TIMEOUT,
        require_primary: bool = False,
        on_lost: Callable[[NodeConnection], None] | None = None,
    ) -> None:
        self.address = address
        self.options = options
        self.deadline = deadline
        self.connect_timeout = connect_timeout
        self.require_primary = require_primary
        self.on_lost = on_lost
        self.run_id = b""
        self.ready = False
        self.sent = 0
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader(replyError=ResponseError)
        # Callbacks of the commands sent, oldest first, with when each is due.
        self._waiting: deque[tuple[Callback, float]] = deque()
        self._connecting: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._overdue = False
        self._lost_reason = "closed"
        # A server that keeps not answering is reported once, until it answers again.
        self._quiet = False

    def __repr__(self) -> str:
        return f"<NodeConnection {self.address} ready={self.ready}>"

    # ------------------------------------------------------------ commands

    def send(self, args: Sequence[Any], callback: Callback) -> None:
        """Send one command; ``callback`` gets its reply, or an exception if there is none."""
        if not self.ready:
            self.ensure_connected()
            callback(RedisConnectionError(f"no connection to Redis at {self.address} yet"))
            return
        self._write(args, callback)

    def _write(self, args: Sequence[Any], callback: Callback) -> None:
        transport = self._transport
        assert transport is not None
        if RUN_ID in args:
            args = [self.run_id if a is RUN_ID else a for a in args]
        transport.write(hiredis.pack_command(tuple(args)))
        self.sent += 1
        loop = asyncio.get_running_loop()
        due = loop.time() + self.deadline
        self._waiting.append((callback, due))
        if self._timer is None:
            self._timer = loop.call_at(due, self._check_due)

    def _check_due(self) -> None:
        # Called when the oldest command falls due.  Before giving up, let the loop
        # poll its sockets once more: after a long turn of our own the reply may be
        # sitting there unread (timers run before I/O in a loop iteration).
        self._timer = None
        if not self._waiting:
            self._overdue = False
            return
        loop = asyncio.get_running_loop()
        due = self._waiting[0][1]
        if due > loop.time() and not self._overdue:
            self._timer = loop.call_at(due, self._check_due)
        elif not self._overdue:
            self._overdue = True
            self._timer = loop.call_later(0.001, self._check_due)
        else:
            self._overdue = False
            self._lost_reason = f"no answer within {self.deadline * 1000:.0f} ms"
            level = logging.DEBUG if self._quiet else logging.WARNING
            log.log(level, "Redis did not answer in time; closing", extra={"redis": str(self.address)})
            self._quiet = True
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
        """Wait for a connection attempt in progress (bounded by the timeouts)."""
        if self._connecting is not None and not self._connecting.done():
            await asyncio.shield(self._connecting)
        return self.ready

    async def address_now(self) -> Address:
        """Where to connect (a sentinel-found primary looks it up again)."""
        return self.address

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            address = await self.address_now()
            self.address = address
            if isinstance(address, str):
                opening = loop.create_unix_connection(lambda: self, address)
            else:
                opening = loop.create_connection(
                    lambda: self, address[0], address[1], ssl=tls_context(self.options)
                )
            await asyncio.wait_for(opening, self.connect_timeout)
        except (OSError, TimeoutError, RedisConnectionError) as exc:
            log.debug("cannot connect to Redis", extra={"redis": str(self.address), "error": str(exc)})
            return
        if not await self._handshake():
            self.close()

    async def _handshake(self) -> bool:
        """Credentials, database, and the server's ``run_id`` (and role, when it must be primary)."""
        commands: list[tuple[Any, ...]] = []
        if self.options.get("password"):
            user = self.options.get("username")
            password = self.options["password"]
            commands.append(("AUTH", user, password) if user else ("AUTH", password))
        if self.options.get("db"):
            commands.append(("SELECT", self.options["db"]))
        commands.append(("INFO", "server"))
        if self.require_primary:
            commands.append(("INFO", "replication"))
        replies = await self._exchange(commands)
        if replies is None:
            return False  # no answer in time: a hung server, or one going away
        if any(isinstance(r, RedisConnectionError) for r in replies):
            return False
        refusals = [str(r) for r in replies if isinstance(r, Exception)]
        if refusals:
            log.error("Redis refused the gateway's connection", extra={"error": "; ".join(refusals)})
            return False
        info = b"\n".join(r for r in replies if isinstance(r, bytes))
        self.run_id = _info_field(info, b"run_id")
        if self.require_primary and _info_field(info, b"role") != b"master":
            log.warning("the server named primary is not one (yet)", extra={"redis": str(self.address)})
            return False
        self.ready = True
        self._quiet = False
        return True

    async def _exchange(self, commands: list[tuple[Any, ...]]) -> list[Reply] | None:
        if self._transport is None:
            return None
        done: asyncio.Future[list[Reply]] = asyncio.get_running_loop().create_future()
        replies: list[Reply] = []

        def got(reply: Reply) -> None:
            replies.append(reply)
            if len(replies) == len(commands) and not done.done():
                done.set_result(replies)

        for command in commands:
            self._write(command, got)
        try:
            return await asyncio.wait_for(asyncio.shield(done), self.deadline * 4)
        except TimeoutError:
            return None

    # ------------------------------------------------------------ protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._lost_reason = "closed"

    def data_received(self, data: bytes) -> None:
        reader, waiting = self._reader, self._waiting
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            if not waiting:
                log.error("a Redis reply nobody asked for; reconnecting")
                self.close()
                return
            callback, _ = waiting.popleft()
            deliver(callback, reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self.ready = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._overdue = False
        reason = str(exc) if exc else self._lost_reason
        error_class = RedisTimeout if reason.startswith("no answer") else RedisConnectionError
        lost = error_class(f"the connection to Redis at {self.address} was lost: {reason}")
        waiting, self._waiting = self._waiting, deque()
        for callback, _ in waiting:
            deliver(callback, lost)
        if self.on_lost is not None:
            self.on_lost(self)


def deliver(callback: Callback, reply: Reply) -> None:
    # One failing callback (say, a future cancelled at shutdown) must not cost the
    # replies behind it their callbacks, nor the connection its state.
    try:
        callback(reply)
    except Exception:
        log.exception("a Redis reply's callback failed")


def _info_field(info: bytes, name: bytes) -> bytes:
    for line in info.splitlines():
        key, sep, value = line.partition(b":")
        if sep and key == name:
            return value.strip()
    return b""


# ---------------------------------------------------------------- single server


class RedisPipe:
    """One pipelined connection to one Redis server."""

    clustered = False

    def __init__(self, url: str, *, deadline: float = DEADLINE, connect_timeout: float = CONNECT_TIMEOUT):
        options = url_options(url)
        address: Address = options["path"] if "path" in options else _host_port(options)
        self.node = NodeConnection(address, options, deadline=deadline, connect_timeout=connect_timeout)

    @property
    def commands(self) -> int:
        return self.node.sent

    @property
    def connected(self) -> bool:
        return self.node.ready

    @property
    def run_id(self) -> bytes:
        return self.node.run_id

    def call(self, args: Sequence[Any], callback: Callback, slot: int = 0) -> None:
        self.node.send(args, callback)

    async def run(self, calls: Sequence[tuple[int, Sequence[Any]]]) -> list[Reply]:
        return await gather(self, calls)

    def probe_slots(self) -> list[int]:
        return [0]

    def ensure_connected(self) -> None:
        self.node.ensure_connected()

    async def wait_connected(self) -> bool:
        return await self.node.wait_connected()

    async def check_topology(self) -> None:
        """Nothing to follow: one server."""

    def close(self) -> None:
        self.node.close()


def _host_port(options: dict[str, Any]) -> tuple[str, int]:
    return str(options.get("host", "localhost")), int(options.get("port", 6379))


# ---------------------------------------------------------------- sentinel


class _SentinelConnection(NodeConnection):
    def __init__(self, owner: SentinelPipe, options: dict[str, Any], deadline: float) -> None:
        super().__init__(("", 0), options, deadline=deadline, require_primary=True)
        self.owner = owner

    async def address_now(self) -> Address:
        return await self.owner.primary()


class SentinelPipe(RedisPipe):
    """The connection to the primary the sentinels name; followed when they name another."""

    def __init__(self, where: RedisTarget, *, deadline: float = DEADLINE) -> None:
        self.where = where
        self.deadline = deadline
        self.node = _SentinelConnection(self, where.options, deadline)
        self._known: tuple[str, int] | None = None

    async def primary(self) -> tuple[str, int]:
        """Ask the sentinels, in turn, where the primary is now."""
        for host, port in self.where.nodes:
            try:
                found = await asyncio.wait_for(self._ask(host, port), self.deadline * 10)
            except (OSError, TimeoutError, RedisConnectionError, ResponseError, ValueError):
                continue
            if found is not None:
                self._known = found
                return found
        raise RedisConnectionError(f"no sentinel names a primary for {self.where.service!r}")

    async def _ask(self, host: str, port: int) -> tuple[str, int] | None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            commands: list[tuple[Any, ...]] = []
            if self.where.sentinel_password:
                commands.append(("AUTH", self.where.sentinel_password))
            commands.append(("SENTINEL", "get-master-addr-by-name", self.where.service))
            writer.write(b"".join(hiredis.pack_command(c) for c in commands))
            parser = hiredis.Reader(replyError=ResponseError)
            replies: list[Reply] = []
            while len(replies) < len(commands):
                data = await reader.read(4096)
                if not data:
                    raise RedisConnectionError("the sentinel closed the connection")
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    replies.append(reply)
        finally:
            writer.close()
        answer = replies[-1]
        if isinstance(answer, Exception):
            raise answer
        return (answer[0].decode(), int(answer[1])) if answer else None

    def call(self, args: Sequence[Any], callback: Callback, slot: int = 0) -> None:
        self.node.send(args, self._watch(callback))

    def _watch(self, callback: Callback) -> Callback:
        node = self.node

        def replied(reply: Reply) -> None:
            # A primary demoted by a failover refuses writes: find the new one.
            if isinstance(reply, ResponseError) and str(reply).startswith("READONLY"):
                node.close()
            callback(reply)

        return replied

    async def check_topology(self) -> None:
        """Reconnect when the sentinels name another primary than the one connected."""
        if not self.node.ready:
            return
        try:
            now = await self.primary()
        except RedisConnectionError:
            return
        if now != self.node.address:
            log.warning("the sentinels name a new primary", extra={"primary": f"{now[0]}:{now[1]}"})
            self.node.close()


# ---------------------------------------------------------------- factory


def open_pipe(where: RedisTarget, deadline: float = DEADLINE, client: str = "pipe") -> Pipe:
    """The connections for the settings' mode (not yet connected)."""
    if client == "redis-py":
        from .redis_py_pipe import RedisPyPipe

        return RedisPyPipe(where, deadline=deadline)
    if where.mode == "cluster":
        from .redis_cluster import ClusterPipe

        return ClusterPipe(where, deadline=deadline)
    if where.mode == "sentinel":
        return SentinelPipe(where, deadline=deadline)
    return RedisPipe(where.url, deadline=deadline)

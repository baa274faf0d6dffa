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
* :class:`ClusterPipe` — one connection per primary of a Redis Cluster, commands
  routed by hash slot, ``MOVED``/``ASK``/``TRYAGAIN`` honoured, the slot map read
  again when a node fails or a redirection says it changed.

A command may carry :data:`catena.redis.RUN_ID`: it is replaced by the ``run_id`` of
the server the connection reached (read once per connection), which lets a script
tell whether the counts it guards were rebuilt on this very server.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from catena.redis import RUN_ID, RedisTarget, tls_context, url_options
from catena.redis_keys import SLOTS

log = logging.getLogger("authgate.redis_pipe")

Reply = Any  # bytes, int, a list of replies, or the exception that stands for the reply
Callback = Callable[[Reply], None]
Address = tuple[str, int] | str  # host and port, or a Unix socket path

DEADLINE = 0.05
CONNECT_TIMEOUT = 0.5
# Redirections one command may follow before it fails.
MAX_HOPS = 5
TRYAGAIN_DELAY = 0.02
# The slot map is read again at most this often.
REFRESH_EVERY = 0.1


class RedisTimeout(RedisConnectionError):
    """The server did not answer within the deadline; its connection was closed."""


class Unavailable(RedisConnectionError):
    """No connection serves this slot now."""


def _ignore(reply: Reply) -> None:
    pass


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
            _deliver(callback, reply)

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
            _deliver(callback, lost)
        if self.on_lost is not None:
            self.on_lost(self)


def _deliver(callback: Callback, reply: Reply) -> None:
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


# ---------------------------------------------------------------- cluster


class ClusterPipe:
    """One connection per primary of a Redis Cluster; commands routed by hash slot."""

    clustered = True

    def __init__(self, where: RedisTarget, *, deadline: float = DEADLINE) -> None:
        self.options = where.options
        self.seeds = list(where.nodes)
        self.deadline = deadline
        self.nodes: dict[tuple[str, int], NodeConnection] = {}
        self.slots: list[NodeConnection | None] = [None] * SLOTS
        self.ranges: list[tuple[int, int, tuple[str, int]]] = []
        self._refreshing: asyncio.Task[bool] | None = None
        self._refreshed_at = -1.0
        self._retired = 0

    @property
    def commands(self) -> int:
        return self._retired + sum(node.sent for node in self.nodes.values())

    @property
    def connected(self) -> bool:
        return any(node.ready for node in self.nodes.values())

    # ------------------------------------------------------------ commands

    def call(self, args: Sequence[Any], callback: Callback, slot: int = 0) -> None:
        node = self.slots[slot]
        if node is None or not node.ready:
            if node is not None:
                node.ensure_connected()
            self.refresh_soon()
            callback(Unavailable(f"no connection serves hash slot {slot} now"))
            return
        node.send(args, self._follow(args, callback, slot, 0))

    def _follow(self, args: Sequence[Any], callback: Callback, slot: int, hops: int) -> Callback:
        def replied(reply: Reply) -> None:
            if isinstance(reply, ResponseError):
                self._redirected(reply, args, callback, slot, hops)
            else:
                if isinstance(reply, RedisConnectionError):
                    self.refresh_soon()
                callback(reply)

        return replied

    def _redirected(
        self, reply: ResponseError, args: Sequence[Any], callback: Callback, slot: int, hops: int
    ) -> None:
        text = str(reply)
        kind = text.split(" ", 1)[0]
        if kind not in ("MOVED", "ASK", "TRYAGAIN") or hops >= MAX_HOPS:
            if kind in ("CLUSTERDOWN", "MOVED", "ASK"):
                self.refresh_soon()
            callback(reply)
            return
        if kind == "TRYAGAIN":  # keys of the slot half migrated: soon done
            loop = asyncio.get_running_loop()
            loop.call_later(TRYAGAIN_DELAY, self._again, args, callback, slot, hops + 1)
            return
        _, _, where = text.split(" ")
        host, _, port = where.rpartition(":")
        node = self._node((host or self.seeds[0][0], int(port)))
        if kind == "MOVED":
            self.slots[slot] = node
            self.refresh_soon()
        if not node.ready:
            node.ensure_connected()
            callback(Unavailable(f"hash slot {slot} moved to {where}, not connected yet"))
            return
        if kind == "ASK":
            node.send(("ASKING",), _ignore)
        node.send(args, self._follow(args, callback, slot, hops + 1))

    def _again(self, args: Sequence[Any], callback: Callback, slot: int, hops: int) -> None:
        node = self.slots[slot]
        if node is None or not node.ready:
            callback(Unavailable(f"no connection serves hash slot {slot} now"))
            return
        node.send(args, self._follow(args, callback, slot, hops))

    async def run(self, calls: Sequence[tuple[int, Sequence[Any]]]) -> list[Reply]:
        return await gather(self, calls)

    def probe_slots(self) -> list[int]:
        """The first slot of each range of the slot map (all of them when none is known)."""
        return [start for start, _, _ in self.ranges] or [0]

    # ------------------------------------------------------------ nodes and the slot map

    def _node(self, address: tuple[str, int]) -> NodeConnection:
        node = self.nodes.get(address)
        if node is None:
            node = NodeConnection(address, self.options, deadline=self.deadline, on_lost=self._lost)
            self.nodes[address] = node
        return node

    def _lost(self, node: NodeConnection) -> None:
        if any(node is self.slots[start] for start, _, _ in self.ranges):
            self.refresh_soon()

    def ensure_connected(self) -> None:
        if not self.ranges:
            self.refresh_soon()
        for node in set(self.slots):
            if node is not None:
                node.ensure_connected()

    async def wait_connected(self) -> bool:
        if self._refreshing is not None and not self._refreshing.done():
            await asyncio.shield(self._refreshing)
        await asyncio.gather(*(n.wait_connected() for n in set(self.slots) if n is not None))
        return self.connected

    def refresh_soon(self) -> None:
        """Read the slot map again (at most every ``REFRESH_EVERY`` seconds, one at a time)."""
        if self._refreshing is not None and not self._refreshing.done():
            return
        loop = asyncio.get_running_loop()
        wait = max(0.0, self._refreshed_at + REFRESH_EVERY - loop.time())
        self._refreshing = asyncio.ensure_future(self._refresh(wait))

    async def check_topology(self) -> None:
        """Read the slot map now (the gateway's probe, every half second)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh(0.0))
        await asyncio.shield(self._refreshing)

    async def _refresh(self, wait: float) -> bool:
        if wait:
            await asyncio.sleep(wait)
        self._refreshed_at = asyncio.get_running_loop().time()
        for address in self._candidates():
            rows = await self._slots_from(address)
            if rows:
                self._apply(rows)
                return True
        return False

    def _candidates(self) -> list[tuple[str, int]]:
        """Nodes to ask: connected ones first, then the other known ones and the seeds."""
        known = list(self.nodes)
        random.shuffle(known)
        known.sort(key=lambda a: not self.nodes[a].ready)
        return known + [seed for seed in self.seeds if seed not in self.nodes]

    async def _slots_from(self, address: tuple[str, int]) -> list[Any] | None:
        node = self._node(address)
        if not node.ready:
            node.ensure_connected()
            if not await node.wait_connected():
                return None
        done: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()

        def got(reply: Reply) -> None:
            if not done.done():
                done.set_result(reply)

        node.send(("CLUSTER", "SLOTS"), got)
        reply = await done
        if isinstance(reply, Exception) or not reply:
            return None
        return list(reply)

    def _apply(self, rows: list[Any]) -> None:
        slots: list[NodeConnection | None] = [None] * SLOTS
        ranges = []
        for row in rows:
            start, end, primary = int(row[0]), int(row[1]), row[2]
            host = primary[0].decode() if primary[0] else self.seeds[0][0]
            address = (host, int(primary[1]))
            node = self._node(address)
            node.ensure_connected()
            slots[start : end + 1] = [node] * (end - start + 1)
            ranges.append((start, end, address))
        ranges.sort()
        if ranges != self.ranges:
            log.info(
                "Redis Cluster slot map", extra={"ranges": [f"{s}-{e} {h}:{p}" for s, e, (h, p) in ranges]}
            )
        self.slots = slots
        self.ranges = ranges
        self._retire({address for _, _, address in ranges})

    def _retire(self, primaries: set[tuple[str, int]]) -> None:
        # Nodes that serve no slot any more (a demoted primary, a removed node):
        # their connections are closed and forgotten, but kept as places to ask.
        for address in [a for a in self.nodes if a not in primaries]:
            node = self.nodes.pop(address)
            self._retired += node.sent
            node.on_lost = None
            node.close()
            if address not in self.seeds:
                self.seeds.append(address)

    def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        for node in self.nodes.values():
            node.on_lost = None
            node.close()


# ---------------------------------------------------------------- redis-py, to compare


class RedisPyPipe:
    """The same interface over redis-py's client of the mode (``CATENA_AUTH_REDIS_CLIENT=redis-py``).

    Kept to measure against (``make bench-auth``): every command is a task and goes
    through redis-py's routing, retries and reply callbacks.
    """

    def __init__(self, where: RedisTarget, *, deadline: float = DEADLINE) -> None:
        from catena import redis as catena_redis

        self.client = catena_redis.connect(where, socket_timeout=max(deadline * 4, 0.5))
        self.clustered = where.mode == "cluster"
        self.deadline = deadline
        self.sent = 0
        self.ready = False
        self._run_ids: dict[str, bytes] = {}

    @property
    def connected(self) -> bool:
        return self.ready

    @property
    def commands(self) -> int:
        return self.sent

    def call(self, args: Sequence[Any], callback: Callback, slot: int = 0) -> None:
        self.sent += 1
        task = asyncio.ensure_future(self._execute(args, slot))
        task.add_done_callback(lambda done: _deliver(callback, done.result()))

    async def _execute(self, args: Sequence[Any], slot: int) -> Reply:
        try:
            async with asyncio.timeout(self.deadline):
                if RUN_ID in args:
                    run_id = await self._run_id(slot)
                    args = [run_id if a is RUN_ID else a for a in args]
                return await self.client.execute_command(*args)
        except ResponseError as exc:
            return exc
        except TimeoutError:
            self._run_ids.clear()
            return RedisTimeout(f"no answer within {self.deadline * 1000:.0f} ms")
        except (OSError, RedisConnectionError, Exception) as exc:
            self._run_ids.clear()
            return RedisConnectionError(str(exc))

    async def _run_id(self, slot: int) -> bytes:
        if self.clustered:
            cluster: Any = self.client
            await cluster.initialize()
            node = cluster.nodes_manager.get_node_from_slot(slot)
            name, target = node.name, {"target_nodes": node}
        else:
            name, target = "", {}
        if name not in self._run_ids:
            info = await self.client.execute_command("INFO", "server", **target)
            self._run_ids[name] = str(info["run_id"]).encode()
        return self._run_ids[name]

    async def run(self, calls: Sequence[tuple[int, Sequence[Any]]]) -> list[Reply]:
        return await gather(self, calls)

    def probe_slots(self) -> list[int]:
        if not self.clustered:
            return [0]
        cluster: Any = self.client
        manager = getattr(cluster, "nodes_manager", None)
        cache = getattr(manager, "slots_cache", None) or {}
        starts = [s for s in sorted(cache) if s == 0 or cache.get(s - 1) != cache[s]]
        return starts or [0]

    def ensure_connected(self) -> None:
        pass

    async def wait_connected(self) -> bool:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT * 4):
                self.ready = bool(await self.client.ping())
        except Exception:
            self.ready = False
        return self.ready

    async def check_topology(self) -> None:
        await self.wait_connected()

    def close(self) -> None:
        self._closing = asyncio.ensure_future(self.client.aclose())


# ---------------------------------------------------------------- factory


def open_pipe(where: RedisTarget, deadline: float = DEADLINE, client: str = "pipe") -> Pipe:
    """The connections for the settings' mode (not yet connected)."""
    if client == "redis-py":
        return RedisPyPipe(where, deadline=deadline)
    if where.mode == "cluster":
        return ClusterPipe(where, deadline=deadline)
    if where.mode == "sentinel":
        return SentinelPipe(where, deadline=deadline)
    return RedisPipe(where.url, deadline=deadline)

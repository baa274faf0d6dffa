"""The gateway's connections to a Redis Cluster: one per primary, commands routed by hash slot.

The slot map comes from ``CLUSTER SLOTS`` (any node answering: connected ones first,
then the others known and the seeds of ``CATENA_REDIS_URL``) and is read again when a
node is lost, when a redirection says a slot moved, and by the gateway's probe every
half second.  ``MOVED`` updates the slot and sends the command on; ``ASK`` sends it
once, after ``ASKING``, to the node named; ``TRYAGAIN`` (a slot half migrated) retries
shortly; a command gives up after ``MAX_HOPS`` redirections.  A slot with no
connected primary fails its commands at once with :class:`Unavailable`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from catena.redis import RedisTarget
from catena.redis_keys import SLOTS

from .redis_pipe import DEADLINE, Callback, NodeConnection, Reply, Unavailable, gather

log = logging.getLogger("authgate.redis_cluster")

# Redirections one command may follow before it fails.
MAX_HOPS = 5
TRYAGAIN_DELAY = 0.02
# The slot map is read again at most this often.
REFRESH_EVERY = 0.1


def _ignore(reply: Reply) -> None:
    pass


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

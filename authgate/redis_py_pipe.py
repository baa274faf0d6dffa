"""The gateway's Redis interface over redis-py's clients (``CATENA_AUTH_REDIS_CLIENT=redis-py``).

Kept to measure against (``make bench-auth``, target (g)): every command is a task and
goes through redis-py's routing, retries and reply callbacks; the gateway's own
connections (:mod:`authgate.redis_pipe`) are what it runs with by default.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from catena.redis import RUN_ID, RedisTarget

from .redis_pipe import CONNECT_TIMEOUT, DEADLINE, Callback, RedisTimeout, Reply, deliver, gather


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
        task.add_done_callback(lambda done: deliver(callback, done.result()))

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

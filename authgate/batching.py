"""One round trip for many requests: what one turn of the event loop asks for, sent together.

Every check that needs Redis during a turn of the event loop adds its item; at the
end of the turn the items go to one function call (one ``MGET``, one script call).
Up to ``in_flight`` calls may be out at once, so a slow round trip does not hold
back the checks that arrive meanwhile; past that, items gather for the next call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(
        self, run: Callable[[list[T]], Awaitable[list[R]]], max_items: int = 2000, in_flight: int = 4
    ) -> None:
        self._run = run
        self._max = max_items
        self._in_flight = in_flight
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._scheduled = False

    def enqueue(self, item: T) -> asyncio.Future[R]:
        """A future of ``item``'s result, from the batch it joins (or that batch's exception)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        self._schedule(loop)
        return future

    async def submit(self, item: T) -> R:
        return await self.enqueue(item)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled and len(self._running) < self._in_flight:
            self._scheduled = True
            loop.call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        batch, self._pending = self._pending[: self._max], self._pending[self._max :]
        task = asyncio.ensure_future(self._one(batch))
        self._running.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if self._pending:
            self._schedule(asyncio.get_running_loop())

    async def _one(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

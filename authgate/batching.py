"""One round trip for many requests: what one turn of the event loop asks for, sent together.

Every check that needs Redis during a turn of the event loop adds its item; the
first one starts a task that runs when the turn is over and hands the whole list
to one function (one ``MGET``, one script call).  While that call is out, new
items gather for the next one, so a busy gateway sends few, full batches and an
idle one answers after a single round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]], max_items: int = 2000) -> None:
        self._run = run
        self._max = max_items
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    def enqueue(self, item: T) -> asyncio.Future[R]:
        """A future of ``item``'s result, from the batch it joins (or that batch's exception)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return future

    async def submit(self, item: T) -> R:
        return await self.enqueue(item)

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self._max], self._pending[self._max:]
                await self._one(batch)
        finally:
            self._task = None

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

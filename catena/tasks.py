"""Stopping background tasks at shutdown, even those that miss a cancellation."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("catena.tasks")


async def cancel_all(tasks: Iterable[asyncio.Future[Any]], grace: float = 5.0) -> None:
    """Cancel ``tasks`` and wait until each has finished, at most ``grace`` seconds.

    Cancelling once is not enough on Python 3.11: ``asyncio.wait_for`` (used by
    asyncpg's ``acquire`` and query timeouts) returns the result instead of raising
    when the cancellation arrives just as the awaited call completes, so a
    ``while True`` loop survives and a single ``gather`` waits for it forever.
    Cancelling again until the task is done closes that window.
    """
    everything = list(tasks)
    pending = {task for task in everything if not task.done()}
    deadline = time.monotonic() + grace
    while pending and time.monotonic() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.1)
    if pending:
        log.warning("background tasks did not stop", extra={"tasks": len(pending)})
    for task in everything:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: failures were logged where they happened
